import { create } from "@bufbuild/protobuf";
import { GetSandboxRequestSchema, SandboxState } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { InvalidArgumentError, SandboxNotFoundError } from "../../../errors.js";
import { getSandbox } from "../../../rpc/get-sandbox.js";
import { e2bBody, optInt32 } from "../body.js";
import type { E2bContext } from "../context.js";
import { setE2bTimeout } from "../lifecycle.js";

/**
 * `POST /sandboxes/{id}/timeout {"timeout": s}`: 204; sets the deadline (`endAt`) to
 * now + timeout (may shorten; negative counts as 0, as in E2B). The scheduler's reaper kills
 * (or pauses) the sandbox when it passes. A paused sandbox has no timeout to set: 404 code, as
 * E2B (it is not running). A natively created sandbox gets the deadline too.
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
      await setE2bTimeout(ctx, sandbox!.sandboxId, Math.max(0, timeout));
      return reply.code(204).send();
    },
  );
}
