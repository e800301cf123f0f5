import { readFile, statfs } from "node:fs/promises";
import { cpus } from "node:os";
import type { HttpResponse } from "./respond.js";
import { sendJson } from "./respond.js";

interface CpuTimes {
  idle: number;
  total: number;
}

/** CPU use since the previous sample (gopsutil's `cpu.Percent(0)`), from /proc/stat. */
export class CpuSampler {
  private last: CpuTimes | undefined;

  constructor(private readonly procStat = "/proc/stat") {}

  async percent(): Promise<number> {
    const now = await this.read();
    const prev = this.last;
    this.last = now;
    if (!now || !prev) return 0;
    const total = now.total - prev.total;
    if (total <= 0) return 0;
    const pct = (1 - (now.idle - prev.idle) / total) * 100;
    return Math.round(Math.min(100, Math.max(0, pct)) * 100) / 100;
  }

  /** Takes the baseline sample. */
  async prime(): Promise<void> {
    this.last = await this.read();
  }

  private async read(): Promise<CpuTimes | undefined> {
    const text = await readFile(this.procStat, "utf8").catch(() => "");
    const line = text.split("\n").find((l) => l.startsWith("cpu "));
    if (!line) return undefined;
    const f = line.trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal [guest guest_nice, already in user/nice]
    const [user = 0, nice = 0, system = 0, idle = 0, iowait = 0, irq = 0, softirq = 0, steal = 0] = f;
    return { idle: idle + iowait, total: user + nice + system + idle + iowait + irq + softirq + steal };
  }
}

/** `GET /metrics`: envd's host metrics (bytes unless the name says otherwise). */
export async function metrics(cpu: CpuSampler, res: HttpResponse): Promise<void> {
  const mem = await memInfo();
  const disk = await statfs("/").catch(() => undefined);
  const diskTotal = disk ? disk.blocks * disk.bsize : 0;
  const diskUsed = disk ? (disk.blocks - disk.bavail) * disk.bsize : 0;
  res.setHeader("Cache-Control", "no-store");
  sendJson(res, 200, {
    ts: Math.floor(Date.now() / 1000),
    cpu_count: cpus().length,
    cpu_used_pct: await cpu.percent(),
    mem_total_mib: Math.floor(mem.total / 1024 / 1024),
    mem_used_mib: Math.floor(mem.used / 1024 / 1024),
    mem_total: mem.total,
    mem_used: mem.used,
    mem_cache: mem.cached,
    disk_used: diskUsed,
    disk_total: diskTotal,
  });
}

async function memInfo(): Promise<{ total: number; used: number; cached: number }> {
  const text = await readFile("/proc/meminfo", "utf8").catch(() => "");
  const kb = (key: string): number => {
    const m = new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(text);
    return m?.[1] ? Number(m[1]) * 1024 : 0;
  };
  const total = kb("MemTotal");
  const available = kb("MemAvailable") || kb("MemFree") + kb("Buffers") + kb("Cached");
  return { total, used: Math.max(0, total - available), cached: kb("Cached") };
}
