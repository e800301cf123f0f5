import { create } from "@bufbuild/protobuf";
import { DeleteSandboxRequestSchema } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SandboxNotFoundError } from "../../errors.js";
import { deleteSandbox } from "../../rpc/delete-sandbox.js";
import type { E2bContext } from "./context.js";
import { claimExpiredE2bSandboxes, deleteE2bSandbox } from "./db.js";

/** How often expired sandboxes are looked for. */
const SWEEP_INTERVAL_MS = 1_000;
/** A claimed expiry is retried after this long if its delete failed (or its gateway died). */
const RETRY_AFTER_S = 30;
const BATCH = 50;

/**
 * Kills E2B sandboxes whose `endAt` has passed — E2B's `timeout` (default 300 s, moved by
 * `setTimeout` and `connect`). Expired rows are claimed with `FOR UPDATE SKIP LOCKED` and a
 * retry lease, so several gateways share the work and a failed delete comes back later.
 * (`autoPause` and the general lifecycle presets belong to the scheduler's reaper, to come.)
 */
export function startTimeoutEnforcer(ctx: E2bContext): () => Promise<void> {
  let stopped = false;
  let running: Promise<void> = Promise.resolve();
  const sweep = async () => {
    const expired = await claimExpiredE2bSandboxes(ctx.db, BATCH, RETRY_AFTER_S);
    for (const sandboxId of expired) {
      try {
        await deleteSandbox(ctx.deps, create(DeleteSandboxRequestSchema, { sandboxId }));
        ctx.logger.info({ "sandbox.id": sandboxId }, "E2B sandbox timed out: killed");
      } catch (err) {
        if (!(err instanceof SandboxNotFoundError)) {
          ctx.logger.warn(
            { err, "sandbox.id": sandboxId },
            "cannot kill a timed-out E2B sandbox; will retry",
          );
          continue;
        }
      }
      ctx.tunnels.forget(sandboxId);
      await deleteE2bSandbox(ctx.db, sandboxId);
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
