import { create } from "@bufbuild/protobuf";
import { GetSandboxRequestSchema, SandboxState } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { FailedPreconditionError, InvalidArgumentError, SandboxNotFoundError } from "../../../errors.js";
import { getSandbox } from "../../../rpc/get-sandbox.js";
import { e2bBody, optBool, optInt32 } from "../body.js";
import type { E2bContext } from "../context.js";
import { isE2bSandbox } from "../db.js";
import { extendE2bTimeout, refuseMemoryless, resumeE2b } from "../lifecycle.js";
import { DEFAULT_TIMEOUT_S, sandboxJson } from "../views.js";

/** infra's default `timeout` of the deprecated resume route (`ResumedSandbox`). */
const LEGACY_RESUME_TIMEOUT_S = 15;

/**
 * `POST /v2/sandboxes/{id}/connect` (SDK 2.51) and `POST /sandboxes/{id}/connect` (≤ 2.50):
 * 200 `Sandbox` for a running sandbox, whose end is only ever moved later; 201 for a paused
 * one, resumed with a fresh `timeout` (default 300 s). Unknown or killed → 404 code.
 * `POST /sandboxes/{id}/resume` (deprecated): 201 resumed, 409 code when it is running.
 * Natively created sandboxes (no access token) are refused with 400.
 */
export async function connectRoute(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  for (const url of ["/v2/sandboxes/:id/connect", "/sandboxes/:id/connect", "/sandboxes/:id/resume"]) {
    const legacyResume = url.endsWith("/resume");
    app.post<{ Params: { id: string } }>(url, { config: { e2bApi: true } }, async (req, reply) => {
      const body = e2bBody(req.body);
      const timeout =
        optInt32(body, "timeout") ?? (legacyResume ? LEGACY_RESUME_TIMEOUT_S : DEFAULT_TIMEOUT_S);
      if (timeout < 0) throw new InvalidArgumentError("'timeout' must not be negative");
      refuseMemoryless(optBool(body, "memory"));
      if (optBool(body, "autoPause") === true)
        throw new InvalidArgumentError("'autoPause' is only accepted at create");
      const { sandbox } = await getSandbox(
        ctx.deps,
        create(GetSandboxRequestSchema, { sandboxId: req.params.id }),
      );
      const id = sandbox!.sandboxId;
      if (!(await isE2bSandbox(ctx.db, id))) {
        // It has no access token, so the sandbox URL does not serve it (see SandboxTunnels).
        throw new InvalidArgumentError(
          `Sandbox ${id} was not created through the E2B API and cannot be connected to`,
        );
      }
      if (sandbox!.state === SandboxState.PAUSED) {
        const resumed = await resumeE2b(ctx, id, timeout);
        ctx.logger.info({ "sandbox.id": id, timeoutS: timeout }, "E2B sandbox resumed");
        return reply.code(201).send(sandboxJson(resumed, ctx.tokens.tokenFor(id)));
      }
      if (sandbox!.state !== SandboxState.RUNNING) throw new SandboxNotFoundError(id);
      if (legacyResume) throw new FailedPreconditionError(`Sandbox ${id} is already running`);
      await extendE2bTimeout(ctx, sandbox!, timeout);
      return reply.code(200).send(sandboxJson(sandbox!, ctx.tokens.tokenFor(id)));
    });
  }
}
