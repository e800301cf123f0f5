import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, existsSync } from "node:fs";
import { open } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * Helper processes of a VM (the VMM itself, virtiofsd, the vsock backend): spawned so they die
 * with the vmm, logging to a file per process, optionally inside a network namespace and a
 * cgroup from their first instruction.
 */
export interface SupervisedOptions {
  /** Short name for logs and errors ("qemu", "virtiofsd", "vsock"). */
  readonly name: string;
  readonly command: string;
  readonly args: readonly string[];
  /** stdout and stderr are appended here. */
  readonly logFile: string;
  /** PATH and whatever else the program needs; nothing is inherited. */
  readonly env: Readonly<Record<string, string>>;
  /** Run inside this network namespace (`ip netns exec`). */
  readonly netns?: string;
  /** Join these `cgroup.procs` files before exec, so every thread and child is accounted. */
  readonly cgroupProcs?: readonly string[];
}

export interface Supervised {
  readonly name: string;
  readonly proc: ChildProcess;
  /** Resolves with a reason once the process has exited (never rejects). */
  readonly exited: Promise<string>;
  alive(): boolean;
  /** SIGKILL and wait for the exit (a no-op when already gone). */
  kill(): Promise<void>;
}

/**
 * Spawns `command` under `setpriv --pdeathsig KILL`, so the kernel kills it when the vmm dies
 * (no orphans holding sockets or disks after a crash; `reclaimOrphans` removes their files).
 */
export function spawnSupervised(o: SupervisedOptions): Supervised {
  const inner = ["/usr/bin/setpriv", "--pdeathsig", "KILL", "--", o.command, ...o.args];
  const wrapped = o.netns ? ["ip", "netns", "exec", o.netns, ...inner] : inner;
  // `sh -c` joins the cgroup first, then execs: the pdeathsig is set by setpriv in the
  // process that becomes the program, whose parent is the vmm.
  const proc = spawn(
    "/bin/sh",
    ["-c", 'for f in $DNAH_CGROUP_PROCS; do echo $$ > "$f"; done; exec "$@"', `dnah-${o.name}`, ...wrapped],
    {
      env: { ...o.env, DNAH_CGROUP_PROCS: (o.cgroupProcs ?? []).join(" ") },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const log = createWriteStream(o.logFile, { flags: "a" });
  log.on("error", () => {
    // the VM folder was removed under us (destroy); nothing left to log to
  });
  proc.stdout?.pipe(log, { end: false });
  proc.stderr?.pipe(log, { end: false });
  const exited = new Promise<string>((resolve) => {
    proc.once("error", (err) => resolve(`could not start: ${err.message}`));
    proc.once("exit", (code, signal) => {
      resolve(signal ? `killed by ${signal}` : `exited with code ${code}`);
    });
  });
  void exited.then(() => setTimeout(() => log.end(), 50).unref());
  const alive = () => proc.exitCode === null && proc.signalCode === null && proc.pid !== undefined;
  return {
    name: o.name,
    proc,
    exited,
    alive,
    async kill() {
      if (alive()) proc.kill("SIGKILL");
      await exited;
    },
  };
}

/**
 * Polls until `path` exists (a daemon's socket), failing early when `proc` dies and at the
 * deadline; the error carries the end of the daemon's log.
 */
export async function waitForPath(
  path: string,
  proc: Supervised,
  logFile: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let wait = 2; ; wait = Math.min(wait * 2, 50)) {
    if (existsSync(path)) return;
    if (!proc.alive()) {
      const why = await Promise.race([proc.exited, sleep(200, "still exiting")]);
      throw new Error(`${proc.name} ${why} before creating ${path}: ${await tailFile(logFile)}`);
    }
    if (Date.now() > deadline)
      throw new Error(
        `${proc.name} did not create ${path} within ${timeoutMs} ms: ${await tailFile(logFile)}`,
      );
    await sleep(wait);
  }
}

/** The last `bytes` of a log file (serial console, daemon log) as text; "" when missing. */
export async function tailFile(path: string, bytes = 2048): Promise<string> {
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    fh = await open(path, "r");
    const { size } = await fh.stat();
    const len = Math.min(size, bytes);
    const buf = Buffer.alloc(len);
    await fh.read(buf, 0, len, size - len);
    // Firmware and the kernel print terminal escapes on the serial console; drop them.
    return buf
      .toString("utf8")
      .replace(/\x1b\[[0-9;?]*[a-zA-Z]|\x1b[c()][0-9A-B]?|\r/g, "")
      .trim();
  } catch {
    return "";
  } finally {
    await fh?.close();
  }
}

/**
 * True once `marker` appears in the first `maxBytes` of a log file (the serial console during
 * boot: the guest init announces stages there).
 */
export async function fileContains(path: string, marker: string, maxBytes = 1024 * 1024): Promise<boolean> {
  let fh: Awaited<ReturnType<typeof open>> | undefined;
  try {
    fh = await open(path, "r");
    const buf = Buffer.alloc(Math.min((await fh.stat()).size, maxBytes));
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead).includes(marker);
  } catch {
    return false;
  } finally {
    await fh?.close();
  }
}
