import { NoCapacityError } from "./errors.js";

export interface HostLoad {
  hostId: string;
  /** Sandboxes the host runs, keeps paused (they hold their memory) or is booting. */
  running: number;
  capacity: number;
  lastHeartbeat: Date;
  /** What the host offers (0 or absent: not reported, not a limit) and what its sandboxes hold. */
  vcpus?: number;
  memoryMib?: number;
  usedVcpus?: number;
  usedMemoryMib?: number;
  /** Free disk the host reported, MiB (0 or absent: not reported). */
  diskFreeMib?: number;
  labels?: Readonly<Record<string, string>>;
  /** A draining host keeps what it runs and takes nothing new. */
  draining?: boolean;
  /** Templates the host holds ready (no build or copy before a boot). */
  templates?: readonly string[];
}

/** `spread`: the least loaded host first (the default); `pack`: fill the busiest first. */
export type PlacementPolicy = "spread" | "pack";

/** What one sandbox needs from its host. Every field is optional: absent asks nothing. */
export interface PlacementRequest {
  cpuCount?: number;
  memoryMib?: number;
  /** Every label must be on the host with the same value. */
  labels?: Readonly<Record<string, string>>;
  /** Hosts that hold it ready are preferred (template locality)… */
  templateId?: string;
  /** …or required: a built template's rootfs exists only on the hosts that built it. */
  requireTemplate?: boolean;
  policy?: PlacementPolicy;
  /** vCPUs placed per vCPU a host offers (sandboxes idle most of the time); default 1. */
  cpuOvercommit?: number;
  /** A host reporting less free disk than this is skipped; default MIN_FREE_DISK_MIB. */
  minFreeDiskMib?: number;
}

/** By default a host needs this much free disk to take a sandbox, when it reports its disk. */
export const MIN_FREE_DISK_MIB = 1024;

export function isLive(host: Pick<HostLoad, "lastHeartbeat">, now: Date, deadAfterMs: number): boolean {
  return now.getTime() - host.lastHeartbeat.getTime() < deadAfterMs;
}

/** Why a host cannot take the sandbox, or undefined when it can. */
function unfit(h: HostLoad, req: PlacementRequest): string | undefined {
  if (h.draining) return "draining";
  for (const [k, v] of Object.entries(req.labels ?? {})) if (h.labels?.[k] !== v) return "labels";
  if (req.requireTemplate && req.templateId !== undefined && !h.templates?.includes(req.templateId))
    return "template";
  if (h.running >= h.capacity) return "full";
  if (h.vcpus && req.cpuCount && (h.usedVcpus ?? 0) + req.cpuCount > h.vcpus * (req.cpuOvercommit ?? 1))
    return "full";
  if (h.memoryMib && req.memoryMib && (h.usedMemoryMib ?? 0) + req.memoryMib > h.memoryMib) return "full";
  if (h.diskFreeMib && h.diskFreeMib < (req.minFreeDiskMib ?? MIN_FREE_DISK_MIB)) return "low_disk";
  return undefined;
}

/**
 * The host for one sandbox among the live ones that fit (not draining, every label, the
 * template when required, a free slot, vCPUs and memory when the host reports them): hosts
 * holding the template ready first,
 * then by the policy — spread: lowest load (running/capacity, and vCPU and memory use, the
 * highest of the three), then most free slots; pack: the highest load that still fits — then
 * by host id, so equal hosts are chosen deterministically. Throws NoCapacityError saying why.
 */
export function chooseHost<H extends HostLoad>(
  hosts: readonly H[],
  now: Date,
  deadAfterMs: number,
  req: PlacementRequest = {},
): H {
  const live = hosts.filter((h) => isLive(h, now, deadAfterMs));
  if (live.length === 0) {
    throw hosts.length === 0
      ? new NoCapacityError("no_hosts", "no host is registered")
      : new NoCapacityError("no_live_hosts", `no live host (all ${hosts.length} missed their heartbeats)`);
  }
  const why = new Map<string, number>();
  let best: H | undefined;
  for (const h of live) {
    const no = unfit(h, req);
    if (no !== undefined) {
      why.set(no, (why.get(no) ?? 0) + 1);
      continue;
    }
    if (best === undefined || compare(h, best, req) < 0) best = h;
  }
  if (best !== undefined) return best;
  if ((why.get("full") ?? 0) === live.length)
    throw new NoCapacityError("hosts_full", `all ${live.length} live hosts are full`);
  const parts = [...why].map(([k, n]) => `${n} ${REASONS[k] ?? k}`);
  throw new NoCapacityError("hosts_full", `no live host can take it (${parts.join(", ")})`);
}

const REASONS: Readonly<Record<string, string>> = {
  labels: "without the labels asked for",
  low_disk: "low on free disk",
  template: "without the template",
};

/**
 * Places `count` sandboxes one after another, each on the host `chooseHost` picks given the
 * earlier ones. Returns the hosts in order (fewer than `count` when capacity runs out) and,
 * if it ran out, why.
 */
export function placeMany<H extends HostLoad>(
  hosts: readonly H[],
  count: number,
  now: Date,
  deadAfterMs: number,
  req: PlacementRequest = {},
): { placed: H[]; shortfall: NoCapacityError | undefined } {
  const loads = hosts.map((h) => ({ ...h, original: h }));
  const placed: H[] = [];
  for (let i = 0; i < count; i++) {
    try {
      const h = chooseHost(loads, now, deadAfterMs, req);
      h.running += 1;
      h.usedVcpus = (h.usedVcpus ?? 0) + (req.cpuCount ?? 0);
      h.usedMemoryMib = (h.usedMemoryMib ?? 0) + (req.memoryMib ?? 0);
      placed.push(h.original);
    } catch (err) {
      if (err instanceof NoCapacityError) return { placed, shortfall: err };
      throw err;
    }
  }
  return { placed, shortfall: undefined };
}

/** A host's load from 0 to 1: the fullest of its slots, vCPUs (overcommitted) and memory. */
export function loadOf(h: HostLoad, cpuOvercommit = 1): number {
  let load = h.capacity > 0 ? h.running / h.capacity : 1;
  if (h.vcpus) load = Math.max(load, (h.usedVcpus ?? 0) / (h.vcpus * cpuOvercommit));
  if (h.memoryMib) load = Math.max(load, (h.usedMemoryMib ?? 0) / h.memoryMib);
  return load;
}

function compare(a: HostLoad, b: HostLoad, req: PlacementRequest): number {
  if (req.templateId !== undefined) {
    const ha = a.templates?.includes(req.templateId) ? 0 : 1;
    const hb = b.templates?.includes(req.templateId) ? 0 : 1;
    if (ha !== hb) return ha - hb;
  }
  const byLoad = loadOf(a, req.cpuOvercommit) - loadOf(b, req.cpuOvercommit);
  if (byLoad !== 0) return req.policy === "pack" ? -byLoad : byLoad;
  const byFree = b.capacity - b.running - (a.capacity - a.running);
  if (byFree !== 0) return req.policy === "pack" ? -byFree : byFree;
  return a.hostId < b.hostId ? -1 : a.hostId > b.hostId ? 1 : 0;
}
