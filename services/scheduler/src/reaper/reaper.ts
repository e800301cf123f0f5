import type { Context } from "../context.js";
import { claimReaperOps, insertEvent, markLostOnDeadHosts, type ReaperClaim } from "../db/queries.js";
import type { ReaperOp } from "../domain/lifecycle.js";
import { archiveSandbox, deleteByReaper, type OpOutcome, recordLost, stopSandbox } from "../lifecycle-ops.js";
import { errorDetail, logFields } from "../provision.js";

export interface ReaperPass {
  /** Transitions done, per op. */
  stop: number;
  archive: number;
  delete: number;
  /** Claimed rows whose op failed (recorded as a "failed" event; retried once the lease ends). */
  failed: number;
}

export interface Reaper {
  start(): void;
  /**
   * One pass at `nowMs` (the context's clock by default): for each op (delete, archive, stop),
   * claim the due rows in one statement and do each. Safe to run on several replicas at once.
   */
  runOnce(nowMs?: number): Promise<ReaperPass>;
  /**
   * Marks the users' sandboxes of hosts that missed their heartbeats for the dead-host window
   * 'lost' (event "lost", actor reaper); returns how many. Runs before every pass.
   */
  markLost(): Promise<number>;
  /** Stops the loop and waits for the pass in flight. */
  close(): Promise<void>;
}

/** Deletes first (they free the most), stops last (a stopped row is archived next time). */
const OPS: readonly ReaperOp[] = ["delete", "archive", "stop"];

/**
 * The reaper: every `reaperIntervalMs`, applies each sandbox's lifecycle (auto-stop,
 * auto-archive, auto-delete). A claim is a lease (`reaper_op`, `reaper_op_at`) taken with
 * SKIP LOCKED, so replicas never act on one row twice; a failure is recorded and the lease is
 * left to run out, after which any reaper retries. No failure ends the loop.
 */
export function createReaper(ctx: Context): Reaper {
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let inFlight: Promise<unknown> | undefined;

  async function act(op: ReaperOp, c: ReaperClaim, nowMs: number): Promise<OpOutcome> {
    switch (op) {
      case "stop":
        return stopSandbox(ctx, c, nowMs);
      case "archive":
        return archiveSandbox(ctx, c, nowMs);
      case "delete":
        return deleteByReaper(ctx, c);
    }
  }

  async function runOnce(nowMs: number = ctx.clock.now()): Promise<ReaperPass> {
    const pass: ReaperPass = { stop: 0, archive: 0, delete: 0, failed: 0 };
    const now = new Date(nowMs);
    for (const op of OPS) {
      const claims = await claimReaperOps(ctx.db, op, now, {
        leaseMs: ctx.cfg.reaperLeaseMs,
        batch: ctx.cfg.reaperBatch,
        hostDeadAfterMs: ctx.cfg.hostDeadAfterMs,
      });
      for (const c of claims) {
        const fields = { ...logFields(c), op };
        try {
          const out = await act(op, c, nowMs);
          if (out.done) {
            pass[op] += 1;
            ctx.logger.info({ ...fields, detail: out.detail }, `reaper: ${op} done`);
          } else {
            ctx.logger.info({ ...fields, why: out.why }, `reaper: ${op} not needed`);
          }
        } catch (err) {
          pass.failed += 1;
          const detail = `${op}: ${errorDetail(err)}`;
          ctx.logger.warn({ ...fields, err }, "reaper: transition failed; retried when its lease ends");
          await insertEvent(ctx.db, {
            sandboxId: c.id,
            kind: "failed",
            fromState: c.state,
            toState: c.state,
            actor: "reaper",
            detail: detail.slice(0, 2000),
          }).catch((e: unknown) =>
            ctx.logger.error({ ...fields, err: e }, "reaper: could not record a failure"),
          );
        }
      }
    }
    return pass;
  }

  async function markLost(): Promise<number> {
    const lost = await markLostOnDeadHosts(ctx.db, ctx.cfg.hostDeadAfterMs);
    for (const l of lost) await recordLost(ctx, l, `missed its heartbeats for ${ctx.cfg.hostDeadAfterMs} ms`);
    return lost.length;
  }

  function schedule(): void {
    if (stopped) return;
    timer = setTimeout(() => {
      const p = markLost()
        .then(() => runOnce())
        .catch((err: unknown) => ctx.logger.error({ err }, "reaper pass failed; retrying next interval"))
        .finally(() => {
          if (inFlight === p) inFlight = undefined;
          schedule();
        });
      inFlight = p;
    }, ctx.cfg.reaperIntervalMs);
    timer.unref();
  }

  return {
    start() {
      stopped = false;
      schedule();
    },
    runOnce,
    markLost,
    async close() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await inFlight;
    },
  };
}
