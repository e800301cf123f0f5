import { create } from "@bufbuild/protobuf";
import {
  CreateSandboxRequestSchema,
  DeleteSandboxRequestSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { InvalidArgumentError } from "../../../errors.js";
import { optStringMap, reqString } from "../../../rest/body.js";
import { createSandbox } from "../../../rpc/create-sandbox.js";
import { deleteSandbox } from "../../../rpc/delete-sandbox.js";
import { e2bBody, optBool, optInt32 } from "../body.js";
import type { E2bContext } from "../context.js";
import { deleteE2bSandbox, recordE2bSandbox } from "../db.js";
import { setAccessToken } from "../init-token.js";
import { refuseMemoryless } from "../lifecycle.js";
import { DEFAULT_TIMEOUT_S, sandboxJson } from "../views.js";

/**
 * `POST /v2/sandboxes` (SDK 2.51) and `POST /sandboxes` (SDK ≤ 2.50): creates a sandbox, sets
 * its envd access token and answers 201 `Sandbox`. `timeout` is recorded as `endAt`; then
 * timeouts.ts kills the sandbox, or pauses it when `autoPause` is set (SDK `lifecycle:
 * {onTimeout: "pause"}`). `autoPauseMemory: false` and `autoResume.enabled: true` are refused
 * (not supported); the other fields are checked for type only.
 */
export async function createRoute(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  for (const url of ["/v2/sandboxes", "/sandboxes"]) {
    app.post(url, { config: { e2bApi: true } }, async (req, reply) => {
      const body = e2bBody(req.body);
      const templateId = reqString(body, "templateID");
      if (templateId === "") throw new InvalidArgumentError("'templateID' must not be empty");
      const timeout = optInt32(body, "timeout") ?? DEFAULT_TIMEOUT_S;
      if (timeout <= 0) throw new InvalidArgumentError("'timeout' must be a positive number of seconds");
      for (const k of ["secure", "allow_internet_access"]) optBool(body, k);
      const onTimeout = optBool(body, "autoPause") === true ? "pause" : "kill";
      refuseMemoryless(optBool(body, "autoPauseMemory"), "autoPauseMemory");
      refuseAutoResume(body.autoResume);
      const res = await createSandbox(
        ctx.deps,
        create(CreateSandboxRequestSchema, {
          templateId,
          metadata: optStringMap(body, "metadata") ?? {},
          envVars: optStringMap(body, "envVars") ?? {},
        }),
      );
      const sandbox = res.sandbox!;
      const token = ctx.tokens.tokenFor(sandbox.sandboxId);
      try {
        // Recorded first: the tunnel to the agent admits only recorded sandboxes.
        await recordE2bSandbox(ctx.db, sandbox.sandboxId, timeout, onTimeout);
        await setAccessToken(ctx.tunnels, sandbox.sandboxId, token);
      } catch (err) {
        // A sandbox whose token is not set would be open to anyone who knows its id.
        await deleteSandbox(
          ctx.deps,
          create(DeleteSandboxRequestSchema, { sandboxId: sandbox.sandboxId }),
        ).catch((cleanupErr: unknown) =>
          ctx.logger.error(
            { err: cleanupErr, "sandbox.id": sandbox.sandboxId },
            "cannot delete a sandbox whose access token was not set",
          ),
        );
        ctx.tunnels.forget(sandbox.sandboxId);
        await deleteE2bSandbox(ctx.db, sandbox.sandboxId).catch((dbErr: unknown) =>
          ctx.logger.warn(
            { err: dbErr, "sandbox.id": sandbox.sandboxId },
            "cannot forget a failed E2B sandbox",
          ),
        );
        throw err;
      }
      return reply.code(201).send(sandboxJson(sandbox, token));
    });
  }
}

/** `autoResume: {enabled}`: resuming on traffic is not implemented; a paused sandbox answers 502. */
function refuseAutoResume(v: unknown): void {
  if (v === undefined || v === null) return;
  if (typeof v !== "object" || Array.isArray(v))
    throw new InvalidArgumentError("'autoResume' must be an object");
  const enabled = (v as Record<string, unknown>).enabled;
  if (enabled !== undefined && typeof enabled !== "boolean")
    throw new InvalidArgumentError("'autoResume.enabled' must be a boolean");
  if (enabled === true)
    throw new InvalidArgumentError("'autoResume' is not supported: resume a paused sandbox with connect");
}
