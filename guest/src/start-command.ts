import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, renameSync, type WriteStream } from "node:fs";
import { mkdir, readFile, stat } from "node:fs/promises";
import type { Socket } from "node:net";
import { dirname } from "node:path";
import { createInterface } from "node:readline";
import { errnoOf } from "./errors.js";
import type { Logger } from "./log.js";
import { type AgentState, globalEnv } from "./state.js";
import type { User, UserDb } from "./users.js";

/** Where a template describes its start command (the vmm reads the same file from the rootfs). */
export const DEFAULT_START_FILE = "/etc/dnah/start.json";
/** The start command's stdout and stderr. */
export const DEFAULT_START_LOG = "/var/log/dnah/start-command.log";
/** The log is rotated once (to `.1`) when it grows past this. */
const LOG_MAX_BYTES = 8 * 1024 * 1024;
const START_FILE_MAX_BYTES = 64 * 1024;
/** A run that lasted this long resets the restart backoff. */
const HEALTHY_RUN_MS = 30_000;
const BACKOFF_MIN_MS = 250;
const BACKOFF_MAX_MS = 30_000;
const STOP_GRACE_MS = 2_000;
/**
 * The child's fd 3 is a socket to the agent: each line it writes is answered with one JSON
 * line holding the sandbox-wide env as `/init` has set it by now (later `/init` calls, e.g. a
 * warm-pool claim with env vars, change it after the command started).
 */
export const ENV_FD = 3;

export interface StartSpec {
  readonly command: string;
  readonly readyPort?: number;
  readonly user: string;
  readonly cwd: string;
}

/** Parses and checks a `start.json` (same rules as the vmm's reader); throws naming every problem. */
export function parseStartSpec(text: string): StartSpec {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`not JSON: ${(err as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw new Error("must be a JSON object");
  const o = json as Record<string, unknown>;
  const problems: string[] = [];
  const str = (key: string, fallback: string | undefined): string => {
    const v = o[key] ?? fallback;
    if (typeof v !== "string" || v.trim() === "") {
      problems.push(`${key} must be a non-empty string`);
      return "";
    }
    return v;
  };
  const command = str("command", undefined);
  const user = str("user", "user");
  const cwd = str("cwd", "/");
  if (cwd !== "" && !cwd.startsWith("/")) problems.push("cwd must be an absolute path");
  const port = o.readyPort;
  const portOk = typeof port === "number" && Number.isInteger(port) && port >= 1 && port <= 65535;
  if (port !== undefined && port !== null && !portOk)
    problems.push("readyPort must be an integer port (1-65535)");
  if (problems.length > 0) throw new Error(problems.join("; "));
  return portOk ? { command, readyPort: port, user, cwd } : { command, user, cwd };
}

/**
 * The start spec at `path`. A missing file is undefined unless `required` (an explicit
 * `--start-file`); a malformed one is always an error.
 */
export async function loadStartSpec(path: string, required: boolean): Promise<StartSpec | undefined> {
  let text: string;
  try {
    const st = await stat(path);
    if (st.size > START_FILE_MAX_BYTES) throw new Error(`${path}: larger than ${START_FILE_MAX_BYTES} bytes`);
    text = await readFile(path, "utf8");
  } catch (err) {
    if (!required && errnoOf(err) === "ENOENT") return undefined;
    throw err;
  }
  try {
    return parseStartSpec(text);
  } catch (err) {
    throw new Error(`${path}: ${(err as Error).message}`);
  }
}

/** Delay before restart number `failures` (1-based): doubling from 250 ms, capped at 30 s. */
export function restartDelayMs(failures: number): number {
  return Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.max(0, failures - 1));
}

export interface SupervisorOptions {
  spec: StartSpec;
  state: AgentState;
  users: UserDb;
  /** PATH for the command. */
  pathEnv: string;
  log: Logger;
  logFile?: string;
  /** util-linux setpriv, for users with supplementary groups (node's uid/gid drop them). */
  setprivPath?: string | undefined;
}

export interface Supervisor {
  /** Stops restarting, then SIGTERMs the command's process group (SIGKILL after a grace). */
  close(): Promise<void>;
}

/**
 * Runs the template's start command and keeps it running: when it exits it is started again
 * after a backoff that grows with consecutive quick failures. It runs as `spec.user` in
 * `spec.cwd` in its own process group, with the sandbox env, output appended to a log file.
 */
export function superviseStartCommand(opts: SupervisorOptions): Supervisor {
  const { spec, log } = opts;
  const logPath = opts.logFile ?? DEFAULT_START_LOG;
  let child: ChildProcess | undefined;
  let stopped = false;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  let output: BoundedLog | undefined;

  const schedule = (delayMs: number): void => {
    timer = setTimeout(() => {
      timer = undefined;
      run().catch((err: unknown) => {
        failures++;
        log.error("start command could not start", { command: spec.command, error: String(err) });
        if (!stopped) schedule(restartDelayMs(failures));
      });
    }, delayMs);
  };

  const run = async (): Promise<void> => {
    if (stopped) return;
    const user = await opts.users.lookup(spec.user);
    if (!user) throw new Error(`unknown user '${spec.user}'`);
    output ??= await BoundedLog.open(logPath, LOG_MAX_BYTES, log);
    const proc = launchAs(user, spec, opts);
    child = proc;
    const started = Date.now();
    proc.stdout?.on("data", (c: Buffer) => output?.write(c));
    proc.stderr?.on("data", (c: Buffer) => output?.write(c));
    serveEnv(proc.stdio[ENV_FD] as Socket | undefined, opts.state, log);
    log.info("start command running", { command: spec.command, pid: proc.pid, user: spec.user });
    await new Promise<void>((resolve) => {
      proc.once("error", (err) => {
        log.error("start command failed to spawn", { command: spec.command, error: err.message });
        resolve();
      });
      proc.once("close", (code, signal) => {
        if (!stopped)
          log.warn("start command exited", {
            command: spec.command,
            code,
            signal,
            ranMs: Date.now() - started,
          });
        resolve();
      });
    });
    child = undefined;
    if (stopped) return;
    failures = Date.now() - started >= HEALTHY_RUN_MS ? 1 : failures + 1;
    schedule(restartDelayMs(failures));
  };

  schedule(0);
  return {
    async close() {
      stopped = true;
      if (timer) clearTimeout(timer);
      const proc = child;
      if (proc?.pid !== undefined && proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once("close", r));
        killGroup(proc.pid, "SIGTERM");
        const grace = setTimeout(() => killGroup(proc.pid!, "SIGKILL"), STOP_GRACE_MS);
        await exited;
        clearTimeout(grace);
      }
      await output?.close();
    },
  };
}

function launchAs(user: User, spec: StartSpec, opts: SupervisorOptions): ChildProcess {
  const env: Record<string, string> = {
    PATH: opts.pathEnv,
    HOME: user.home,
    USER: user.name,
    LOGNAME: user.name,
    ...globalEnv(opts.state),
    DNAH_ENV_FD: String(ENV_FD),
  };
  let file = "/bin/sh";
  let args = ["-c", `exec ${spec.command}`];
  const asOther = opts.users.privileged && user.uid !== process.getuid?.();
  const viaSetpriv = asOther && user.groups.length > 0 && opts.setprivPath !== undefined;
  if (viaSetpriv) {
    args = [
      `--reuid=${user.uid}`,
      `--regid=${user.gid}`,
      `--groups=${user.groups.join(",")}`,
      "--",
      file,
      ...args,
    ];
    file = opts.setprivPath!;
  }
  return spawn(file, args, {
    cwd: spec.cwd,
    env,
    stdio: ["ignore", "pipe", "pipe", "pipe"],
    detached: true,
    ...(asOther && !viaSetpriv && { uid: user.uid, gid: user.gid }),
  });
}

/** Answers each line the child writes on its env socket with the current sandbox env. */
function serveEnv(sock: Socket | undefined, state: AgentState, log: Logger): void {
  if (!sock) return;
  sock.on("error", (err) => log.debug("start command env socket", { error: err.message }));
  createInterface({ input: sock, crlfDelay: Number.POSITIVE_INFINITY }).on("line", () => {
    if (sock.writable) sock.write(`${JSON.stringify(globalEnv(state))}\n`);
  });
}

function killGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal);
  } catch (err) {
    if (errnoOf(err) !== "ESRCH") throw err;
  }
}

/** An append-only log file that is rotated once (to `<path>.1`) when it passes `maxBytes`. */
class BoundedLog {
  private stream: WriteStream;

  private constructor(
    private readonly path: string,
    private readonly maxBytes: number,
    private size: number,
    private readonly log: Logger,
  ) {
    this.stream = this.openStream();
  }

  static async open(path: string, maxBytes: number, log: Logger): Promise<BoundedLog> {
    await mkdir(dirname(path), { recursive: true });
    const size = await stat(path).then(
      (s) => s.size,
      () => 0,
    );
    return new BoundedLog(path, maxBytes, size, log);
  }

  private openStream(): WriteStream {
    const stream = createWriteStream(this.path, { flags: "a", mode: 0o640 });
    stream.on("error", (err) =>
      this.log.warn("start command log write failed", { path: this.path, error: err.message }),
    );
    return stream;
  }

  write(chunk: Buffer): void {
    if (this.size > 0 && this.size + chunk.length > this.maxBytes) {
      // The old stream keeps its file (now `.1`) until it has flushed what it holds.
      try {
        renameSync(this.path, `${this.path}.1`);
      } catch (err) {
        this.log.warn("start command log rotation failed", { path: this.path, error: String(err) });
      }
      this.stream.end();
      this.stream = this.openStream();
      this.size = 0;
    }
    this.stream.write(chunk);
    this.size += chunk.length;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.stream.end(() => resolve()));
  }
}
