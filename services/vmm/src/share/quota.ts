import { lstat, readdir } from "node:fs/promises";
import { join } from "node:path";
import { quotaExceeded } from "./errors.js";

/** How long a measured share size is trusted before the folder is walked again. */
const USAGE_TTL_MS = 5_000;

/**
 * Bytes used by each sandbox's share (apparent sizes of everything below it, links not
 * followed), measured by walking the folder at most once per USAGE_TTL_MS and corrected by
 * what the share routes write meanwhile. Cheap and a little loose: the guest's own writes are
 * seen at the next walk, and two uploads started together may both fit a quota only one does.
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

  /** Throws the 507 quota error when adding `more` bytes to the share `root` would exceed the quota. */
  async check(root: string, more: number): Promise<void> {
    if ((await this.usage(root)) + more > this.quotaBytes) throw quotaExceeded(this.quotaBytes);
  }

  /**
   * A budget for one streamed write: `take(n)` throws the quota error once the bytes taken
   * would exceed what the share has left at the start.
   */
  async budget(root: string): Promise<{ take(n: number): void }> {
    let left = this.quotaBytes - (await this.usage(root));
    return {
      take: (n: number) => {
        left -= n;
        if (left < 0) throw quotaExceeded(this.quotaBytes);
      },
    };
  }

  /** A write changed the share `root`: the next check walks it again. */
  changed(root: string): void {
    this.cache.delete(root);
  }
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
