import type { FastifyInstance } from "fastify";
import { type DaytonaContext, requestOrigin } from "../context.js";
import { nativeOf, viewOf } from "../native.js";
import { archiveSandbox, pauseDaytonaSandbox, startSandbox, stopSandbox, type Viewed } from "../ops.js";
import { fullDto, type IdParams, ownedSandbox } from "./common.js";

type Op = (ctx: DaytonaContext, v: Viewed, origin: string | undefined) => Promise<Viewed>;

const OPS: readonly (readonly [string, Op])[] = [
  ["start", startSandbox],
  ["stop", stopSandbox],
  ["pause", pauseDaytonaSandbox],
  ["archive", archiveSandbox],
];

/**
 * `POST /sandbox/{id}/start|stop|pause|archive` (no body). Each answers the DTO after the move
 * (the SDK reads it from start; the others' answers are ignored). `stop?force=` is accepted: a
 * stop here is always the same native pause; `pause` is that pause shown as `paused`, and
 * `start` resumes it. The row is first brought in line with the native state (a sandbox the
 * reaper stopped is `stopped` here, so `start` resumes it).
 */
export async function lifecycleRoutes(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  for (const [path, op] of OPS) {
    app.post<IdParams>(`/sandbox/:idOrName/${path}`, async (req) => {
      const origin = requestOrigin(req);
      const row = await ownedSandbox(ctx, req, req.params.idOrName);
      const v = await op(ctx, await viewOf(ctx, row, origin), origin);
      return fullDto(req, v.row, v.native ?? (await nativeOf(ctx, v.row.sandbox_id)));
    });
  }
}
