import { InvalidArgumentError } from "../errors.js";

const SANDBOX_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/**
 * Snapshot ids (`snap_…`) and user-chosen names (E2B's `team/name:tag`) share one alphabet,
 * the scheduler's: either may be given where a snapshot is named.
 */
const SNAPSHOT_REF_RE = /^[A-Za-z0-9][A-Za-z0-9._:/@-]{0,127}$/;
const TEMPLATE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$/;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,255}$/;
const USER_RE = /^[A-Za-z_][A-Za-z0-9_.-]{0,31}$/;
/** Linux MAX_ARG_STRLEN (128 KiB) less the terminating NUL: bash gets the command as one arg. */
export const MAX_COMMAND_BYTES = 128 * 1024 - 1;

export const METADATA_LIMITS = { maxEntries: 64, maxKeyBytes: 128, maxValueBytes: 1024 } as const;
export const ENV_LIMITS = { maxEntries: 256, maxValueBytes: 32 * 1024 } as const;

const bytes = (s: string) => Buffer.byteLength(s, "utf8");

export function checkSandboxId(id: string): void {
  if (!SANDBOX_ID_RE.test(id)) {
    throw new InvalidArgumentError("invalid sandbox id: expected 1-128 letters, digits, '_', '.' or '-'");
  }
}

export function checkSnapshotRef(idOrName: string): void {
  if (!SNAPSHOT_REF_RE.test(idOrName)) {
    throw new InvalidArgumentError(
      "invalid snapshot id or name: expected 1-128 letters, digits, '.', '_', ':', '/', '@' or '-', starting with a letter or digit",
    );
  }
}

/** An optional snapshot name ("" = none). */
export function checkSnapshotName(name: string): void {
  if (name === "") return;
  if (!SNAPSHOT_REF_RE.test(name)) {
    throw new InvalidArgumentError(
      "invalid snapshot name: expected 1-128 letters, digits, '.', '_', ':', '/', '@' or '-', starting with a letter or digit",
    );
  }
}

export const FORK_COUNT = { min: 1, max: 16 } as const;

/** Clones per fork; 0 (unset) means 1. */
export function forkCount(count: number): number {
  const n = count === 0 ? FORK_COUNT.min : count;
  if (!Number.isInteger(n) || n < FORK_COUNT.min || n > FORK_COUNT.max) {
    throw new InvalidArgumentError(`count: expected ${FORK_COUNT.min} to ${FORK_COUNT.max}, got ${count}`);
  }
  return n;
}

export function checkTemplateId(id: string): void {
  if (!TEMPLATE_ID_RE.test(id)) {
    throw new InvalidArgumentError(
      "invalid template id: expected 1-128 letters, digits, '_', '.', ':', '/' or '-'",
    );
  }
}

export function checkMetadata(field: string, m: Readonly<Record<string, string>>): void {
  const entries = Object.entries(m);
  if (entries.length > METADATA_LIMITS.maxEntries) {
    throw new InvalidArgumentError(`${field}: at most ${METADATA_LIMITS.maxEntries} entries`);
  }
  for (const [k, v] of entries) {
    if (k === "" || bytes(k) > METADATA_LIMITS.maxKeyBytes || k.includes("\0")) {
      throw new InvalidArgumentError(
        `${field}: keys must be 1-${METADATA_LIMITS.maxKeyBytes} bytes without NUL`,
      );
    }
    if (bytes(v) > METADATA_LIMITS.maxValueBytes || v.includes("\0")) {
      throw new InvalidArgumentError(
        `${field}.${k}: at most ${METADATA_LIMITS.maxValueBytes} bytes without NUL`,
      );
    }
  }
}

export function checkEnvVars(field: string, m: Readonly<Record<string, string>>): void {
  const entries = Object.entries(m);
  if (entries.length > ENV_LIMITS.maxEntries) {
    throw new InvalidArgumentError(`${field}: at most ${ENV_LIMITS.maxEntries} entries`);
  }
  for (const [k, v] of entries) {
    if (!ENV_NAME_RE.test(k)) {
      throw new InvalidArgumentError(
        `${field}: '${k.slice(0, 64)}' is not a valid environment variable name`,
      );
    }
    if (bytes(v) > ENV_LIMITS.maxValueBytes || v.includes("\0")) {
      throw new InvalidArgumentError(`${field}.${k}: at most ${ENV_LIMITS.maxValueBytes} bytes without NUL`);
    }
  }
}

export function checkCommand(command: string): void {
  if (command.trim() === "") throw new InvalidArgumentError("command must not be empty");
  if (command.includes("\0")) throw new InvalidArgumentError("command must not contain NUL bytes");
  if (bytes(command) > MAX_COMMAND_BYTES) {
    throw new InvalidArgumentError(
      `command is longer than ${MAX_COMMAND_BYTES} bytes; write a script file instead`,
    );
  }
}

export function checkUser(user: string): void {
  if (!USER_RE.test(user)) throw new InvalidArgumentError("invalid user name");
}
