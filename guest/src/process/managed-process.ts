import type { ChildProcess } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import type { ProcessConfig } from "@dnah/proto/process/process_pb";
import { GuestError, internal } from "../errors.js";
import type { Logger } from "../log.js";
import type { Channel } from "../stream.js";
import type { ProcessEventInit } from "./events.js";
import { type EndEventInit, endEvent } from "./exit-status.js";

/** envd's read sizes: stdout/stderr in ≤ 32 KiB chunks, PTY in ≤ 16 KiB. */
const STD_CHUNK = 32 * 1024;
const PTY_CHUNK = 16 * 1024;
/** A subscriber holding more than this pauses the process's output until it drains below LOW. */
const HIGH_WATER_BYTES = 4 * 1024 * 1024;
const LOW_WATER_BYTES = 1024 * 1024;
/** Helper stderr kept for the log (PTY only). */
const HELPER_STDERR_MAX = 4096;

export interface ManagedProcessInit {
  pid: number;
  child: ChildProcess;
  config: ProcessConfig;
  tag: string | undefined;
  pty: boolean;
  timeoutMs: number;
  log: Logger;
  onEnd: (proc: ManagedProcess, end: EndEventInit) => void;
}

/**
 * A running process and its subscribers. Output goes to every subscriber (the Start stream and
 * any Connect streams); output nobody is subscribed to is dropped, as in envd.
 */
export class ManagedProcess {
  readonly pid: number;
  readonly config: ProcessConfig;
  readonly tag: string | undefined;
  readonly pty: boolean;
  private readonly child: ChildProcess;
  private readonly log: Logger;
  private readonly subscribers = new Set<Channel<ProcessEventInit>>();
  private readonly outputs: Readable[];
  private readonly input: Writable | null;
  private readonly control: Writable | null;
  private readonly onEnd: ManagedProcessInit["onEnd"];
  private stdinOpen: boolean;
  private paused = false;
  /** Set by SendSignal and the timeout: do not wait for the output pipes to drain. */
  private signalled = false;
  private ended = false;
  private timer: NodeJS.Timeout | undefined;
  private helperStderr = "";

  constructor(init: ManagedProcessInit) {
    this.pid = init.pid;
    this.config = init.config;
    this.tag = init.tag;
    this.pty = init.pty;
    this.child = init.child;
    this.log = init.log;
    this.onEnd = init.onEnd;
    const { child } = init;
    this.input = child.stdin;
    this.stdinOpen = child.stdin !== null;
    this.control = init.pty ? ((child.stdio[3] as Writable | null | undefined) ?? null) : null;
    this.input?.on("error", (err) =>
      this.log.debug("process input closed", { pid: this.pid, error: err.message }),
    );
    this.control?.on("error", (err) =>
      this.log.debug("pty control closed", { pid: this.pid, error: err.message }),
    );

    if (init.pty) {
      this.outputs = child.stdout ? [child.stdout] : [];
      child.stdout?.on("data", (chunk: Buffer) => this.emitOutput("pty", chunk, PTY_CHUNK));
      child.stderr?.on("data", (chunk: Buffer) => {
        if (this.helperStderr.length < HELPER_STDERR_MAX) this.helperStderr += chunk.toString("utf8");
      });
    } else {
      this.outputs = [child.stdout, child.stderr].filter((s): s is Readable => s !== null);
      child.stdout?.on("data", (chunk: Buffer) => this.emitOutput("stdout", chunk, STD_CHUNK));
      child.stderr?.on("data", (chunk: Buffer) => this.emitOutput("stderr", chunk, STD_CHUNK));
    }
    for (const s of [child.stdout, child.stderr]) {
      s?.on("error", (err) => this.log.warn("process output error", { pid: this.pid, error: err.message }));
    }

    child.on("exit", (code, signal) => {
      // A PTY helper's stdout is its own, so waiting for it never hangs; plain pipes may be
      // held open by grandchildren, so a signalled process ends without waiting for them.
      if (this.signalled && !this.pty) this.finish(code, signal);
    });
    child.on("close", (code, signal) => this.finish(code, signal));
    child.on("error", (err) => this.log.warn("process error", { pid: this.pid, error: err.message }));

    if (init.timeoutMs > 0) {
      this.timer = setTimeout(() => {
        this.log.debug("process timed out", { pid: this.pid, timeoutMs: init.timeoutMs });
        this.kill("SIGKILL");
      }, init.timeoutMs);
      this.timer.unref();
    }
  }

  get isEnded(): boolean {
    return this.ended;
  }

  /** Attaches a subscriber; it receives output from now on, then the end event. */
  subscribe(ch: Channel<ProcessEventInit>): void {
    this.subscribers.add(ch);
  }

  unsubscribe(ch: Channel<ProcessEventInit>): void {
    this.subscribers.delete(ch);
    this.maybeResume();
  }

  /** Called by subscriber channels whenever their consumer takes an event. */
  readonly maybeResume = (): void => {
    if (!this.paused) return;
    for (const ch of this.subscribers) if (ch.size > LOW_WATER_BYTES) return;
    this.paused = false;
    for (const s of this.outputs) s.resume();
  };

  async writeStdin(data: Uint8Array): Promise<void> {
    if (this.pty) {
      throw internal(
        "error writing to stdin: tty assigned to process — input should be written to the pty, not the stdin",
      );
    }
    if (!this.stdinOpen || this.input === null) {
      throw internal("error writing to stdin: stdin not enabled or closed");
    }
    await write(this.input, data).catch((err: unknown) => {
      throw internal(
        `error writing to stdin: error writing to stdin of process '${this.pid}': ${message(err)}`,
        err,
      );
    });
  }

  async writePty(data: Uint8Array): Promise<void> {
    if (!this.pty || this.input === null) {
      throw internal(
        "error writing to tty: tty not assigned to process — input should be written to the stdin, not the tty",
      );
    }
    await write(this.input, data).catch((err: unknown) => {
      throw internal(
        `error writing to tty: error writing to tty of process '${this.pid}': ${message(err)}`,
        err,
      );
    });
  }

  closeStdin(): void {
    if (this.pty) {
      throw new GuestError(
        "unknown",
        "error closing stdin: cannot close stdin for PTY process — send Ctrl+D (0x04) instead",
      );
    }
    if (!this.stdinOpen) return;
    this.stdinOpen = false;
    this.input?.end();
  }

  resize(cols: number, rows: number): void {
    if (!this.pty || this.control === null) throw internal("error resizing tty: tty not assigned to process");
    this.control.write(`${clampSize(cols)} ${clampSize(rows)}\n`);
  }

  /** SIGKILL/SIGTERM: also stops waiting for output pipes, so `end` is not held back. */
  kill(signal: "SIGKILL" | "SIGTERM"): void {
    if (this.ended) return;
    this.signalled = true;
    try {
      process.kill(this.pid, signal);
    } catch (err) {
      if ((err as { code?: string }).code !== "ESRCH") {
        throw internal(`error sending signal: ${message(err)}`, err);
      }
    }
  }

  /** Kills without reporting errors (agent shutdown). */
  forceKill(): void {
    try {
      this.kill("SIGKILL");
    } catch (err) {
      this.log.warn("could not kill process", { pid: this.pid, error: message(err) });
    }
  }

  private emitOutput(kind: "stdout" | "stderr" | "pty", chunk: Buffer, max: number): void {
    if (this.ended || this.subscribers.size === 0) return;
    for (let off = 0; off < chunk.length; off += max) {
      const ev: ProcessEventInit = {
        event: { case: "data", value: { output: { case: kind, value: chunk.subarray(off, off + max) } } },
      };
      for (const ch of this.subscribers) ch.push(ev);
    }
    if (!this.paused) {
      for (const ch of this.subscribers) {
        if (ch.size > HIGH_WATER_BYTES) {
          this.paused = true;
          for (const s of this.outputs) s.pause();
          break;
        }
      }
    }
  }

  private finish(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.timer);
    // Release our ends of the pipes even if a grandchild still holds the other ends.
    for (const s of [this.child.stdout, this.child.stderr, this.child.stdin, this.control]) s?.destroy();
    if (this.helperStderr !== "")
      this.log.warn("pty helper stderr", { pid: this.pid, stderr: this.helperStderr });
    const end = endEvent(code, signal);
    const ev: ProcessEventInit = { event: { case: "end", value: end } };
    for (const ch of this.subscribers) {
      ch.push(ev);
      ch.close();
    }
    this.subscribers.clear();
    this.onEnd(this, end);
  }
}

function write(stream: Writable, data: Uint8Array): Promise<void> {
  return new Promise((resolve, reject) => {
    if (stream.destroyed || stream.writableEnded) {
      reject(new Error("stream closed"));
      return;
    }
    stream.write(data, (err) => (err ? reject(err) : resolve()));
  });
}

function clampSize(n: number): number {
  return Math.max(0, Math.min(65535, Math.trunc(n)));
}

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
