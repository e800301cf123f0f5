import type { Context } from "../context.js";
import {
  abandonCreatingSnapshots,
  deleteSnapshotRow,
  failAbandonedStarts,
  listPoolTemplates,
  type SandboxRow,
  type TemplateRow,
} from "../db/queries.js";
import type { NoCapacityError } from "../domain/errors.js";
import { boot, deleteVm, logFields, reservePoolSlots } from "../provision.js";
import { snapshotFields } from "../snapshots.js";

export interface Refiller {
  start(): void;
  /** Runs a pass soon (after a claim, or when a host appears). */
  kick(): void;
  /** Stops the loop and waits for the boots it has in flight. Leaves the pool as it is. */
  close(): Promise<void>;
}

const BACKOFF_BASE_MS = 1_000;
const BACKOFF_MAX_MS = 30_000;

interface TemplateState {
  /** Consecutive failed boots; each doubles the wait before the next attempt. */
  failures: number;
  retryAt: number;
  /** Set while the pool cannot reach its target for lack of hosts, so that is logged once. */
  starved: boolean;
}

/**
 * Keeps each template's warm pool at its target: every pass reserves the missing sandboxes
 * (booting ones count, so there are never more than the target in flight) and boots them.
 * Failed boots back off per template; no failure ends the loop.
 */
export function createRefiller(ctx: Context): Refiller {
  const states = new Map<string, TemplateState>();
  const inFlight = new Set<Promise<void>>();
  let stopped = false;
  let kicked = false;
  let wake: (() => void) | undefined;
  let loopDone: Promise<void> | undefined;

  const stateOf = (templateId: string): TemplateState => {
    let st = states.get(templateId);
    if (st === undefined) {
      st = { failures: 0, retryAt: 0, starved: false };
      states.set(templateId, st);
    }
    return st;
  };

  async function loop(): Promise<void> {
    let failedPasses = 0;
    while (!stopped) {
      kicked = false;
      try {
        await pass();
        failedPasses = 0;
      } catch (err) {
        failedPasses += 1;
        ctx.logger.error({ err, failedPasses }, "warm pool pass failed; retrying");
      }
      const waitMs = failedPasses === 0 ? ctx.cfg.poolRefillIntervalMs : backoffMs(failedPasses);
      await sleep(waitMs);
    }
  }

  async function pass(): Promise<void> {
    // Rows a dead scheduler left 'starting' would count towards the pool forever. A restore
    // from a snapshot is 'starting' for up to its own, longer deadline.
    const abandonAfterMs = 2 * Math.max(ctx.cfg.vmBootTimeoutMs, ctx.cfg.snapshotCallTimeoutMs);
    for (const row of await failAbandonedStarts(ctx.db, abandonAfterMs)) {
      ctx.logger.warn(logFields(row), "boot abandoned by its scheduler; sandbox marked failed");
      ctx.background("cleanup of an abandoned boot", logFields(row), () => deleteVm(ctx, row));
    }
    // A snapshot stuck 'creating' can be neither restored nor deleted, and holds its name.
    const snapshotAbandonAfterMs = 2 * (ctx.cfg.snapshotCallTimeoutMs + ctx.cfg.vmmCallTimeoutMs);
    for (const snap of await abandonCreatingSnapshots(ctx.db, snapshotAbandonAfterMs)) {
      const fields = snapshotFields(snap);
      ctx.logger.warn(fields, "snapshot abandoned while being written; removing it");
      ctx.background("cleanup of an abandoned snapshot", fields, async () => {
        await ctx
          .vmm(snap.vmmUrl)
          .deleteSnapshot({ snapshotId: snap.id }, { timeoutMs: ctx.cfg.snapshotCallTimeoutMs });
        await deleteSnapshotRow(ctx.db, snap.id);
      });
    }
    for (const template of await listPoolTemplates(ctx.db)) {
      if (stopped) return;
      const st = stateOf(template.id);
      if (ctx.clock.now() < st.retryAt) continue;
      const { rows, shortfall } = await reservePoolSlots(ctx, template);
      noteShortfall(template, st, shortfall);
      for (const row of rows) track(bootWarm(template, st, row));
    }
  }

  async function bootWarm(template: TemplateRow, st: TemplateState, row: SandboxRow): Promise<void> {
    const started = ctx.clock.now();
    const fields = { ...logFields(row), "template.id": template.id };
    try {
      await boot(ctx, row, { background: true });
      st.failures = 0;
      st.retryAt = 0;
      ctx.logger.info({ ...fields, bootMs: ctx.clock.now() - started }, "warm sandbox ready");
    } catch (err) {
      st.failures += 1;
      const waitMs = backoffMs(st.failures);
      st.retryAt = ctx.clock.now() + waitMs;
      ctx.logger.warn(
        { ...fields, err, failures: st.failures, retryInMs: waitMs },
        "warm sandbox boot failed",
      );
    }
  }

  function noteShortfall(
    template: TemplateRow,
    st: TemplateState,
    shortfall: NoCapacityError | undefined,
  ): void {
    if (shortfall !== undefined && !st.starved) {
      st.starved = true;
      // Before the first vmm registers (every `dnah dev` start) this is expected, not a warning.
      ctx.logger[shortfall.reason === "no_hosts" ? "info" : "warn"](
        { "template.id": template.id, target: template.poolTarget, reason: shortfall.message },
        "warm pool cannot reach its target",
      );
    } else if (shortfall === undefined && st.starved) {
      st.starved = false;
      ctx.logger.info({ "template.id": template.id }, "warm pool has room to fill again");
    }
  }

  function track(p: Promise<void>): void {
    inFlight.add(p);
    void p.finally(() => inFlight.delete(p));
  }

  function sleep(ms: number): Promise<void> {
    if (kicked || stopped) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      wake = done;
    });
  }

  return {
    start() {
      if (loopDone === undefined && !stopped) loopDone = loop();
    },
    kick() {
      kicked = true;
      wake?.();
    },
    async close() {
      stopped = true;
      wake?.();
      await loopDone;
      while (inFlight.size > 0) await Promise.allSettled([...inFlight]);
    },
  };
}

function backoffMs(failures: number): number {
  return Math.min(BACKOFF_BASE_MS * 2 ** (failures - 1), BACKOFF_MAX_MS);
}
