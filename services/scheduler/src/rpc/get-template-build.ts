import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import type {
  GetTemplateBuildRequest,
  GetTemplateBuildResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { type BuildRow, buildLogs, getBuild } from "../db/template-queries.js";
import { TemplateNotFoundError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";
import { toBuildRecord } from "../template-records.js";
import { ownTemplate } from "./get-template.js";

/** Most log lines one call returns; the caller goes on from next_logs_offset. */
export const LOG_PAGE_LINES = 1_000;

/** A build of a template the caller owns, with its log lines from logs_offset on. */
export async function getTemplateBuild(
  ctx: Context,
  req: GetTemplateBuildRequest,
): Promise<MessageInitShape<typeof GetTemplateBuildResponseSchema>> {
  const build = await ownBuild(ctx, req);
  const logs = await buildLogs(ctx.db, build.id, req.logsOffset, LOG_PAGE_LINES);
  return {
    build: toBuildRecord(build),
    logs: logs.map((l) => ({ at: timestampFromDate(l.at), level: l.level, message: l.message })),
    nextLogsOffset: req.logsOffset + logs.length,
  };
}

/** The build `build_id` of a template the caller owns; anything else is not found. */
export async function ownBuild(
  ctx: Context,
  req: { templateId: string; buildId: string; owner: string },
): Promise<BuildRow> {
  const t = await ownTemplate(ctx, requireId("template_id", req.templateId), req.owner);
  const buildId = requireId("build_id", req.buildId);
  const build = await getBuild(ctx.db, t.id, buildId);
  if (build === undefined)
    throw new TemplateNotFoundError(t.id, `build '${buildId}' of template '${t.id}' not found`);
  return build;
}
