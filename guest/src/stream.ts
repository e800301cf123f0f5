/** Default keepalive interval when the client sends no `Keepalive-Ping-Interval` (envd: 90 s). */
export const DEFAULT_KEEPALIVE_MS = 90_000;

/** envd's keepalive interval: the `Keepalive-Ping-Interval` header in seconds, else 90 s. */
export function keepaliveMs(headers: Headers, fallbackMs = DEFAULT_KEEPALIVE_MS): number {
  const raw = headers.get("keepalive-ping-interval");
  if (raw === null || !/^\d+$/.test(raw.trim())) return fallbackMs;
  const seconds = Number(raw.trim());
  // A zero interval would spin; envd's ticker panics on it. Treat it as "use the default".
  return seconds > 0 ? Math.min(seconds * 1000, 2_147_000_000) : fallbackMs;
}

/**
 * A single-consumer queue between an event source (a process, a watcher) and one streaming
 * response. `size` counts queued bytes so the source can apply backpressure.
 */
export class Channel<T> {
  private readonly items: T[] = [];
  private closed = false;
  private wake: (() => void) | undefined;
  private queuedBytes = 0;

  constructor(
    private readonly sizeOf: (item: T) => number = () => 0,
    /** Called whenever the consumer takes an item. */
    private readonly onTake?: () => void,
  ) {}

  get size(): number {
    return this.queuedBytes;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  push(item: T): void {
    if (this.closed) return;
    this.items.push(item);
    this.queuedBytes += this.sizeOf(item);
    this.wake?.();
  }

  /** No more items; the consumer ends after draining what is queued. */
  close(): void {
    this.closed = true;
    this.wake?.();
  }

  /**
   * Yields queued items until the channel is closed and empty. When nothing arrives for
   * `idleMs`, yields `keepalive()` (the timer restarts after every item). Throws the signal's
   * reason when `signal` aborts (deadline, client gone, server shutdown).
   */
  async *drain(signal: AbortSignal, idleMs: number, keepalive: () => T): AsyncGenerator<T> {
    for (;;) {
      if (this.items.length > 0) {
        const item = this.items.shift() as T;
        this.queuedBytes -= this.sizeOf(item);
        this.onTake?.();
        yield item;
        continue;
      }
      if (this.closed) return;
      if (signal.aborted) throw signal.reason;
      let idle = false;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          idle = true;
          done();
        }, idleMs);
        const done = (): void => {
          clearTimeout(timer);
          signal.removeEventListener("abort", done);
          this.wake = undefined;
          resolve();
        };
        this.wake = done;
        signal.addEventListener("abort", done, { once: true });
      });
      if (idle && this.items.length === 0 && !this.closed) yield keepalive();
    }
  }
}
