import type { FastifyInstance } from "fastify";
import { GatewayError } from "../../../errors.js";
import { getTemplate } from "../../../rpc/get-template.js";
import { type DaytonaContext, requestOrigin } from "../context.js";
import { findSnapshot } from "../snapshots/db.js";
import { streamBuildLog } from "../snapshots/routes.js";
import { type IdParams, ownedSandbox } from "./common.js";

/**
 * `GET /sandbox/{idOrName}/build-logs-url` → `{url}` and the log it points to: the build of
 * the template the sandbox was created from (its image's, or its snapshot's), as text; a
 * sandbox from a template nothing built for it has a one-line log.
 */
export async function sandboxBuildLogRoutes(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  app.get<IdParams>("/sandbox/:idOrName/build-logs-url", async (req) => {
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    return { url: `${requestOrigin(req)}/api/sandbox/${row.sandbox_id}/build-logs` };
  });
  app.get<IdParams>("/sandbox/:idOrName/build-logs", async (req, reply) => {
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    const snap = await findSnapshot(ctx.db, req.daytonaOwner, row.snapshot);
    let build: { templateId: string; buildId: string } | undefined;
    if (snap !== undefined) {
      if (snap.build_id !== null) build = { templateId: snap.template_id, buildId: snap.build_id };
    } else {
      try {
        const t = await getTemplate(ctx.deps, row.snapshot, { owner: req.daytonaKeyId });
        if (!t.builtin && t.latestBuildId !== "")
          build = { templateId: t.templateId, buildId: t.latestBuildId };
      } catch (err) {
        if (!(err instanceof GatewayError && err.kind === "not_found")) throw err;
      }
    }
    await streamBuildLog(ctx, req, reply, build, `Sandbox ${row.sandbox_id} is from ${row.snapshot}`);
  });
}
