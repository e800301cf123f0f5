import { NoCapacityError } from "./errors.js";

export interface HostLoad {
  hostId: string;
  /** Sandboxes the host runs, keeps paused (they hold their memory) or is booting. */
  running: number;
  capacity: number;
  lastHeartbeat: Date;
}

export function isLive(host: Pick<HostLoad, "lastHeartbeat">, now: Date, deadAfterMs: number): boolean {
  return now.getTime() - host.lastHeartbeat.getTime() < deadAfterMs;
}

/**
 * The least loaded live host with room: lowest running/capacity, then most free slots, then
 * host id (so equal hosts are chosen deterministically). Throws NoCapacityError when none fits.
 */
export function chooseHost<H extends HostLoad>(hosts: readonly H[], now: Date, deadAfterMs: number): H {
  const live = hosts.filter((h) => isLive(h, now, deadAfterMs));
  if (live.length === 0) {
    throw hosts.length === 0
      ? new NoCapacityError("no_hosts", "no host is registered")
      : new NoCapacityError("no_live_hosts", `no live host (all ${hosts.length} missed their heartbeats)`);
  }
  let best: H | undefined;
  for (const h of live) {
    if (h.running >= h.capacity) continue;
    if (best === undefined || compareLoad(h, best) < 0) best = h;
  }
  if (best === undefined) throw new NoCapacityError("hosts_full", `all ${live.length} live hosts are full`);
  return best;
}

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
): { placed: H[]; shortfall: NoCapacityError | undefined } {
  const loads = hosts.map((h) => ({ ...h, original: h }));
  const placed: H[] = [];
  for (let i = 0; i < count; i++) {
    try {
      const h = chooseHost(loads, now, deadAfterMs);
      h.running += 1;
      placed.push(h.original);
    } catch (err) {
      if (err instanceof NoCapacityError) return { placed, shortfall: err };
      throw err;
    }
  }
  return { placed, shortfall: undefined };
}

function compareLoad(a: HostLoad, b: HostLoad): number {
  // Cross-multiplied to compare running/capacity without division (capacity > 0 here).
  const byRatio = a.running * b.capacity - b.running * a.capacity;
  if (byRatio !== 0) return byRatio;
  const byFree = b.capacity - b.running - (a.capacity - a.running);
  if (byFree !== 0) return byFree;
  return a.hostId < b.hostId ? -1 : a.hostId > b.hostId ? 1 : 0;
}
