import { lstat, readdir, statfs } from "node:fs/promises";
import { join } from "node:path";
import { shareHostDir } from "../runtime/share.js";
import { hostDiskFull, quotaExceeded } from "./errors.js";

/** How long a measured share size is trusted before the folder is walked again. */
const USAGE_TTL_MS = 5_000;

/** Room left free on the host's disk under the shares, for everything else that writes there. */
export const HOST_RESERVE_BYTES = 16 * 1024 * 1024;

/**
 * Bytes used by each sandbox's share (apparent sizes of everything below it, links not
 * followed), measured by walking the folder at most once per USAGE_TTL_MS and corrected by
 * what the share routes write meanwhile. Cheap and a little loose: the guest's own writes are
 * seen at the next walk, and two uploads started together may both fit a quota only one does.
 *
 * The host's free disk bounds an upload too. A share may be a sparse image (runtime/share.ts)
 * whose own filesystem has room the host's disk no longer backs: written there, the bytes sit
 * in the page cache, the upload is answered 200, and writeback fails later. So an upload the
 * host's disk (the filesystem holding the share) cannot take is refused first, with 507.
 */
export class ShareQuota {
  private readonly cache = new Map<string, { bytes: number; at: number }>();

  constructor(
    /** Largest share, in bytes. */
    readonly quotaBytes: number,
    private readonly ttlMs = USAGE_TTL_MS,
  ) {}

  /** Bytes the share folder `root` holds now (cached). */
  async usage(root: string): Promise<number> {
    const hit = this.cache.get(root);
    if (hit !== undefined && Date.now() - hit.at < this.ttlMs) return hit.bytes;
    const bytes = await folderBytes(root);
    this.cache.set(root, { bytes, at: Date.now() });
    if (this.cache.size > 10_000) this.cache.clear();
    return bytes;
  }

  /**
   * Throws the 507 quota error when adding `more` bytes to the share `root` would exceed the
   * quota, or the 507 disk error when the host's disk cannot take them.
   */
  async check(root: string, more: number): Promise<void> {
    if ((await this.usage(root)) + more > this.quotaBytes) throw quotaExceeded(this.quotaBytes);
    if (more > (await hostRoom(root))) throw hostDiskFull();
  }

  /**
   * A budget for one streamed write: `take(n)` throws the quota error once the bytes taken
   * would exceed what the share has left at the start.
   */
  async budget(root: string): Promise<{ take(n: number): void }> {
    let left = this.quotaBytes - (await this.usage(root));
    let room = await hostRoom(root);
    return {
      take: (n: number) => {
        left -= n;
        room -= n;
        if (left < 0) throw quotaExceeded(this.quotaBytes);
        if (room < 0) throw hostDiskFull();
      },
    };
  }

  /** A write changed the share `root`: the next check walks it again. */
  changed(root: string): void {
    this.cache.delete(root);
  }
}

/**
 * Bytes the host's disk under the share `root` can still take, less the reserve: the free
 * space of the filesystem holding the share folder (or its image). A parent that cannot be
 * read sets no bound here; opening the share fails on its own.
 */
async function hostRoom(root: string): Promise<number> {
  const s = await statfs(shareHostDir(root)).catch(() => undefined);
  return s === undefined ? Number.POSITIVE_INFINITY : s.bavail * s.bsize - HOST_RESERVE_BYTES;
}

/** Apparent bytes below `dir`, links not followed; entries that vanish meanwhile count nothing. */
export async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const d = stack.pop()!;
    const entries = await readdir(d, { withFileTypes: true }).catch(() => []);
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      else if (e.isFile()) total += (await lstat(p).catch(() => undefined))?.size ?? 0;
    }
  }
  return total;
}
