import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type { Client } from "@connectrpc/connect";
import type { Logger } from "@dnah/platform";
import type { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { SCHEDULER_TIMEOUT_MS } from "./scheduler.js";

/** Sandbox ids as the native API accepts them; anything else would make the scheduler refuse a batch. */
const SANDBOX_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** The scheduler takes at most this many marks per RecordActivity call. */
export const MAX_MARKS_PER_CALL = 10_000;

/** Where working calls are reported (RpcDeps.activity); the recorder below, or a no-op. */
export interface ActivitySink {
  /** The sandbox did a working call now. O(1), in memory. */
  touch(sandboxId: string): void;
  /**
   * A working call that may run long (an exec stream, a proxied request, a WebSocket) began:
   * the sandbox counts as active at every flush until the returned function is called.
   */
  hold(sandboxId: string): () => void;
}

export interface ActivityOptions {
  scheduler: Pick<Client<typeof SchedulerService>, "recordActivity">;
  logger: Logger;
  /** How often the marks are sent (DNAH_ACTIVITY_FLUSH_MS). */
  flushMs: number;
  /** At most this many sandboxes are remembered between flushes; newer ones are dropped (warned once per flush). */
  maxEntries?: number | undefined;
  /** Milliseconds since the epoch; tests pass their own. */
  now?: (() => number) | undefined;
}

export const DEFAULT_MAX_ENTRIES = 100_000;

/**
 * Coalesces working calls into one scheduler `RecordActivity` batch per interval: `touch()`
 * keeps the latest time per sandbox in a map (no Postgres write per call); every `flushMs`
 * the map is swapped out and sent. A failed flush puts its marks back (the newer of the two
 * times wins) and the next tick retries; `close()` flushes once more, so a restart loses at
 * most one interval.
 */
export class ActivityRecorder implements ActivitySink {
  private marks = new Map<string, number>();
  /** Open long calls per sandbox (refcount): marked "now" at every flush. */
  private readonly held = new Map<string, number>();
  private readonly maxEntries: number;
  private readonly now: () => number;
  private timer: NodeJS.Timeout | undefined;
  /** The flush in progress; flushes never overlap. */
  private inflight: Promise<void> | undefined;
  private droppedSinceFlush = 0;
  private closed = false;

  constructor(private readonly opts: ActivityOptions) {
    this.maxEntries = opts.maxEntries ?? DEFAULT_MAX_ENTRIES;
    this.now = opts.now ?? Date.now;
  }

  start(): void {
    if (this.timer !== undefined || this.closed) return;
    this.timer = setInterval(() => void this.flush(), this.opts.flushMs);
    this.timer.unref();
  }

  /** Marks waiting for the next flush (tests, diagnostics). */
  get pending(): number {
    return this.marks.size;
  }

  touch(sandboxId: string): void {
    if (!SANDBOX_ID_RE.test(sandboxId)) return; // never names a sandbox: nothing to move
    this.mark(sandboxId, this.now());
  }

  hold(sandboxId: string): () => void {
    if (!SANDBOX_ID_RE.test(sandboxId)) return () => {};
    this.touch(sandboxId);
    this.held.set(sandboxId, (this.held.get(sandboxId) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.held.get(sandboxId) ?? 1) - 1;
      if (n <= 0) this.held.delete(sandboxId);
      else this.held.set(sandboxId, n);
      this.touch(sandboxId);
    };
  }

  /** Sends what is pending now (waits for a flush already running first). */
  async flush(): Promise<void> {
    while (this.inflight !== undefined) await this.inflight;
    this.inflight = this.send().finally(() => {
      this.inflight = undefined;
    });
    return this.inflight;
  }

  /** Stops the timer and flushes once more. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  private mark(sandboxId: string, at: number): void {
    const prev = this.marks.get(sandboxId);
    if (prev !== undefined) {
      if (at > prev) this.marks.set(sandboxId, at);
      return;
    }
    if (this.marks.size >= this.maxEntries) {
      this.droppedSinceFlush++;
      return;
    }
    this.marks.set(sandboxId, at);
  }

  private async send(): Promise<void> {
    const now = this.now();
    for (const id of this.held.keys()) this.mark(id, now);
    if (this.droppedSinceFlush > 0) {
      this.opts.logger.warn(
        { dropped: this.droppedSinceFlush, maxEntries: this.maxEntries },
        "activity map full: marks of further sandboxes were dropped this interval",
      );
      this.droppedSinceFlush = 0;
    }
    if (this.marks.size === 0) return;
    const batch = this.marks;
    this.marks = new Map();
    const entries = [...batch];
    for (let i = 0; i < entries.length; i += MAX_MARKS_PER_CALL) {
      const chunk = entries.slice(i, i + MAX_MARKS_PER_CALL);
      try {
        await this.opts.scheduler.recordActivity(
          { marks: chunk.map(([sandboxId, at]) => ({ sandboxId, at: timestampFromMs(at) })) },
          { timeoutMs: SCHEDULER_TIMEOUT_MS },
        );
      } catch (err) {
        // Keep this chunk and every later one; the next tick retries them with newer marks merged.
        const kept = entries.slice(i);
        for (const [id, at] of kept) this.mark(id, at);
        this.opts.logger.warn(
          { err, marks: kept.length },
          "cannot record sandbox activity; keeping the marks for the next flush",
        );
        return;
      }
    }
  }
}

/** For gateways built without a recorder (nothing is recorded). */
export const NO_ACTIVITY: ActivitySink = Object.freeze({
  touch() {},
  hold: () => () => {},
});
