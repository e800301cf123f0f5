/**
 * `npm run bench -- --qemu`: the qemu runtime's microVM lifecycle on this machine (TCG where
 * /dev/kvm is absent), each beside a floor measured in the same run:
 *
 *   boot → init's first line, boot → agent /health   vs  a bare `qemu -kernel` boot of the same
 *                                                        kernel + initramfs to that first line
 *   pause / resume (runtime.pause / resume)          vs  bare QMP `stop` / `cont` on that bare VM
 *   first exec after resume                          vs  an exec round trip on the running VM
 *
 * Floor and runtime boots alternate, so load from elsewhere on the host lands on both alike.
 * Every VM, network namespace, cgroup and process it starts is removed, also on failure or
 * SIGINT/SIGTERM.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "@dnah/platform";
import { DEFAULT_CACHE_DIR, DEFAULT_DEBIAN_MIRROR, findTemplate } from "@dnah/vmm";
import { QemuRuntime } from "../../services/vmm/src/runtime/qemu/qemu.js";
import { Qmp } from "../../services/vmm/src/runtime/qemu/qmp.js";
import { findVmImage } from "../../services/vmm/src/runtime/vm/image.js";
import { fileContains } from "../../services/vmm/src/runtime/vm/process.js";
import { agentRequest, waitForAgent } from "../../services/vmm/src/vsock/agent-http.js";
import { cleanUpOnInterrupt } from "./interrupt.js";
import { type Summary, summarize } from "./stats.js";

export interface QemuBenchOptions {
  /** Boots of each kind (bare floor and runtime). */
  readonly boots: number;
  /** Pause/resume cycles per runtime boot (and QMP stop/cont pairs per bare boot). */
  readonly cycles: number;
  readonly cpuCount: number;
  readonly memoryMib: number;
  readonly cacheDir: string;
  readonly mirror: string;
  readonly qemuBinary: string;
  /** Per boot, bare or runtime (TCG on a loaded host needs tens of seconds). */
  readonly bootTimeoutMs: number;
  /** DNAH_QEMU_ACCEL (default tcg: this machine's nested KVM does not boot a guest in time). */
  readonly accel: "auto" | "kvm" | "tcg";
}

/** The line `guest/image/init.c` prints first, right after it mounted /dev, /proc and /sys. */
const INIT_FIRST_LINE = "dnah-init: started";
/** The qemu runtime's TCG translation cache (`runtime/qemu/qemu.ts`), so both boots match. */
const TCG_CACHE_MIB = 64;
const HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const OUTPUT_MAX_BYTES = 64 * 1024;

/** DNAH_QEMU_ACCEL for a benchmark: tcg unless set (see `QemuBenchOptions.accel`). */
export function accelFromEnv(env: NodeJS.ProcessEnv): "auto" | "kvm" | "tcg" {
  const a = env.DNAH_QEMU_ACCEL || "tcg";
  if (a !== "auto" && a !== "kvm" && a !== "tcg")
    throw new Error(`DNAH_QEMU_ACCEL must be auto, kvm or tcg, got '${a}'`);
  return a;
}

/** Options from the environment (`BENCH_QEMU_*`), with the defaults the README documents. */
export function qemuBenchOptionsFromEnv(env: NodeJS.ProcessEnv): QemuBenchOptions {
  const int = (name: string, def: number, min: number, max: number) => {
    const raw = env[name];
    if (raw === undefined || raw === "") return def;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new Error(`${name} must be an integer in ${min}..${max}, got '${raw}'`);
    return n;
  };
  return {
    boots: int("BENCH_QEMU_N", 5, 1, 1000),
    cycles: int("BENCH_QEMU_CYCLES", 4, 1, 1000),
    cpuCount: int("BENCH_QEMU_CPUS", 1, 1, 64),
    memoryMib: int("BENCH_QEMU_MEMORY_MIB", 512, 128, 64 * 1024),
    cacheDir: env.DNAH_CACHE_DIR || DEFAULT_CACHE_DIR,
    mirror: env.DNAH_DEBIAN_MIRROR || DEFAULT_DEBIAN_MIRROR,
    qemuBinary: env.DNAH_QEMU_BINARY || "/usr/bin/qemu-system-x86_64",
    bootTimeoutMs: int("BENCH_QEMU_BOOT_TIMEOUT_MS", 180_000, 1_000, 3_600_000),
    accel: accelFromEnv(env),
  };
}

interface BareBoot {
  bootMs: number;
  stopMs: number[];
  contMs: number[];
}

/**
 * One bare `qemu -kernel` boot: q35 + TCG, the same CPUs, memory, kernel and initramfs as the
 * runtime's VMs, no devices, console on stdout; timed from spawn to the init's first line,
 * then `cycles` QMP stop/cont pairs, then SIGKILL. Without a root disk the init would power
 * off about ten seconds later; the pairs take milliseconds.
 */
async function bareBoot(
  o: QemuBenchOptions,
  kernel: string,
  initramfs: string,
  dir: string,
  n: number,
): Promise<BareBoot> {
  const qmpPath = join(dir, `bare-${n}.qmp`);
  const args = [
    ...["-nodefaults", "-no-user-config", "-nographic", "-no-reboot"],
    ...["-machine", "q35", "-accel", `tcg,tb-size=${TCG_CACHE_MIB}`],
    ...["-cpu", "max", "-smp", String(o.cpuCount), "-m", `${o.memoryMib}M`],
    ...["-kernel", kernel, "-initrd", initramfs, "-append", "console=ttyS0 panic=-1 quiet"],
    ...["-serial", "stdio", "-qmp", `unix:${qmpPath},server=on,wait=off`],
  ];
  const t0 = performance.now();
  // setpriv: the kernel kills QEMU if this process dies before it does.
  const p = spawn("/usr/bin/setpriv", ["--pdeathsig", "KILL", "--", o.qemuBinary, ...args], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { PATH: HOST_PATH },
  });
  bareProcs.add(p);
  const exited = new Promise<void>((r) => p.once("close", () => r()));
  let output = "";
  try {
    const bootMs = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`bare boot: no '${INIT_FIRST_LINE}' within ${o.bootTimeoutMs} ms`)),
        o.bootTimeoutMs,
      );
      const onData = (c: Buffer) => {
        if (output.length < OUTPUT_MAX_BYTES) output += c.toString("latin1");
        if (output.includes(INIT_FIRST_LINE)) {
          clearTimeout(timer);
          resolve(performance.now() - t0);
        }
      };
      p.stdout.on("data", onData);
      p.stderr.on("data", onData);
      p.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
      p.once("exit", (code, sig) => {
        clearTimeout(timer);
        reject(new Error(`bare qemu exited (${sig ?? code}) before the init started: ${output.slice(-400)}`));
      });
    });
    const qmp = await Qmp.connect(qmpPath);
    const stopMs: number[] = [];
    const contMs: number[] = [];
    try {
      // The same two commands the runtime sends for each (`stop`/`cont`, then `query-status`).
      for (let i = 0; i < o.cycles; i++) {
        let t = performance.now();
        await qmp.execute("stop");
        await expectStatus(qmp, "paused");
        stopMs.push(performance.now() - t);
        t = performance.now();
        await qmp.execute("cont");
        await expectStatus(qmp, "running");
        contMs.push(performance.now() - t);
      }
    } finally {
      qmp.close();
    }
    return { bootMs, stopMs, contMs };
  } finally {
    p.kill("SIGKILL");
    await exited;
    bareProcs.delete(p);
    rmSync(qmpPath, { force: true });
  }
}

async function expectStatus(qmp: Qmp, want: string): Promise<void> {
  const st = (await qmp.execute("query-status")) as { status?: string };
  if (st.status !== want) throw new Error(`bare qemu reports '${st.status}', expected '${want}'`);
}

/** `true` through the agent's process.Process/Start over the vsock; throws unless it exits 0. */
async function execTrue(vsockPath: string): Promise<void> {
  const msg = Buffer.from(JSON.stringify({ process: { cmd: "/bin/true", args: [] }, stdin: false }));
  const envelope = Buffer.alloc(5 + msg.length);
  envelope.writeUInt32BE(msg.length, 1);
  msg.copy(envelope, 5);
  const r = await agentRequest(
    vsockPath,
    "POST",
    "/process.Process/Start",
    envelope,
    30_000,
    "application/connect+json",
  );
  if (r.status !== 200) throw new Error(`Start answered ${r.status}: ${r.body.slice(0, 200)}`);
  const body = Buffer.from(r.body, "utf8");
  for (let off = 0; off + 5 <= body.length; ) {
    const flags = body[off] ?? 0;
    const len = body.readUInt32BE(off + 1);
    const frame = JSON.parse(body.subarray(off + 5, off + 5 + len).toString("utf8")) as {
      event?: { end?: { exitCode?: number; status?: string } };
      error?: { message?: string };
    };
    off += 5 + len;
    if (flags & 2 && frame.error) throw new Error(`Start failed: ${frame.error.message}`);
    const end = frame.event?.end;
    if (end) {
      if ((end.exitCode ?? 0) !== 0) throw new Error(`true exited ${end.exitCode} (${end.status})`);
      return;
    }
  }
  throw new Error("Start stream ended without an end event");
}

/** Polls the serial log until `marker` shows; resolves with the time it was seen (or undefined). */
async function watchSerial(path: string, marker: string, stop: { done: boolean }) {
  while (!stop.done) {
    if (await fileContains(path, marker)) return performance.now();
    await new Promise((r) => setTimeout(r, 10));
  }
  return undefined;
}

const bareProcs = new Set<ChildProcess>();

export interface QemuBenchRow {
  s: Summary;
  /** Absent for a breakdown row with no floor of its own. */
  floor?: Summary;
}

/**
 * Runs the benchmark and prints its table on stdout (progress on stderr). A pause/resume
 * cycle that fails (the agent unreachable after resume) is reported, its VM replaced by the
 * next boot, and the exit code set to 1; its samples are left out.
 */
export async function runQemuBench(
  o: QemuBenchOptions,
): Promise<{ rows: QemuBenchRow[]; failures: string[] }> {
  const log = (msg: string) => process.stderr.write(`bench qemu: ${msg}\n`);
  const missing = QemuRuntime.missing({ cacheDir: o.cacheDir, qemuBinary: o.qemuBinary });
  if (missing.length > 0) throw new Error(`qemu runtime unavailable: missing ${missing.join(", ")}`);
  const template = findTemplate(o.cacheDir, "base", o.mirror);
  if (!template) throw new Error("base template not built: run 'npm run template' first");
  const image = await findVmImage(o.cacheDir, "base", template.rootfsDir);
  const accel = o.accel === "auto" ? (existsSync("/dev/kvm") ? "kvm (else tcg)" : "tcg") : o.accel;
  log(
    `image ${image.key} (kernel ${image.kernelRelease}), ${o.cpuCount} vCPU, ${o.memoryMib} MiB, ` +
      `accel ${accel}, ${o.boots} boots × ${o.cycles} pause/resume cycles`,
  );

  const suffix = randomBytes(4).toString("hex");
  const stateDir = mkdtempSync(join(tmpdir(), "dnah-bench-qemu-"));
  const cgroupParent = `dnah-bench-qemu-${suffix}`;
  const runtime = new QemuRuntime({
    stateDir,
    cacheDir: o.cacheDir,
    cgroupParent,
    pidsMax: 4096,
    hostPath: HOST_PATH,
    // Warnings (a VM process that died, and why) show on stderr.
    logger: createLogger("bench-qemu", { level: "warn" }),
    qemuBinary: o.qemuBinary,
    // No NAT rules on the host: the guest needs no egress to boot or answer.
    egress: false,
    accel: o.accel,
    startTimeoutMs: o.bootTimeoutMs,
  });
  let current: string | undefined;
  const cleanup = async () => {
    for (const p of bareProcs) p.kill("SIGKILL");
    if (current) await runtime.destroy(current).catch((e: Error) => log(`destroy ${current}: ${e.message}`));
    await runtime.dispose();
    rmSync(stateDir, { recursive: true, force: true });
  };
  const release = cleanUpOnInterrupt(log, "removing VMs", cleanup);

  const bare: number[] = [];
  const bareStop: number[] = [];
  const bareCont: number[] = [];
  const started: number[] = [];
  const initSeen: number[] = [];
  const ready: number[] = [];
  const pause: number[] = [];
  const resume: number[] = [];
  const firstExec: number[] = [];
  const warmExec: number[] = [];
  const failures: string[] = [];
  try {
    for (let i = 0; i < o.boots; i++) {
      const b = await bareBoot(o, image.kernel, image.initramfs, stateDir, i);
      bare.push(b.bootMs);
      bareStop.push(...b.stopMs);
      bareCont.push(...b.contMs);

      const id = `bq${suffix}${i}`;
      const stop = { done: false };
      const t0 = performance.now();
      // Polled beside the boot (a missing file reads as "not yet").
      const seen = watchSerial(runtime.paths(id).serialLog, INIT_FIRST_LINE, stop);
      current = id;
      let ms: number;
      let vsockPath: string;
      try {
        const vm = await runtime.start({
          sandboxId: id,
          template,
          cpuCount: o.cpuCount,
          memoryMib: o.memoryMib,
          background: false,
        });
        started.push(performance.now() - t0);
        await waitForAgent(vm.vsockPath, o.bootTimeoutMs, () => runtime.isRunning(id));
        ms = performance.now() - t0;
        vsockPath = vm.vsockPath;
      } finally {
        stop.done = true;
      }
      const initAt = await seen;
      ready.push(ms);
      if (initAt !== undefined) initSeen.push(initAt - t0);
      await execTrue(vsockPath);
      for (let c = 0; c < o.cycles; c++) {
        // A cycle's samples count only if the whole cycle worked (a failed dial after resume
        // would otherwise put its timeout into the resume and exec figures).
        const cycle: number[] = [];
        const timed = async (fn: () => Promise<void>) => {
          const t = performance.now();
          await fn();
          cycle.push(performance.now() - t);
        };
        try {
          await timed(() => execTrue(vsockPath));
          await timed(() => runtime.pause(id));
          await timed(() => runtime.resume(id));
          await timed(() => execTrue(vsockPath));
        } catch (err) {
          // The VM is unusable now: say whether it comes back by itself, then boot the next.
          await new Promise((r) => setTimeout(r, 2_000));
          const later = await agentRequest(vsockPath, "GET", "/health", undefined, 5_000).then(
            (r) => `answers /health ${r.status} 2 s later`,
            (e: Error) => `still unreachable 2 s later (${e.message})`,
          );
          failures.push(`boot ${i + 1} cycle ${c + 1}: ${(err as Error).message}; ${later}`);
          log(`pause/resume cycle failed: ${failures.at(-1)}`);
          break;
        }
        const [w = 0, p = 0, r = 0, f = 0] = cycle;
        warmExec.push(w);
        pause.push(p);
        resume.push(r);
        firstExec.push(f);
      }
      await runtime.destroy(id);
      current = undefined;
      log(
        `boot ${i + 1}/${o.boots}: bare ${bare.at(-1)?.toFixed(0)} ms, runtime agent-ready ${ms.toFixed(0)} ms`,
      );
    }
  } finally {
    release();
    await cleanup();
  }

  const floorBoot = summarize("bare qemu -kernel → init's first line", bare);
  const rows: QemuBenchRow[] = [
    { s: summarize("runtime.start (disk, netns, helpers, QEMU up)", started) },
    { s: summarize("qemu runtime boot → init's first line", initSeen), floor: floorBoot },
    { s: summarize("qemu runtime boot → agent /health", ready), floor: floorBoot },
    { s: summarize("pause (runtime.pause: QMP stop)", pause), floor: summarize("bare QMP stop", bareStop) },
    {
      s: summarize("resume (runtime.resume: cont + clock)", resume),
      floor: summarize("bare QMP cont", bareCont),
    },
    {
      s: summarize("first exec after resume (vsock → agent)", firstExec),
      floor: summarize("exec round trip, running VM", warmExec),
    },
  ];
  printTable(rows, `qemu ${o.cpuCount} vCPU ${o.memoryMib} MiB, accel ${accel}, image ${image.key}`);
  const cycles = pause.length + failures.length;
  process.stdout.write(`pause/resume cycles: ${pause.length} of ${cycles} completed\n`);
  for (const f of failures) process.stdout.write(`  FAILED ${f}\n`);
  // A failed cycle is a fault of the runtime, not noise: the run says so in its exit code.
  if (failures.length > 0) process.exitCode = 1;
  return { rows, failures };
}

/** `npm run bench -- --qemu`: options from `env`, the run, errors as one line and exit code 1. */
export async function qemuBenchMain(env: NodeJS.ProcessEnv): Promise<void> {
  try {
    await runQemuBench(qemuBenchOptionsFromEnv(env));
  } catch (err) {
    process.stderr.write(`bench qemu: ${(err as Error).message}\n`);
    process.exitCode = 1;
  }
}

function printTable(rows: QemuBenchRow[], title: string): void {
  const fmt = (n: number) => (n < 10 ? n.toFixed(2) : n.toFixed(1)).padStart(8);
  const out = process.stdout;
  out.write(`\n${title}\n`);
  out.write(
    `${"measurement".padEnd(46)} ${"n".padStart(4)} ${"P50 ms".padStart(8)} ${"P95 ms".padStart(8)}   ${"floor".padEnd(38)} ${"P50 ms".padStart(8)} ${"P95 ms".padStart(8)}   ratio\n`,
  );
  for (const { s, floor } of rows) {
    const head = `${s.name.padEnd(46)} ${String(s.n).padStart(4)} ${fmt(s.p50)} ${fmt(s.p95)}`;
    out.write(
      floor
        ? `${head}   ${floor.name.padEnd(38)} ${fmt(floor.p50)} ${fmt(floor.p95)}  ${(s.p50 / floor.p50).toFixed(1).padStart(5)}x\n`
        : `${head}   (host-side part of the boot below)\n`,
    );
  }
  out.write("\n");
}
