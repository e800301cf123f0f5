import { randomBytes, randomUUID } from "node:crypto";
import { AgentProcess } from "../../../sandbox/agent-process.js";
import { SANDBOX_HOME } from "../../../sandbox/paths.js";
import type { ToolboxContext } from "./context.js";
import { MarkerScanner } from "./parse.js";
import { quote } from "./shell.js";

/** Each command keeps at most this much output; the rest is dropped (and logged once). */
const COMMAND_LOG_LIMIT_BYTES = 16 * 1024 * 1024;
/** Finished commands beyond this many, or beyond this much output in all, are forgotten, oldest first. */
const MAX_COMMANDS = 500;
const SESSION_LOG_BUDGET_BYTES = 64 * 1024 * 1024;
/** After a command's stdout end marker, its stderr marker gets this long to arrive. */
const STDERR_GRACE_MS = 2_000;
/** The session's shell must answer its first (internal) command within this. */
const READY_TIMEOUT_MS = 30_000;

export const STDOUT_MARK = Buffer.from([1, 1, 1]);
export const STDERR_MARK = Buffer.from([2, 2, 2]);

type Fd = 1 | 2;
type Listener = (fd: Fd, data: Buffer) => void;

/** One command run in a session: its output (stdout and stderr apart, in order) and exit code. */
export class SessionCommand {
  exitCode: number | undefined;
  private readonly log: { fd: Fd; data: Buffer }[] = [];
  private bytes = 0;
  private truncated = false;
  private readonly listeners = new Set<{ data: Listener; end: () => void }>();
  private finished = false;
  readonly done: Promise<void>;
  private resolveDone!: () => void;

  constructor(
    readonly id: string,
    readonly command: string,
    readonly runAsync: boolean,
  ) {
    this.done = new Promise((r) => {
      this.resolveDone = r;
    });
  }

  get running(): boolean {
    return !this.finished;
  }

  /** Bytes of output kept. */
  get size(): number {
    return this.bytes;
  }

  append(fd: Fd, data: Buffer, onTruncate: () => void): void {
    if (data.length === 0) return;
    const room = COMMAND_LOG_LIMIT_BYTES - this.bytes;
    if (data.length > room) {
      if (!this.truncated) onTruncate();
      this.truncated = true;
      data = data.subarray(0, Math.max(0, room));
      if (data.length === 0) return;
    }
    const copy = Buffer.from(data);
    this.log.push({ fd, data: copy });
    this.bytes += copy.length;
    for (const l of this.listeners) l.data(fd, copy);
  }

  finish(exitCode: number): void {
    if (this.finished) return;
    this.finished = true;
    this.exitCode = exitCode;
    for (const l of this.listeners) l.end();
    this.listeners.clear();
    this.resolveDone();
  }

  text(fd?: Fd): string {
    return Buffer.concat(this.log.filter((c) => fd === undefined || c.fd === fd).map((c) => c.data)).toString(
      "utf8",
    );
  }

  /** Replays the output so far, then follows it; `end` is called once the command is over. */
  follow(data: Listener, end: () => void): () => void {
    for (const c of this.log) data(c.fd, c.data);
    if (this.finished) {
      end();
      return () => {};
    }
    const l = { data, end };
    this.listeners.add(l);
    return () => this.listeners.delete(l);
  }

  view(): { id: string; command: string; exitCode?: number } {
    return {
      id: this.id,
      command: this.command,
      ...(this.exitCode !== undefined ? { exitCode: this.exitCode } : {}),
    };
  }
}

/**
 * A Daytona session: one long-lived bash in the sandbox, reading commands from its stdin. Each
 * command is `eval`ed in that shell, so `cd`, `export` and variables carry over; commands run
 * one at a time, in order. After each one the shell prints a per-command random marker (with
 * the exit status) on stdout and another on stderr; the output up to the markers is the
 * command's. An async command keeps the shell's stdin, so `/input` reaches it; a sync one reads
 * /dev/null. A command that runs `exit` ends the session (as in Daytona).
 */
export class ShellSession {
  readonly commands = new Map<string, SessionCommand>();
  private readonly queue: SessionCommand[] = [];
  private current:
    | {
        cmd: SessionCommand;
        out: MarkerScanner;
        err: MarkerScanner;
        rc?: number;
        errDone: boolean;
        timer?: NodeJS.Timeout;
      }
    | undefined;
  private proc: AgentProcess | undefined;
  private shellExit: number | undefined;
  readonly createdAt = new Date();

  private constructor(
    private readonly ctx: ToolboxContext,
    readonly sandboxId: string,
    readonly id: string,
  ) {}

  static async create(
    ctx: ToolboxContext,
    sandboxId: string,
    id: string,
    onLost: () => void,
  ): Promise<ShellSession> {
    const s = new ShellSession(ctx, sandboxId, id);
    s.proc = await AgentProcess.start(
      ctx,
      sandboxId,
      { cmd: "/bin/bash", args: ["-l"], envs: {}, cwd: SANDBOX_HOME, stdin: true },
      {
        onData: (kind, data) => s.onData(kind, data),
        onExit: (code, _reason, lost) => {
          s.onShellExit(code);
          if (lost) onLost();
        },
      },
    );
    // A first, internal command: the login profile's output is behind it, and the shell answers.
    const ready = new SessionCommand("ready", "true", false);
    s.queue.push(ready);
    s.pump();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<"timeout">((r) => {
      timer = setTimeout(() => r("timeout"), READY_TIMEOUT_MS);
    });
    const res = await Promise.race([ready.done, timeout]);
    clearTimeout(timer);
    if (res === "timeout" || s.ended) {
      await s.close();
      throw new Error(`session shell did not become ready (${res === "timeout" ? "timeout" : "it exited"})`);
    }
    return s;
  }

  get ended(): boolean {
    return this.shellExit !== undefined;
  }

  /** Queues a command; it runs once those before it are done. */
  exec(command: string, runAsync: boolean): SessionCommand {
    const cmd = new SessionCommand(randomUUID(), command, runAsync);
    this.commands.set(cmd.id, cmd);
    this.forgetOld();
    this.queue.push(cmd);
    this.pump();
    return cmd;
  }

  /** Writes to the shell's stdin, which the running async command reads. */
  async input(data: string): Promise<void> {
    await this.proc?.write(Buffer.from(data), false);
  }

  /** Kills the shell (and whatever it runs in its foreground). */
  async close(): Promise<void> {
    const proc = this.proc;
    if (proc === undefined) return;
    try {
      await proc.kill();
    } finally {
      proc.detach();
      this.onShellExit(-1);
    }
  }

  list(): { sessionId: string; commands: { id: string; command: string; exitCode?: number }[] } {
    return { sessionId: this.id, commands: [...this.commands.values()].map((c) => c.view()) };
  }

  private pump(): void {
    if (this.current !== undefined || this.ended) return;
    const cmd = this.queue.shift();
    if (cmd === undefined) return;
    const nonce = randomBytes(12).toString("hex");
    const outMark = `DNAH-END-${nonce}-O`;
    const errMark = `DNAH-END-${nonce}-E`;
    this.current = {
      cmd,
      out: new MarkerScanner(outMark, 3),
      err: new MarkerScanner(errMark),
      errDone: false,
    };
    const redirect = cmd.runAsync ? "" : " </dev/null";
    const line =
      `{ eval ${quote(cmd.command)}\n}${redirect}; __dnah_rc=$?; ` +
      `printf '%s%03d' ${quote(outMark)} "$__dnah_rc"; printf '%s' ${quote(errMark)} >&2\n`;
    this.proc?.write(Buffer.from(line), false).catch((err: unknown) => {
      this.ctx.logger.warn(
        { err, "sandbox.id": this.sandboxId, session: this.id },
        "cannot write to a session shell",
      );
      this.complete(-1);
    });
  }

  private onData(kind: "stdout" | "stderr" | "pty", data: Buffer): void {
    const cur = this.current;
    if (cur === undefined || kind === "pty") return; // the login profile's chatter, or stray output
    const truncated = () =>
      this.ctx.logger.info(
        { "sandbox.id": this.sandboxId, session: this.id },
        "session command output truncated",
      );
    if (kind === "stdout") {
      if (cur.rc !== undefined) return;
      const r = cur.out.feed(data);
      cur.cmd.append(1, r.output, truncated);
      if (r.found !== undefined) {
        cur.rc = Number.parseInt(r.found.extra, 10);
        if (cur.errDone) this.complete(cur.rc);
        else cur.timer = setTimeout(() => this.complete(cur.rc ?? -1), STDERR_GRACE_MS);
      }
    } else {
      if (cur.errDone) return;
      const r = cur.err.feed(data);
      cur.cmd.append(2, r.output, truncated);
      if (r.found !== undefined) {
        cur.errDone = true;
        if (cur.rc !== undefined) this.complete(cur.rc);
      }
    }
  }

  private complete(exitCode: number): void {
    const cur = this.current;
    if (cur === undefined) return;
    clearTimeout(cur.timer);
    this.current = undefined;
    cur.cmd.finish(exitCode);
    this.pump();
  }

  private onShellExit(code: number): void {
    if (this.shellExit !== undefined) return;
    this.shellExit = code;
    this.complete(code);
    for (const q of this.queue.splice(0)) q.finish(-1);
  }

  private forgetOld(): void {
    let total = 0;
    for (const c of this.commands.values()) total += c.size;
    for (const [id, c] of this.commands) {
      if (this.commands.size <= MAX_COMMANDS && total <= SESSION_LOG_BUDGET_BYTES) break;
      if (c.running) continue;
      this.commands.delete(id);
      total -= c.size;
    }
  }
}
