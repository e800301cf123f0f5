import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  CancelTemplateBuildRequest,
  CancelTemplateBuildResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { finishBuild, getBuild } from "../db/template-queries.js";
import { WrongStateError } from "../domain/errors.js";
import { stopBuild } from "../template-builds.js";
import { toBuildRecord } from "../template-records.js";
import { ownBuild } from "./get-template-build.js";

/**
 * Stops a running build: its vmm stream is cancelled (the vmm stops the running step and
 * keeps nothing of it) and the build is recorded as cancelled; the template keeps its last
 * good build. A build another scheduler runs is marked here; that scheduler's heartbeat sees
 * it and ends its stream.
 */
export async function cancelTemplateBuild(
  ctx: Context,
  req: CancelTemplateBuildRequest,
): Promise<MessageInitShape<typeof CancelTemplateBuildResponseSchema>> {
  const build = await ownBuild(ctx, req);
  if (build.status !== "building" && build.status !== "waiting")
    throw new WrongStateError(`build '${build.id}' is already ${build.status}`);
  if (!(await stopBuild(ctx, build.id, "cancel")))
    await ctx.db.transaction((tx) => finishBuild(tx, build.id, { status: "cancelled", reason: "cancelled" }));
  ctx.templateCache.clear();
  const now = await getBuild(ctx.db, build.templateId, build.id);
  ctx.logger.info({ "template.id": build.templateId, "build.id": build.id }, "template build cancelled");
  return { build: toBuildRecord(now ?? build) };
}
