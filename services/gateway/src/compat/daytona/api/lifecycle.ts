import type { FastifyInstance } from "fastify";
import { type DaytonaContext, requestOrigin } from "../context.js";
import { archiveSandbox, pauseDaytonaSandbox, startSandbox, stopSandbox } from "../ops.js";
import { fullDto, type IdParams, ownedSandbox } from "./common.js";

/**
 * `POST /sandbox/{id}/start|stop|pause|archive` (no body). Each answers the DTO after the move
 * (the SDK reads it from start; the others' answers are ignored). `stop?force=` is accepted: a
 * stop here is always the same native pause; `pause` is that pause shown as `paused`, and
 * `start` resumes it.
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
  app.post<IdParams>("/sandbox/:idOrName/pause", async (req) => {
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    return fullDto(req, await pauseDaytonaSandbox(ctx, row, requestOrigin(req)));
  });
  app.post<IdParams>("/sandbox/:idOrName/archive", async (req) => {
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    return fullDto(req, await archiveSandbox(ctx, row, requestOrigin(req)));
  });
}
