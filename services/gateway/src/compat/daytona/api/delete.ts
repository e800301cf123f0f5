import type { FastifyInstance } from "fastify";
import { type DaytonaContext, requestOrigin } from "../context.js";
import { nativeOf } from "../native.js";
import { destroySandbox } from "../ops.js";
import { fullDto, type IdParams, ownedSandbox } from "./common.js";

/** `DELETE /sandbox/{idOrName}`: deletes it now and answers the DTO in state `destroyed`. */
export async function deleteRoute(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  app.delete<IdParams>("/sandbox/:idOrName", async (req) => {
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    // Read first for the DTO's intervals; one already gone underneath is deleted all the same.
    const native = await nativeOf(ctx, row.sandbox_id);
    await destroySandbox(ctx, { row, native }, requestOrigin(req));
    return fullDto(req, { ...row, state: "destroyed", updated_at: new Date() }, native);
  });
}
