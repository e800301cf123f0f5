import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import {
  type TemplateBuildSchema,
  TemplateBuildStatus,
  type TemplateSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { TemplateRow } from "./db/queries.js";
import type { BuildRow } from "./db/template-queries.js";

/** A template row as the wire's Template. */
export function toTemplateRecord(t: TemplateRow): MessageInitShape<typeof TemplateSchema> {
  return {
    templateId: t.id,
    aliases: t.aliases,
    cpuCount: t.cpuCount,
    memoryMib: t.memoryMib,
    poolTargetSize: t.poolTarget,
    owner: t.owner,
    public: t.public,
    builtin: t.builtin,
    status: t.status,
    latestBuildId: t.latestBuildId ?? "",
    readyBuildId: t.readyBuildId ?? "",
    createdAt: timestampFromDate(t.createdAt),
    updatedAt: timestampFromDate(t.updatedAt),
    baseTemplateId: t.baseTemplateId ?? "",
  };
}

const BUILD_STATUS: Record<BuildRow["status"], TemplateBuildStatus> = {
  waiting: TemplateBuildStatus.WAITING,
  building: TemplateBuildStatus.BUILDING,
  ready: TemplateBuildStatus.READY,
  error: TemplateBuildStatus.ERROR,
  cancelled: TemplateBuildStatus.CANCELLED,
};

/** A build row as the wire's TemplateBuild. */
export function toBuildRecord(b: BuildRow): MessageInitShape<typeof TemplateBuildSchema> {
  return {
    buildId: b.id,
    templateId: b.templateId,
    status: BUILD_STATUS[b.status],
    reason: b.reason,
    hostId: b.hostId,
    createdAt: timestampFromDate(b.createdAt),
    ...(b.finishedAt !== null ? { finishedAt: timestampFromDate(b.finishedAt) } : {}),
    ...(b.result !== null
      ? {
          result: {
            buildKey: b.result.buildKey,
            cachedSteps: b.result.cachedSteps,
            builtSteps: b.result.builtSteps,
            sizeBytes: BigInt(b.result.sizeBytes),
            durationMs: b.result.durationMs,
          },
        }
      : {}),
  };
}
