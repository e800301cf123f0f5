import { create } from "@bufbuild/protobuf";
import { DeleteSandboxRequestSchema } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SandboxNotFoundError } from "../../errors.js";
import { deleteSandbox } from "../../rpc/delete-sandbox.js";
import type { E2bContext } from "./context.js";
import { claimExpiredE2bSandboxes, deleteE2bSandbox, type OnTimeout } from "./db.js";
import { pauseE2b } from "./lifecycle.js";

/** How often expired sandboxes are looked for. */
const SWEEP_INTERVAL_MS = 1_000;
/** A claimed expiry is retried after this long if its kill/pause failed (or its gateway died). */
const RETRY_AFTER_S = 30;
const BATCH = 50;

/**
 * Acts on E2B sandboxes whose `endAt` has passed — E2B's `timeout` (default 300 s, moved by
 * `setTimeout` and `connect`): kills them, or pauses those created with `autoPause` (a paused
 * sandbox has no deadline until connect resumes it). Expired rows are claimed with
 * `FOR UPDATE SKIP LOCKED` and a retry lease, so several gateways share the work and a failed
 * kill or pause comes back later.
 */
export function startTimeoutEnforcer(ctx: E2bContext): () => Promise<void> {
  let stopped = false;
  let running: Promise<void> = Promise.resolve();
  const sweep = async () => {
    const expired = await claimExpiredE2bSandboxes(ctx.db, BATCH, RETRY_AFTER_S);
    for (const { sandboxId, onTimeout } of expired) {
      if (stopped) return;
      try {
        await expire(ctx, sandboxId, onTimeout);
      } catch (err) {
        ctx.logger.warn(
          { err, "sandbox.id": sandboxId, onTimeout },
          `cannot ${onTimeout} a timed-out E2B sandbox; will retry in ${RETRY_AFTER_S} s`,
        );
      }
    }
  };
  const timer = setInterval(() => {
    running = running
      .then(() => (stopped ? undefined : sweep()))
      .catch((err: unknown) => ctx.logger.warn({ err }, "E2B timeout sweep failed; retrying"));
  }, SWEEP_INTERVAL_MS);
  timer.unref();
  return async () => {
    stopped = true;
    clearInterval(timer);
    await running;
  };
}

async function expire(ctx: E2bContext, sandboxId: string, onTimeout: OnTimeout): Promise<void> {
  try {
    if (onTimeout === "pause") {
      await pauseE2b(ctx, sandboxId);
      ctx.logger.info({ "sandbox.id": sandboxId }, "E2B sandbox timed out: paused");
      return;
    }
    await deleteSandbox(ctx.deps, create(DeleteSandboxRequestSchema, { sandboxId }));
    ctx.logger.info({ "sandbox.id": sandboxId }, "E2B sandbox timed out: killed");
  } catch (err) {
    if (!(err instanceof SandboxNotFoundError)) throw err;
  }
  // Killed, or already gone.
  ctx.tunnels.forget(sandboxId);
  await deleteE2bSandbox(ctx.db, sandboxId);
}
