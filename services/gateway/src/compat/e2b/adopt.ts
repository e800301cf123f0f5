import { create } from "@bufbuild/protobuf";
import { DeleteSandboxRequestSchema } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { deleteSandbox } from "../../rpc/delete-sandbox.js";
import type { E2bContext } from "./context.js";
import { deleteE2bSandbox, recordE2bSandbox } from "./db.js";
import { setAccessToken } from "./init-token.js";
import { type OnTimeout, setE2bTimeout } from "./lifecycle.js";

/**
 * Makes a native sandbox (just created, restored or forked) an E2B sandbox: gives it its
 * deadline (`timeoutS`, and `onTimeout`), records it and sets its envd access token. On failure the sandbox is deleted — one whose token is not
 * set would be open to anyone who knows its id — and the error rethrown. `proofToken`: the
 * token a clone's agent may have kept from its source (see setAccessToken). Returns the token.
 */
export async function adoptE2bSandbox(
  ctx: E2bContext,
  sandboxId: string,
  timeoutS: number,
  onTimeout: OnTimeout,
  proofToken?: string,
): Promise<string> {
  const token = ctx.tokens.tokenFor(sandboxId);
  try {
    // Recorded first: the tunnel to the agent admits only recorded sandboxes.
    await setE2bTimeout(ctx, sandboxId, timeoutS, onTimeout);
    await recordE2bSandbox(ctx.db, sandboxId);
    await setAccessToken(ctx.tunnels, sandboxId, token, proofToken);
  } catch (err) {
    await deleteSandbox(ctx.deps, create(DeleteSandboxRequestSchema, { sandboxId })).catch(
      (cleanupErr: unknown) =>
        ctx.logger.error(
          { err: cleanupErr, "sandbox.id": sandboxId },
          "cannot delete a sandbox whose access token was not set",
        ),
    );
    ctx.tunnels.forget(sandboxId);
    await deleteE2bSandbox(ctx.db, sandboxId).catch((dbErr: unknown) =>
      ctx.logger.warn({ err: dbErr, "sandbox.id": sandboxId }, "cannot forget a failed E2B sandbox"),
    );
    throw err;
  }
  return token;
}
