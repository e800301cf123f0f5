import type { Hash } from "node:crypto";
import type { FileHandle } from "node:fs/promises";
import type { Readable } from "node:stream";

/** Bytes queued before the sender is held back (memory per upload stays about twice this). */
const MAX_QUEUED = 4 * 1024 * 1024;

/**
 * Writes a stream of buffers to a file with the socket and the disk working at once: while one
 * `writev` runs, the buffers that arrive meanwhile are queued and go in the next one (one
 * syscall for many socket reads). The sender is held back only once MAX_QUEUED bytes are
 * queued, and let go as soon as a `writev` takes the queue. Sequential from `position` (or the
 * file's offset if null).
 */
export class BatchWriter {
  private queue: Buffer[] = [];
  private queued = 0;
  private running: Promise<void> | undefined;
  private failed: unknown;
  private room: (() => void) | undefined;

  constructor(
    private readonly fh: FileHandle,
    private position: number | null = null,
    private readonly maxQueued = MAX_QUEUED,
  ) {}

  /**
   * Queues `buf` (no promise, no copy); false once the queue is full: call `onRoom` to know
   * when to send more. Throws the first write error.
   */
  push(buf: Buffer): boolean {
    if (this.failed !== undefined) throw this.failed;
    this.queue.push(buf);
    this.queued += buf.length;
    this.running ??= this.drain();
    return this.queued < this.maxQueued;
  }

  /** Calls `fn` once the queue has room again (or a write failed). */
  onRoom(fn: () => void): void {
    if (this.queued < this.maxQueued || this.failed !== undefined) fn();
    else this.room = fn;
  }

  async write(buf: Buffer): Promise<void> {
    if (!this.push(buf)) await new Promise<void>((resolve) => this.onRoom(resolve));
    if (this.failed !== undefined) throw this.failed;
  }

  /** Waits for everything written so far to reach the file; throws the first write error. */
  async flush(): Promise<void> {
    while (this.running !== undefined) await this.running;
    if (this.failed !== undefined) throw this.failed;
  }

  private wake(): void {
    const fn = this.room;
    this.room = undefined;
    fn?.();
  }

  private async drain(): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const bufs = this.queue;
        const total = this.queued;
        this.queue = [];
        this.queued = 0;
        this.wake();
        let { bytesWritten } = await this.fh.writev(bufs, this.position ?? undefined);
        // A short write (rare on a file): the rest, one buffer.
        if (bytesWritten < total) {
          const rest = Buffer.concat(bufs).subarray(bytesWritten);
          let off = 0;
          while (off < rest.length) {
            const pos = this.position === null ? null : this.position + bytesWritten + off;
            off += (await this.fh.write(rest, off, rest.length - off, pos)).bytesWritten;
          }
          bytesWritten = total;
        }
        if (this.position !== null) this.position += total;
      }
    } catch (err) {
      this.failed = err ?? new Error("write failed");
      this.queue = [];
      this.queued = 0;
      this.wake();
    } finally {
      this.running = undefined;
    }
  }
}

/** Thrown by `receive` when the body passes `maxBytes` (code DNAH_TOO_LARGE). */
function tooLargeError(): Error {
  return Object.assign(new Error("too large"), { code: "DNAH_TOO_LARGE" });
}

/**
 * Copies a request body into `w` with 'data' events (no promise per socket read), pausing the
 * socket while the disk is MAX_QUEUED behind; `take` sees every chunk first (a quota) and
 * `hash`, when given, every byte. Resolves with the byte count once all of it is in the file.
 * On a refusal the body is left paused with no listener (the caller drains or drops it); on
 * the client going away it rejects with ERR_STREAM_PREMATURE_CLOSE. Never leaves a write
 * running behind it.
 */
export function receive(
  src: Readable,
  w: BatchWriter,
  maxBytes: number,
  take: (n: number) => void,
  hash: Hash | undefined,
): Promise<number> {
  return new Promise<number>((resolve, reject) => {
    let size = 0;
    let done = false;
    const finish = (err?: unknown) => {
      if (done) return;
      done = true;
      src.off("data", onData);
      src.off("end", onEnd);
      src.off("error", onError);
      src.off("close", onClose);
      if (err === undefined) w.flush().then(() => resolve(size), reject);
      else {
        src.pause();
        w.flush().then(
          () => reject(err),
          () => reject(err),
        );
      }
    };
    const resume = () => {
      if (!done) src.resume();
    };
    const onData = (chunk: Buffer) => {
      try {
        size += chunk.length;
        if (size > maxBytes) throw tooLargeError();
        take(chunk.length);
        hash?.update(chunk);
        if (!w.push(chunk)) {
          src.pause();
          w.onRoom(resume);
        }
      } catch (err) {
        finish(err);
      }
    };
    const onEnd = () => finish();
    const onError = (err: Error) =>
      finish(
        src.readableAborted
          ? Object.assign(new Error("aborted", { cause: err }), { code: "ERR_STREAM_PREMATURE_CLOSE" })
          : err,
      );
    const onClose = () => finish(Object.assign(new Error("aborted"), { code: "ERR_STREAM_PREMATURE_CLOSE" }));
    // Gone already (while the caller awaited before this): no 'close' is coming.
    if (src.destroyed && !src.readableEnded) return onClose();
    src.on("data", onData);
    src.once("end", onEnd);
    src.once("error", onError);
    src.once("close", onClose);
  });
}
