import { Code } from "@connectrpc/connect";
import { InvalidArgumentError, SnapshotRefusedError } from "./errors.js";
import { SNAPSHOT_ID_RE } from "./ids.js";

/**
 * Names are chosen by users (E2B and Daytona name snapshots, e.g. `team/name:tag`). They share
 * the lookup with ids, so a name shaped like a snapshot id is refused.
 */
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$/;

export const MAX_FORK_COUNT = 16;

/** The optional snapshot name: undefined when empty. */
export function checkSnapshotName(name: string): string | undefined {
  if (name === "") return undefined;
  if (!NAME_RE.test(name))
    throw new InvalidArgumentError(
      `name '${name.slice(0, 140)}' must be 1-128 characters of letters, digits and . _ : / @ -, starting with a letter or digit`,
    );
  if (SNAPSHOT_ID_RE.test(name))
    throw new InvalidArgumentError(`name '${name}' looks like a snapshot id; choose another`);
  return name;
}

/** How many clones a fork makes: 0 means 1; more than MAX_FORK_COUNT is refused. */
export function checkForkCount(count: number): number {
  if (count === 0) return 1;
  if (!Number.isInteger(count) || count < 1 || count > MAX_FORK_COUNT)
    throw new InvalidArgumentError(`count must be between 1 and ${MAX_FORK_COUNT}, got ${count}`);
  return count;
}

/** A signature the snapshot service could not have made: absent or empty. */
export function isUnsigned(s: { kid: string | null; signature: Uint8Array | null }): boolean {
  return s.signature === null || s.signature.length === 0 || s.kid === null || s.kid === "";
}

export function unsignedError(snapshotId: string): SnapshotRefusedError {
  return new SnapshotRefusedError(`snapshot ${snapshotId} is unsigned; refusing to restore`);
}

/**
 * A verification refusal. `reason` is the snapshot service's ("unknown key", "retired key",
 * "signature mismatch") or, for a request it rejects as malformed (a stored signature of the
 * wrong length), its message: either way the snapshot is not trusted.
 */
export function verificationError(snapshotId: string, reason: string, kid: string): SnapshotRefusedError {
  return new SnapshotRefusedError(
    `snapshot ${snapshotId} failed verification: ${reason || "no reason given"} (kid ${kid})`,
  );
}

/** The snake_case name of a Connect code ("resource_exhausted"), as ForkResult.error_code. */
export function codeSnakeName(code: Code): string {
  const name = Code[code] ?? "Unknown";
  return name.replace(/[A-Z]/g, (c, i: number) => (i === 0 ? "" : "_") + c.toLowerCase());
}
