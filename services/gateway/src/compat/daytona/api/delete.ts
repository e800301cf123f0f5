import type { FastifyInstance } from "fastify";
import { type DaytonaContext, requestOrigin } from "../context.js";
import { destroySandbox } from "../ops.js";
import { fullDto, type IdParams, ownedSandbox } from "./common.js";

/** `DELETE /sandbox/{idOrName}`: deletes it now and answers the DTO in state `destroyed`. */
export async function deleteRoute(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  app.delete<IdParams>("/sandbox/:idOrName", async (req) => {
    const row = await ownedSandbox(ctx, req, req.params.idOrName);
    await destroySandbox(ctx, row, requestOrigin(req));
    return fullDto(req, { ...row, state: "destroyed", updated_at: new Date() });
  });
}
