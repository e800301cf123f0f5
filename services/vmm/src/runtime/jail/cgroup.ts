import { existsSync } from "node:fs";
import { mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * One sandbox's cgroup: memory, cpu, pids and freezing, on cgroup v2 (unified) or v1
 * (separate hierarchies per controller, as on hosts booted in hybrid mode).
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
}

const ROOT = "/sys/fs/cgroup";
const V1_CONTROLLERS = ["memory", "cpu", "pids", "freezer"] as const;

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
  };
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
