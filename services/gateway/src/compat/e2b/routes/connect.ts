import { create } from "@bufbuild/protobuf";
import { GetSandboxRequestSchema, SandboxState } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { InvalidArgumentError, SandboxNotFoundError } from "../../../errors.js";
import { getSandbox } from "../../../rpc/get-sandbox.js";
import { e2bBody, optBool, optInt32 } from "../body.js";
import type { E2bContext } from "../context.js";
import { moveSandboxEnd } from "../db.js";
import { DEFAULT_TIMEOUT_S, sandboxJson } from "../views.js";

/**
 * `POST /v2/sandboxes/{id}/connect` (SDK 2.51) and `POST /sandboxes/{id}/connect` (≤ 2.50):
 * 200 `Sandbox` for a running sandbox, whose end is only ever moved later. Resuming a paused
 * sandbox (201) is not implemented yet: anything not running is 404. Natively created
 * sandboxes (no access token) are refused with 400.
 */
export async function connectRoute(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  for (const url of ["/v2/sandboxes/:id/connect", "/sandboxes/:id/connect"]) {
    app.post<{ Params: { id: string } }>(url, { config: { e2bApi: true } }, async (req) => {
      const body = e2bBody(req.body);
      const timeout = optInt32(body, "timeout") ?? DEFAULT_TIMEOUT_S;
      if (timeout < 0) throw new InvalidArgumentError("'timeout' must not be negative");
      optBool(body, "memory");
      const { sandbox } = await getSandbox(
        ctx.deps,
        create(GetSandboxRequestSchema, { sandboxId: req.params.id }),
      );
      if (sandbox!.state !== SandboxState.RUNNING) throw new SandboxNotFoundError(req.params.id);
      if (!(await moveSandboxEnd(ctx.db, sandbox!.sandboxId, timeout, true))) {
        // It has no access token, so the sandbox URL does not serve it (see SandboxTunnels).
        throw new InvalidArgumentError(
          `Sandbox ${sandbox!.sandboxId} was not created through the E2B API and cannot be connected to`,
        );
      }
      return sandboxJson(sandbox!, ctx.tokens.tokenFor(sandbox!.sandboxId));
    });
  }
}
