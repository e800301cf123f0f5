import { existsSync } from "node:fs";
import { mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { RuntimeTimeoutError } from "../../domain/errors.js";

/**
 * One sandbox's cgroup: memory, cpu, pids, accounting and freezing, on cgroup v2 (unified) or
 * v1 (separate hierarchies per controller, as on hosts booted in hybrid mode).
 */
export interface CgroupLimits {
  memoryMib: number;
  cpuCount: number;
  pidsMax: number;
  /** "low" while a warm-pool sandbox boots, so it yields the CPU to user-facing work. */
  cpuWeight: CpuWeight;
}

export type CpuWeight = "low" | "normal";

export interface Cgroup {
  /** Files a process writes its pid to, to join every controller's group. */
  readonly procsFiles: readonly string[];
  /** Sends SIGKILL to every process in the group and waits until it is empty. */
  killAll(): Promise<void>;
  remove(): Promise<void>;
  pids(): Promise<number[]>;
  setCpuWeight(weight: CpuWeight): Promise<void>;
  /**
   * Freezes every process in the group; resolves once the kernel reports it frozen. Throws
   * RuntimeTimeoutError (after thawing again) when that takes longer than `timeoutMs`.
   */
  freeze(timeoutMs: number): Promise<void>;
  /** Thaws the group; resolves once the kernel reports it thawed. */
  thaw(timeoutMs: number): Promise<void>;
  /** What the group has used: CPU time since it was made, memory now. */
  usage(): Promise<CgroupUsage>;
}

export interface CgroupUsage {
  cpuUsec: number;
  memUsedBytes: number;
  /** undefined when the group has no memory limit. */
  memLimitBytes: number | undefined;
  /** Page cache counted in memUsedBytes. */
  memCacheBytes: number;
}

const ROOT = "/sys/fs/cgroup";
const V1_CONTROLLERS = ["memory", "cpu", "cpuacct", "pids", "freezer"] as const;
/** Limits at or above this are the kernel's "unlimited" (v1 reports a page-rounded 2^63-1). */
const UNLIMITED_BYTES = 2 ** 60;

export function cgroupVersion(): 1 | 2 {
  return existsSync(join(ROOT, "cgroup.controllers")) ? 2 : 1;
}

export async function createCgroup(parent: string, name: string, limits: CgroupLimits): Promise<Cgroup> {
  return cgroupVersion() === 2 ? createV2(parent, name, limits) : createV1(parent, name, limits);
}

/** Path(s) of an existing sandbox cgroup, for cleaning up after a crash. */
export function openCgroup(parent: string, name: string): Cgroup {
  return cgroupVersion() === 2 ? v2Handle(join(ROOT, parent, name)) : v1Handle(parent, name);
}

/** Names of the sandbox cgroups under `parent` (all controllers). */
export async function listCgroups(parent: string): Promise<string[]> {
  const { readdir } = await import("node:fs/promises");
  const dirs =
    cgroupVersion() === 2 ? [join(ROOT, parent)] : V1_CONTROLLERS.map((c) => join(ROOT, c, parent));
  const names = new Set<string>();
  for (const d of dirs) {
    try {
      for (const e of await readdir(d, { withFileTypes: true })) if (e.isDirectory()) names.add(e.name);
    } catch {
      // the parent does not exist yet: nothing to list
    }
  }
  return [...names];
}

/** Removes the (empty) parent of the sandbox cgroups; one still in use is left alone. */
export async function removeCgroupParent(parent: string): Promise<void> {
  const dirs =
    cgroupVersion() === 2 ? [join(ROOT, parent)] : V1_CONTROLLERS.map((c) => join(ROOT, c, parent));
  for (const d of dirs) {
    await rmdir(d).catch(() => {
      // missing, or sandboxes still inside
    });
  }
}

async function createV2(parent: string, name: string, limits: CgroupLimits): Promise<Cgroup> {
  const parentDir = join(ROOT, parent);
  if (!existsSync(parentDir)) {
    await mkdir(parentDir, { recursive: true });
    // Delegate the controllers the sandboxes need to the parent's children.
    const available = (await readFile(join(ROOT, "cgroup.controllers"), "utf8")).split(/\s+/);
    const wanted = ["memory", "cpu", "pids"].filter((c) => available.includes(c));
    await writeFile(join(ROOT, "cgroup.subtree_control"), wanted.map((c) => `+${c}`).join(" ")).catch(
      () => {},
    );
    await writeFile(join(parentDir, "cgroup.subtree_control"), wanted.map((c) => `+${c}`).join(" "));
  }
  const dir = join(parentDir, name);
  await mkdir(dir);
  await writeOptional(join(dir, "memory.max"), String(limits.memoryMib * 1024 * 1024));
  await writeOptional(join(dir, "memory.swap.max"), "0");
  await writeOptional(join(dir, "cpu.max"), `${limits.cpuCount * 100_000} 100000`);
  await writeOptional(join(dir, "pids.max"), String(limits.pidsMax));
  const cg = v2Handle(dir);
  if (limits.cpuWeight !== "normal") await cg.setCpuWeight(limits.cpuWeight);
  return cg;
}

function v2Handle(dir: string): Cgroup {
  const pids = () => readPids(join(dir, "cgroup.procs"));
  return {
    procsFiles: [join(dir, "cgroup.procs")],
    pids,
    // cpu.weight: 1..10000, default 100.
    setCpuWeight: (w) => writeOptional(join(dir, "cpu.weight"), w === "low" ? "10" : "100"),
    async killAll() {
      if (!existsSync(dir)) return;
      if (existsSync(join(dir, "cgroup.kill"))) await writeFile(join(dir, "cgroup.kill"), "1");
      else
        await killLoop(
          pids,
          () => writeOptional(join(dir, "cgroup.freeze"), "1"),
          () => writeOptional(join(dir, "cgroup.freeze"), "0"),
        );
      await waitEmpty(pids);
    },
    async remove() {
      await rmdirRetry(dir);
    },
    freeze: (timeoutMs) =>
      settle({
        what: "freeze",
        dir,
        timeoutMs,
        request: () => writeFile(join(dir, "cgroup.freeze"), "1"),
        reached: async () => (await keyedValue(join(dir, "cgroup.events"), "frozen")) === 1,
        undo: () => writeFile(join(dir, "cgroup.freeze"), "0"),
      }),
    thaw: (timeoutMs) =>
      settle({
        what: "thaw",
        dir,
        timeoutMs,
        request: () => writeFile(join(dir, "cgroup.freeze"), "0"),
        reached: async () => (await keyedValue(join(dir, "cgroup.events"), "frozen")) === 0,
      }),
    async usage() {
      const [cpu, cur, max, file] = await Promise.all([
        keyedValue(join(dir, "cpu.stat"), "usage_usec"),
        readNumber(join(dir, "memory.current")),
        readFile(join(dir, "memory.max"), "utf8").catch(() => "max"),
        keyedValue(join(dir, "memory.stat"), "file"),
      ]);
      const limit = max.trim() === "max" ? undefined : Number(max.trim());
      return {
        cpuUsec: cpu ?? 0,
        memUsedBytes: cur ?? 0,
        memLimitBytes: limit !== undefined && Number.isFinite(limit) ? limit : undefined,
        memCacheBytes: file ?? 0,
      };
    },
  };
}

async function createV1(parent: string, name: string, limits: CgroupLimits): Promise<Cgroup> {
  for (const c of V1_CONTROLLERS) await mkdir(join(ROOT, c, parent, name), { recursive: true });
  const at = (c: string, f: string) => join(ROOT, c, parent, name, f);
  await writeOptional(at("memory", "memory.limit_in_bytes"), String(limits.memoryMib * 1024 * 1024));
  await writeOptional(at("cpu", "cpu.cfs_period_us"), "100000");
  await writeOptional(at("cpu", "cpu.cfs_quota_us"), String(limits.cpuCount * 100_000));
  await writeOptional(at("pids", "pids.max"), String(limits.pidsMax));
  const cg = v1Handle(parent, name);
  if (limits.cpuWeight !== "normal") await cg.setCpuWeight(limits.cpuWeight);
  return cg;
}

function v1Handle(parent: string, name: string): Cgroup {
  const at = (c: string, f = "") => join(ROOT, c, parent, name, f);
  const pids = async () => {
    const all = new Set<number>();
    for (const c of V1_CONTROLLERS) for (const p of await readPids(at(c, "cgroup.procs"))) all.add(p);
    return [...all];
  };
  const freezer = at("freezer", "freezer.state");
  return {
    procsFiles: V1_CONTROLLERS.map((c) => at(c, "cgroup.procs")),
    pids,
    // cpu.shares: 2..262144, default 1024.
    setCpuWeight: (w) => writeOptional(at("cpu", "cpu.shares"), w === "low" ? "64" : "1024"),
    async killAll() {
      await killLoop(
        pids,
        () => writeOptional(freezer, "FROZEN"),
        () => writeOptional(freezer, "THAWED"),
      );
      await waitEmpty(pids);
    },
    async remove() {
      for (const c of V1_CONTROLLERS) await rmdirRetry(at(c));
    },
    freeze: (timeoutMs) =>
      settle({
        what: "freeze",
        dir: at("freezer"),
        timeoutMs,
        // v1 stays FREEZING when a task could not be frozen yet; writing FROZEN again retries.
        request: () => writeFile(freezer, "FROZEN"),
        reached: async () => (await readFile(freezer, "utf8")).trim() === "FROZEN",
        retry: true,
        undo: () => writeFile(freezer, "THAWED"),
      }),
    thaw: (timeoutMs) =>
      settle({
        what: "thaw",
        dir: at("freezer"),
        timeoutMs,
        request: () => writeFile(freezer, "THAWED"),
        reached: async () => (await readFile(freezer, "utf8")).trim() === "THAWED",
      }),
    async usage() {
      const [ns, used, limit, cache] = await Promise.all([
        readNumber(at("cpuacct", "cpuacct.usage")),
        readNumber(at("memory", "memory.usage_in_bytes")),
        readNumber(at("memory", "memory.limit_in_bytes")),
        keyedValue(at("memory", "memory.stat"), "cache"),
      ]);
      return {
        cpuUsec: Math.floor((ns ?? 0) / 1000),
        memUsedBytes: used ?? 0,
        memLimitBytes: limit !== undefined && limit < UNLIMITED_BYTES ? limit : undefined,
        memCacheBytes: cache ?? 0,
      };
    },
  };
}

/**
 * Asks the kernel for a freezer state and polls until it reports it, for `timeoutMs` at most.
 * A freeze that does not settle is undone, so a failed pause leaves the sandbox running.
 */
async function settle(o: {
  what: "freeze" | "thaw";
  dir: string;
  timeoutMs: number;
  request: () => Promise<void>;
  reached: () => Promise<boolean>;
  retry?: boolean;
  undo?: () => Promise<void>;
}): Promise<void> {
  const deadline = Date.now() + o.timeoutMs;
  await o.request();
  for (let wait = 1; ; wait = Math.min(wait * 2, 50)) {
    if (await o.reached()) return;
    if (Date.now() >= deadline) break;
    await sleep(wait);
    if (o.retry) await o.request();
  }
  await o.undo?.().catch(() => {
    // best effort: the error below says what failed
  });
  throw new RuntimeTimeoutError(`cgroup ${o.dir} did not ${o.what} within ${o.timeoutMs} ms`);
}

/**
 * CPU time used between two samples as a percentage of all `cpuCount` CPUs over the wall time
 * between them, clamped to 0–100 (quota bursts and clock skew can overshoot a little).
 */
export function cpuUsedPct(
  prev: { cpuUsec: number; atMs: number },
  cur: { cpuUsec: number; atMs: number },
  cpuCount: number,
): number {
  const wallUsec = (cur.atMs - prev.atMs) * 1000;
  if (wallUsec <= 0 || cpuCount <= 0) return 0;
  const pct = ((cur.cpuUsec - prev.cpuUsec) / (wallUsec * cpuCount)) * 100;
  return Math.min(100, Math.max(0, pct));
}

/** A number from a one-value file; undefined when the kernel lacks it. */
async function readNumber(file: string): Promise<number | undefined> {
  try {
    const n = Number((await readFile(file, "utf8")).trim());
    return Number.isFinite(n) ? n : undefined;
  } catch {
    return undefined;
  }
}

/** The value of `key` in a "key value" per line file (cpu.stat, memory.stat, cgroup.events). */
async function keyedValue(file: string, key: string): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch {
    return undefined;
  }
  for (const line of text.split("\n")) {
    const sp = line.indexOf(" ");
    if (sp > 0 && line.slice(0, sp) === key) {
      const n = Number(line.slice(sp + 1));
      return Number.isFinite(n) ? n : undefined;
    }
  }
  return undefined;
}

/** Freeze (so nothing forks while we kill), SIGKILL everything, thaw so the kills land. */
async function killLoop(
  pids: () => Promise<number[]>,
  freeze: () => Promise<void>,
  thaw: () => Promise<void>,
) {
  for (let round = 0; round < 20; round++) {
    const list = await pids();
    if (list.length === 0) return;
    await freeze();
    for (const p of list) {
      try {
        process.kill(p, "SIGKILL");
      } catch {
        // already gone
      }
    }
    await thaw();
    await sleep(1);
  }
}

async function waitEmpty(pids: () => Promise<number[]>): Promise<void> {
  for (let i = 0; i < 2000; i++) {
    if ((await pids()).length === 0) return;
    await sleep(1);
  }
  throw new Error("processes survived SIGKILL in the sandbox cgroup");
}

async function readPids(file: string): Promise<number[]> {
  try {
    return (await readFile(file, "utf8")).split("\n").filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

async function writeOptional(file: string, value: string): Promise<void> {
  try {
    await writeFile(file, value);
  } catch (err) {
    // A controller knob the kernel lacks (e.g. no swap accounting) is not fatal.
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
}

async function rmdirRetry(dir: string): Promise<void> {
  for (let i = 0; i < 100; i++) {
    try {
      await rmdir(dir);
      return;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === "ENOENT") return;
      if (code !== "EBUSY") throw err;
      await sleep(10);
    }
  }
  throw new Error(`cgroup ${dir} stayed busy`);
}
