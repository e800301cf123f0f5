import type { ServerResponse } from "node:http";
import { type Timestamp, timestampDate } from "@bufbuild/protobuf/wkt";
import {
  type Template,
  type TemplateBuild,
  TemplateBuildStatus,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { TemplateBuildLog } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { FastifyReply } from "fastify";

const iso = (t: Timestamp | undefined) => (t !== undefined ? timestampDate(t).toISOString() : null);
const orNull = (s: string) => (s === "" ? null : s);

/** REST JSON for a template as `caller` (an API key id) sees it; owners are not shown, only `owned`. */
export function templateJson(t: Template, caller: string) {
  return {
    templateId: t.templateId,
    aliases: t.aliases,
    /** ready: sandboxes can start from it; building: no good build yet; error: none succeeded. */
    status: t.status,
    public: t.public,
    builtin: t.builtin,
    owned: t.owner !== "" && t.owner === caller,
    baseTemplateId: orNull(t.baseTemplateId),
    latestBuildId: orNull(t.latestBuildId),
    readyBuildId: orNull(t.readyBuildId),
    cpuCount: t.cpuCount,
    memoryMib: t.memoryMib,
    createdAt: iso(t.createdAt),
    updatedAt: iso(t.updatedAt),
  };
}

export const BUILD_STATUS_NAMES: Record<TemplateBuildStatus, string> = {
  [TemplateBuildStatus.UNSPECIFIED]: "unspecified",
  [TemplateBuildStatus.BUILDING]: "building",
  [TemplateBuildStatus.READY]: "ready",
  [TemplateBuildStatus.ERROR]: "error",
  [TemplateBuildStatus.CANCELLED]: "cancelled",
  [TemplateBuildStatus.WAITING]: "waiting",
};

/** REST JSON for a build. */
export function buildJson(b: TemplateBuild) {
  return {
    buildId: b.buildId,
    templateId: b.templateId,
    status: BUILD_STATUS_NAMES[b.status],
    /** Why it failed or was cancelled. */
    reason: orNull(b.reason),
    hostId: b.hostId,
    createdAt: iso(b.createdAt),
    finishedAt: iso(b.finishedAt),
    result:
      b.result === undefined
        ? null
        : {
            buildKey: b.result.buildKey,
            cachedSteps: b.result.cachedSteps,
            builtSteps: b.result.builtSteps,
            sizeBytes: Number(b.result.sizeBytes),
            durationMs: b.result.durationMs,
          },
  };
}

export function logJson(l: TemplateBuildLog) {
  return { at: iso(l.at), level: l.level, message: l.message };
}

/** One log line of the text/plain log. */
export function logText(l: TemplateBuildLog): string {
  return l.level === "info" || l.level === "" ? `${l.message}\n` : `${l.level}: ${l.message}\n`;
}

/**
 * Takes the answer over from Fastify and starts a text/plain build log (the native and the
 * Daytona log routes); the caller writes `logText` lines and ends it.
 */
export function startLogText(reply: FastifyReply, requestId: string): ServerResponse {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, {
    "content-type": "text/plain; charset=utf-8",
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "x-request-id": requestId,
  });
  return res;
}
