import { type ChildProcess, spawn } from "node:child_process";
import { createWriteStream, existsSync, statSync } from "node:fs";
import { open } from "node:fs/promises";
import { Transform } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * The most a VM's helper may write to one log file, in bytes. What a guest does can make them
 * write without end (its root writing to the serial console, a vsock backend warning for every
 * connection to an unknown CID): past this the rest is dropped, with a note, so no guest can
 * fill the host's disk through its logs. Boot and failure logs are a few KiB.
 */
export const LOG_CAP_BYTES = 256 * 1024;

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
  /** stdout and stderr are appended here, up to `LOG_CAP_BYTES` (counting what it held). */
  readonly logFile: string;
  /** stdout goes here instead, capped the same way (QEMU's serial console). */
  readonly stdoutFile?: string;
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
  const log = cappedLog(o.logFile);
  const out = o.stdoutFile === undefined ? log : cappedLog(o.stdoutFile);
  proc.stdout?.pipe(out, { end: false });
  proc.stderr?.pipe(log, { end: false });
  const exited = new Promise<string>((resolve) => {
    proc.once("error", (err) => resolve(`could not start: ${err.message}`));
    proc.once("exit", (code, signal) => {
      resolve(signal ? `killed by ${signal}` : `exited with code ${code}`);
    });
  });
  void exited.then(() =>
    setTimeout(() => {
      log.end();
      if (out !== log) out.end();
    }, 50).unref(),
  );
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
 * An appending writer to `path` that lets through at most `LOG_CAP_BYTES` in all (what the
 * file already holds counts: a restarted process does not get a new allowance), then one note,
 * then nothing. It keeps reading, so the process never blocks on a full pipe.
 */
function cappedLog(path: string): Transform {
  let size = 0;
  try {
    size = statSync(path).size;
  } catch {
    // a new file
  }
  const file = createWriteStream(path, { flags: "a" });
  file.on("error", () => {
    // the VM folder was removed under us (destroy); nothing left to log to
  });
  const cap = new Transform({
    transform(chunk: Buffer, _encoding, done) {
      const room = LOG_CAP_BYTES - size;
      if (room <= 0) return done();
      size += chunk.length;
      if (chunk.length < room) return done(null, chunk);
      done(
        null,
        Buffer.concat([
          chunk.subarray(0, room),
          Buffer.from(`\n[dnah: this log reached ${LOG_CAP_BYTES} bytes; what follows is dropped]\n`),
        ]),
      );
    },
  });
  cap.pipe(file);
  return cap;
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
