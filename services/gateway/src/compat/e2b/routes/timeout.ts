import { create } from "@bufbuild/protobuf";
import { GetSandboxRequestSchema, SandboxState } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { InvalidArgumentError, SandboxNotFoundError } from "../../../errors.js";
import { getSandbox } from "../../../rpc/get-sandbox.js";
import { e2bBody, optInt32 } from "../body.js";
import type { E2bContext } from "../context.js";
import { moveSandboxEnd } from "../db.js";

/**
 * `POST /sandboxes/{id}/timeout {"timeout": s}`: 204; sets `endAt = now + timeout` (may
 * shorten; negative counts as 0, as in E2B). `timeouts.ts` kills (or pauses) the sandbox when it
 * passes. A paused sandbox has no timeout to set: 404 code, as E2B (it is not running).
 */
export async function timeoutRoute(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  app.post<{ Params: { id: string } }>(
    "/sandboxes/:id/timeout",
    { config: { e2bApi: true } },
    async (req, reply) => {
      const timeout = optInt32(e2bBody(req.body), "timeout");
      if (timeout === undefined) throw new InvalidArgumentError("'timeout' is required");
      const { sandbox } = await getSandbox(
        ctx.deps,
        create(GetSandboxRequestSchema, { sandboxId: req.params.id }),
      );
      if (sandbox!.state === SandboxState.PAUSED) throw new SandboxNotFoundError(sandbox!.sandboxId);
      // A natively created sandbox has no E2B end to move: accepted, nothing recorded.
      await moveSandboxEnd(ctx.db, sandbox!.sandboxId, Math.max(0, timeout), false);
      return reply.code(204).send();
    },
  );
}
