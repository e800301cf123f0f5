import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  DeleteTemplateRequest,
  DeleteTemplateResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import {
  deleteTemplateRow,
  lockTemplateNames,
  runningBuildOf,
  templateHosts,
} from "../db/template-queries.js";
import { PermissionDeniedError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";
import { stopBuild } from "../template-builds.js";
import { visibleTemplate } from "./get-template.js";

/**
 * Deletes a template the caller owns, with its builds and logs (a running build is cancelled
 * first). Its hosts are asked to forget it, best effort; sandboxes running from it keep running.
 */
export async function deleteTemplate(
  ctx: Context,
  req: DeleteTemplateRequest,
): Promise<MessageInitShape<typeof DeleteTemplateResponseSchema>> {
  const t = await visibleTemplate(ctx, requireId("template_id", req.templateId), req.owner);
  if (t.builtin || t.owner === "")
    throw new PermissionDeniedError(`template '${t.id}' is built in and cannot be deleted`);
  if (t.owner !== req.owner) throw new PermissionDeniedError(`template '${t.id}' belongs to another API key`);
  const running = await runningBuildOf(ctx.db, t.id);
  if (running !== undefined) await stopBuild(ctx, running.id, "cancel");
  const hosts = await templateHosts(ctx.db, t.id);
  const deleted = await ctx.db.transaction(async (tx) => {
    await lockTemplateNames(tx);
    return deleteTemplateRow(tx, t.id);
  });
  ctx.templateCache.clear();
  if (!deleted) return {};
  ctx.logger.info({ "template.id": t.id, hosts: hosts.length }, "template deleted");
  for (const h of hosts)
    ctx.background(
      "removal of a deleted template from its host",
      { "template.id": t.id, "host.id": h.hostId },
      () => ctx.vmm(h.vmmUrl).deleteTemplate({ templateId: t.id }, { timeoutMs: ctx.cfg.vmmCallTimeoutMs }),
    );
  return {};
}
