import { connect, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * A QMP client (one per QEMU process): greeting, `qmp_capabilities`, then commands answered in
 * order. Asynchronous events (`{"event": …}`) arrive interleaved with replies; they go to
 * `onEvent`. Each command has a deadline; a closed socket fails whatever is pending.
 */
export class QmpError extends Error {
  constructor(
    readonly command: string,
    readonly errorClass: string,
    desc: string,
  ) {
    super(`qmp ${command}: ${errorClass}: ${desc}`);
    this.name = "QmpError";
  }
}

interface Pending {
  command: string;
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

interface EventWaiter {
  event: string;
  match: (data: Record<string, unknown>) => boolean;
  resolve: (data: Record<string, unknown>) => void;
  reject: (e: Error) => void;
}

const LINE_MAX_BYTES = 1024 * 1024;

export class Qmp {
  private buf = "";
  private readonly pending: Pending[] = [];
  private closedWith: Error | undefined;
  private readonly waiters = new Set<EventWaiter>();
  onEvent: (event: string, data: unknown) => void = () => {};

  private constructor(private readonly sock: Socket) {
    sock.setEncoding("utf8");
    sock.on("data", (chunk: string) => this.onData(chunk));
    sock.on("error", (err) => this.fail(err));
    sock.on("close", () => this.fail(new Error("qmp socket closed")));
  }

  /** Connects, reads the greeting and leaves capabilities negotiation mode. */
  static async connect(path: string, timeoutMs = 5_000): Promise<Qmp> {
    const deadline = Date.now() + timeoutMs;
    let sock: Socket;
    for (let wait = 5; ; wait = Math.min(wait * 2, 100)) {
      try {
        sock = await dial(path, timeoutMs);
        break;
      } catch (err) {
        // QEMU binds the socket (the path appears) a moment before it listens: seen as
        // ECONNREFUSED under load (CI, 2026-12-03). Retried until the deadline.
        if ((err as NodeJS.ErrnoException).code !== "ECONNREFUSED" || Date.now() + wait > deadline) throw err;
        await sleep(wait);
      }
    }
    const qmp = new Qmp(sock);
    // The greeting is answered like a command with no request.
    await qmp.expect("greeting", timeoutMs);
    await qmp.execute("qmp_capabilities", undefined, timeoutMs);
    return qmp;
  }

  private expect(command: string, timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (this.closedWith) {
        reject(this.closedWith);
        return;
      }
      const timer = setTimeout(() => {
        const i = this.pending.findIndex((p) => p.timer === timer);
        if (i >= 0) this.pending.splice(i, 1);
        reject(new Error(`qmp ${command} timed out after ${timeoutMs} ms`));
        // A late reply would be matched to the next command: the session is unusable now.
        this.sock.destroy();
      }, timeoutMs);
      this.pending.push({ command, resolve, reject, timer });
    });
  }

  /** Runs one command; resolves with its `return` value, rejects with a QmpError. */
  execute(command: string, args?: Record<string, unknown>, timeoutMs = 10_000): Promise<unknown> {
    const p = this.expect(command, timeoutMs);
    if (!this.closedWith)
      this.sock.write(
        `${JSON.stringify(args ? { execute: command, arguments: args } : { execute: command })}\n`,
      );
    return p;
  }

  /**
   * Resolves with the data of the next `event` whose data satisfies `match` (e.g.
   * `DEVICE_DELETED` for one device id: several may arrive for one unplug). Call it before the
   * command that causes the event, so the event cannot slip past.
   */
  waitForEvent(
    event: string,
    match: (data: Record<string, unknown>) => boolean,
    timeoutMs: number,
  ): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const entry = {
        event,
        match,
        resolve: (d: Record<string, unknown>) => {
          clearTimeout(timer);
          resolve(d);
        },
        reject: (e: Error) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.delete(entry);
        reject(new Error(`qmp: no ${event} event within ${timeoutMs} ms`));
      }, timeoutMs);
      if (this.closedWith) entry.reject(this.closedWith);
      else this.waiters.add(entry);
    });
  }

  close(): void {
    this.sock.destroy();
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    if (this.buf.length > LINE_MAX_BYTES) {
      this.fail(new Error("qmp reply too long"));
      this.sock.destroy();
      return;
    }
    for (let nl = this.buf.indexOf("\n"); nl >= 0; nl = this.buf.indexOf("\n")) {
      const line = this.buf.slice(0, nl).trim();
      this.buf = this.buf.slice(nl + 1);
      if (line) this.onMessage(line);
    }
  }

  private onMessage(line: string): void {
    let msg: {
      QMP?: unknown;
      return?: unknown;
      error?: { class?: string; desc?: string };
      event?: string;
      data?: unknown;
    };
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    if (msg.event) {
      const data = (msg.data ?? {}) as Record<string, unknown>;
      for (const w of this.waiters)
        if (w.event === msg.event && w.match(data)) {
          this.waiters.delete(w);
          w.resolve(data);
        }
      this.onEvent(msg.event, msg.data);
      return;
    }
    const p = this.pending.shift();
    if (!p) return;
    clearTimeout(p.timer);
    if (msg.error) p.reject(new QmpError(p.command, msg.error.class ?? "Error", msg.error.desc ?? ""));
    else p.resolve(msg.QMP ?? msg.return);
  }

  private fail(err: Error): void {
    this.closedWith ??= err;
    for (const w of this.waiters) w.reject(err);
    this.waiters.clear();
    for (const p of this.pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }
}

function dial(path: string, timeoutMs: number): Promise<Socket> {
  const sock = connect(path);
  return new Promise<Socket>((resolve, reject) => {
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new Error(`qmp connect ${path} timed out`));
    }, timeoutMs);
    sock.once("connect", () => {
      clearTimeout(timer);
      resolve(sock);
    });
    sock.once("error", (e) => {
      clearTimeout(timer);
      sock.destroy();
      reject(e);
    });
  });
}
