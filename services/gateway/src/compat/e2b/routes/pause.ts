import type { FastifyInstance } from "fastify";
import { FailedPreconditionError } from "../../../errors.js";
import { e2bBody, optBool } from "../body.js";
import type { E2bContext } from "../context.js";
import { pauseE2b, refuseMemoryless } from "../lifecycle.js";

/**
 * `POST /sandboxes/{id}/pause {"memory"?}`: 204 paused; 409 code when it already is (the SDK
 * returns false); 404 code when unknown or killed (`SandboxNotFoundError`). A paused sandbox
 * keeps its memory and disk, has no deadline, and is resumed by connect.
 */
export async function pauseRoute(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  app.post<{ Params: { id: string } }>(
    "/sandboxes/:id/pause",
    { config: { e2bApi: true } },
    async (req, reply) => {
      refuseMemoryless(optBool(e2bBody(req.body), "memory"));
      if ((await pauseE2b(ctx, req.params.id)) === "already_paused")
        throw new FailedPreconditionError(`Sandbox ${req.params.id} is already paused`);
      return reply.code(204).send();
    },
  );
}
