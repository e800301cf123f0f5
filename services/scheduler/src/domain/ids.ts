import { randomBytes } from "node:crypto";

const ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789";
export const SANDBOX_ID_LENGTH = 20;
/** E2B routes on `<port>-<id>.<domain>` and rejects ids outside this set. */
export const SANDBOX_ID_RE = /^[a-z0-9]{20}$/;

/** `snap_` + 20 of [a-z0-9]: fits the vmm's snapshot folder names ([a-z0-9_-]{1,64}). */
export const SNAPSHOT_ID_RE = /^snap_[a-z0-9]{20}$/;

/** A new sandbox id: 20 characters of [a-z0-9] (about 103 bits), uniformly random. */
export function newSandboxId(): string {
  return randomToken(SANDBOX_ID_LENGTH);
}

/** A new snapshot id; the prefix keeps snapshot and sandbox ids apart at a glance. */
export function newSnapshotId(): string {
  return `snap_${randomToken(20)}`;
}

/** A new template build id: `bld_` + 20 of [a-z0-9]. */
export function newBuildId(): string {
  return `bld_${randomToken(20)}`;
}

/** `length` characters of [a-z0-9], uniformly random. */
function randomToken(length: number): string {
  // Rejection sampling: 252 = 7 * 36, so bytes below 252 map onto the alphabet without bias.
  let id = "";
  while (id.length < length) {
    for (const b of randomBytes(32)) {
      if (b >= 252) continue;
      id += ALPHABET[b % 36];
      if (id.length === length) break;
    }
  }
  return id;
}
