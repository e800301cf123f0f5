import type { ChildProcess } from "node:child_process";
import type { Readable } from "node:stream";
import type { ProcessConfig, ProcessSelector } from "@dnah/proto/process/process_pb";
import { invalidArgument, notFound, unimplemented } from "../errors.js";
import type { Logger } from "../log.js";
import type { Channel } from "../stream.js";
import type { ProcessEventInit } from "./events.js";
import type { EndEventInit } from "./exit-status.js";
import { ManagedProcess } from "./managed-process.js";
import { type LaunchConfig, type LaunchRequest, launch } from "./spawn.js";

/** envd keeps a finished process's end event this long for a late Connect. */
export const EXIT_RETENTION_MS = 30_000;
/** How long the PTY helper may take to report the command's pid. */
const PTY_PID_TIMEOUT_MS = 10_000;

export interface RetainedExit {
  pid: number;
  tag: string | undefined;
  end: EndEventInit;
}

export interface StartSpec {
  launch: LaunchRequest;
  /** Echoed by List. */
  config: ProcessConfig;
  tag: string | undefined;
  /** Process lifetime; 0 = unlimited. */
  timeoutMs: number;
  /** Subscribed before any output can be read, so the Start stream misses nothing. */
  subscriber: Channel<ProcessEventInit>;
}

export class ProcessManager {
  private readonly live = new Map<number, ManagedProcess>();
  private readonly exited = new Map<number, { exit: RetainedExit; timer: NodeJS.Timeout }>();

  constructor(
    private readonly cfg: LaunchConfig,
    private readonly log: Logger,
    private readonly retentionMs = EXIT_RETENTION_MS,
  ) {}

  async start(spec: StartSpec): Promise<ManagedProcess> {
    const { launch: req } = spec;
    if (req.cmd === "") throw invalidArgument("error starting process: no command given");
    let child: ChildProcess;
    try {
      child = launch(this.cfg, req);
    } catch (err) {
      throw invalidArgument(`error starting process '${commandLine(req)}': ${errMessage(err)}`, err);
    }
    try {
      await spawned(child);
    } catch (err) {
      throw invalidArgument(`error starting process '${commandLine(req)}': ${errMessage(err)}`, err);
    }
    let pid = child.pid as number;
    if (req.pty) {
      try {
        pid = await readPtyPid(child);
      } catch (err) {
        child.kill("SIGKILL");
        throw invalidArgument(
          `error starting pty with command '${commandLine(req)}' in dir '${req.cwd}': ${errMessage(err)}`,
          err,
        );
      }
    }
    const proc = new ManagedProcess({
      pid,
      child,
      config: spec.config,
      tag: spec.tag,
      pty: req.pty !== undefined,
      timeoutMs: spec.timeoutMs,
      log: this.log,
      onEnd: (p, end) => this.retire(p, end),
    });
    proc.subscribe(spec.subscriber);
    this.dropRetained(pid);
    this.live.set(pid, proc);
    this.log.debug("process started", { pid, cmd: req.cmd, pty: req.pty !== undefined });
    return proc;
  }

  /** The live process a selector names; `not_found` otherwise. */
  find(selector: ProcessSelector | undefined): ManagedProcess {
    const sel = selector?.selector;
    switch (sel?.case) {
      case "pid": {
        const proc = this.live.get(sel.value);
        if (!proc) throw notFound(`process with pid ${sel.value} not found`);
        return proc;
      }
      case "tag": {
        for (const proc of this.live.values()) if (proc.tag === sel.value) return proc;
        throw notFound(`process with tag ${sel.value} not found`);
      }
      default:
        throw unimplemented("invalid input type for process selector");
    }
  }

  /** A process that ended within the retention window, for a late Connect. */
  findRetained(selector: ProcessSelector | undefined): RetainedExit | undefined {
    const sel = selector?.selector;
    if (sel?.case === "pid") return this.exited.get(sel.value)?.exit;
    if (sel?.case === "tag") {
      for (const { exit } of this.exited.values()) if (exit.tag === sel.value) return exit;
    }
    return undefined;
  }

  list(): ManagedProcess[] {
    return [...this.live.values()];
  }

  /** Kills everything still running (agent shutdown). */
  killAll(): void {
    for (const proc of this.live.values()) proc.forceKill();
    for (const { timer } of this.exited.values()) clearTimeout(timer);
    this.exited.clear();
  }

  private retire(proc: ManagedProcess, end: EndEventInit): void {
    if (this.live.get(proc.pid) === proc) this.live.delete(proc.pid);
    this.dropRetained(proc.pid);
    const timer = setTimeout(() => this.exited.delete(proc.pid), this.retentionMs);
    timer.unref();
    this.exited.set(proc.pid, { exit: { pid: proc.pid, tag: proc.tag, end }, timer });
    this.log.debug("process ended", { pid: proc.pid, status: end.status });
  }

  private dropRetained(pid: number): void {
    const old = this.exited.get(pid);
    if (old) {
      clearTimeout(old.timer);
      this.exited.delete(pid);
    }
  }
}

function spawned(child: ChildProcess): Promise<void> {
  return new Promise((resolve, reject) => {
    const onSpawn = (): void => {
      child.off("error", onError);
      resolve();
    };
    const onError = (err: Error): void => {
      child.off("spawn", onSpawn);
      reject(err);
    };
    child.once("spawn", onSpawn);
    child.once("error", onError);
  });
}

/** Reads the "<pid>\n" line the PTY helper writes on fd 3; keeps fd 3 flowing afterwards. */
function readPtyPid(child: ChildProcess): Promise<number> {
  const ctl = child.stdio[3] as Readable | null | undefined;
  if (!ctl) return Promise.reject(new Error("pty helper has no control channel"));
  return new Promise((resolve, reject) => {
    let buf = "";
    let stderr = "";
    const onStderr = (c: Buffer): void => {
      if (stderr.length < 2048) stderr += c.toString("utf8");
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      ctl.off("data", onData);
      child.off("exit", onExit);
      child.stderr?.off("data", onStderr);
    };
    const onData = (c: Buffer): void => {
      buf += c.toString("latin1");
      const nl = buf.indexOf("\n");
      if (nl < 0) {
        if (buf.length > 32) fail(new Error("pty helper sent a malformed pid"));
        return;
      }
      const pid = Number(buf.slice(0, nl));
      cleanup();
      ctl.on("data", () => {});
      if (!Number.isInteger(pid) || pid <= 0) reject(new Error("pty helper sent a malformed pid"));
      else resolve(pid);
    };
    const onExit = (code: number | null, signal: string | null): void =>
      fail(new Error(`pty helper exited (${signal ?? code}) before starting the command: ${stderr.trim()}`));
    const fail = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const timer = setTimeout(() => fail(new Error("pty helper did not report a pid")), PTY_PID_TIMEOUT_MS);
    ctl.on("data", onData);
    child.once("exit", onExit);
    child.stderr?.on("data", onStderr);
  });
}

function commandLine(req: LaunchRequest): string {
  return [req.cmd, ...req.args].join(" ");
}

function errMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
