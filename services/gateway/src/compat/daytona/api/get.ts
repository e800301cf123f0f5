import type { FastifyInstance } from "fastify";
import { type DaytonaContext, requestOrigin, toolboxProxyUrl } from "../context.js";
import { viewOf } from "../native.js";
import { fullDto, type IdParams, ownedSandbox } from "./common.js";

/**
 * `GET /sandbox/{idOrName}` → full DTO (404 once deleted: the SDK reads that as `destroyed`).
 * The state follows the native one (the reaper's stop, archive and delete are seen here) and
 * the intervals are the native lifecycle's.
 * `GET /sandbox/{id}/toolbox-proxy-url` → `{url}` (only asked when a DTO lacks it).
 */
export async function getRoute(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  app.get<IdParams>("/sandbox/:idOrName", async (req) => {
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    const v = await viewOf(ctx, row, requestOrigin(req));
    return fullDto(req, v.row, v.native);
  });
  app.get<IdParams>("/sandbox/:idOrName/toolbox-proxy-url", async (req) => {
    await ownedSandbox(ctx, req, req.params.idOrName);
    return { url: toolboxProxyUrl(requestOrigin(req)) };
  });
}
