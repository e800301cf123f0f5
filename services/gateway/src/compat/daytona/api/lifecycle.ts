import type { FastifyInstance } from "fastify";
import { type DaytonaContext, requestOrigin } from "../context.js";
import { archiveSandbox, startSandbox, stopSandbox } from "../ops.js";
import { fullDto, type IdParams, ownedSandbox } from "./common.js";

/**
 * `POST /sandbox/{id}/start|stop|archive` (no body). Each answers the DTO after the move (the
 * SDK reads it from start; stop and archive answers are ignored). `stop?force=` is accepted:
 * a stop here is always the same pause.
 */
export async function lifecycleRoutes(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  app.post<IdParams>("/sandbox/:idOrName/start", async (req) => {
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    return fullDto(req, await startSandbox(ctx, row, requestOrigin(req)));
  });
  app.post<IdParams>("/sandbox/:idOrName/stop", async (req) => {
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    return fullDto(req, await stopSandbox(ctx, row, requestOrigin(req)));
  });
  app.post<IdParams>("/sandbox/:idOrName/archive", async (req) => {
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    return fullDto(req, await archiveSandbox(ctx, row, requestOrigin(req)));
  });
}
