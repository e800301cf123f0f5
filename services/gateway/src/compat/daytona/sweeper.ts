import type { DaytonaContext } from "./context.js";
import { claimDueSandboxes, daytonaSandboxById, releaseLease } from "./db.js";
import { MAX_AUTO_ARCHIVE_MIN } from "./lifecycle.js";
import { archiveSandbox, destroySandbox, stopSandbox } from "./ops.js";

export interface SweeperOptions {
  /** How often due sandboxes are looked for (Daytona: 10 s). */
  intervalMs: number;
  /** The sweeper's clock; tests move it forward to make minutes pass. */
  now: () => Date;
}

export const DEFAULT_SWEEPER: Readonly<SweeperOptions> = Object.freeze({
  intervalMs: 10_000,
  now: () => new Date(),
});

/** A claimed action is retried after this long if it failed (or its gateway died). */
const LEASE_S = 60;
const BATCH = 20;

export interface Sweeper {
  /** One pass; resolves to the number of actions done. */
  sweepOnce(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * The Daytona lifecycle (spec §6): auto-stop after `autoStopInterval` idle minutes, then
 * auto-delete (`autoDeleteInterval` ≥ 0) or auto-archive (`autoArchiveInterval`), both counted
 * from the last activity. Due rows are claimed with a lease under `FOR UPDATE SKIP LOCKED`, so
 * several gateways share the work and never act twice on one sandbox.
 */
export function startSweeper(ctx: DaytonaContext, opts: SweeperOptions): Sweeper {
  let stopped = false;
  let running: Promise<unknown> = Promise.resolve();
  const sweepOnce = async (): Promise<number> => {
    const due = await claimDueSandboxes(ctx.db, opts.now(), MAX_AUTO_ARCHIVE_MIN, BATCH, LEASE_S);
    let done = 0;
    for (const d of due) {
      const row = await daytonaSandboxById(ctx.db, d.sandbox_id);
      if (row === undefined) continue;
      try {
        const origin = ctx.origin();
        if (d.action === "stop") await stopSandbox(ctx, row, origin);
        else if (d.action === "archive") await archiveSandbox(ctx, row, origin);
        else await destroySandbox(ctx, row, origin);
        done++;
        ctx.logger.info({ "sandbox.id": d.sandbox_id, action: d.action }, "daytona lifecycle action");
      } catch (err) {
        // The lease stays: another pass retries after it runs out.
        ctx.logger.warn(
          { err, "sandbox.id": d.sandbox_id, action: d.action },
          "daytona lifecycle action failed",
        );
        continue;
      }
      await releaseLease(ctx.db, d.sandbox_id);
    }
    return done;
  };
  const timer = setInterval(() => {
    running = running
      .then(() => (stopped ? undefined : sweepOnce()))
      .catch((err: unknown) => ctx.logger.warn({ err }, "daytona lifecycle sweep failed; retrying"));
  }, opts.intervalMs);
  timer.unref();
  return {
    sweepOnce: () => {
      const p = running.then(sweepOnce);
      running = p.catch(() => undefined);
      return p;
    },
    stop: async () => {
      stopped = true;
      clearInterval(timer);
      await running;
    },
  };
}
