import { Code, ConnectError } from "@connectrpc/connect";

export class VmNotFoundError extends Error {
  constructor(readonly sandboxId: string) {
    super(`sandbox '${sandboxId}' is not on this host`);
    this.name = "VmNotFoundError";
  }
}

export class VmExistsError extends Error {
  constructor(readonly sandboxId: string) {
    super(`sandbox '${sandboxId}' already exists on this host`);
    this.name = "VmExistsError";
  }
}

export class TemplateNotFoundError extends Error {
  constructor(readonly templateId: string) {
    super(`template '${templateId}' is not built on this host`);
    this.name = "TemplateNotFoundError";
  }
}

export class HostFullError extends Error {
  constructor(readonly capacity: number) {
    super(`host is full (${capacity} sandboxes)`);
    this.name = "HostFullError";
  }
}

export class InvalidArgumentError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidArgumentError";
  }
}

/** The sandbox exists but is in the wrong state for the call (paused, not paused). */
export class VmStateError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "VmStateError";
  }
}

/** The runtime did not reach the asked state in time (a freeze or thaw that never settled). */
export class RuntimeTimeoutError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "RuntimeTimeoutError";
  }
}

/** A microVM runtime found no (or a stale) image for the template on this host. */
export class VmImageMissingError extends Error {
  constructor(templateId: string, why: string) {
    super(`no microVM image for template '${templateId}' (${why}): run 'dnah image build ${templateId}'`);
    this.name = "VmImageMissingError";
  }
}

/**
 * A template built from steps could not be made into a microVM disk image (its layers
 * flattened over its base's image). The message names the template and the short reason.
 */
export class TemplateImageError extends Error {
  constructor(
    readonly templateId: string,
    why: string,
    options?: ErrorOptions,
  ) {
    super(`template '${templateId}': cannot make its microVM disk image: ${why}`, options);
    this.name = "TemplateImageError";
  }
}

/** The guest did not come up or stopped answering. */
export class GuestUnavailableError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "GuestUnavailableError";
  }
}

export class SnapshotNotFoundError extends Error {
  constructor(readonly snapshotId: string) {
    super(`snapshot '${snapshotId}' is not on this host`);
    this.name = "SnapshotNotFoundError";
  }
}

export class SnapshotExistsError extends Error {
  constructor(readonly snapshotId: string) {
    super(`snapshot '${snapshotId}' already exists on this host`);
    this.name = "SnapshotExistsError";
  }
}

/**
 * A stored snapshot does not match what was signed (or cannot be used here): nothing was
 * started. `problems` name each file, e.g. "disk.tar: changed (sha256 differs)".
 */
export class SnapshotInvalidError extends Error {
  constructor(
    readonly snapshotId: string,
    readonly problems: readonly string[],
  ) {
    super(`snapshot '${snapshotId}' refused: ${problems.join("; ")}`);
    this.name = "SnapshotInvalidError";
  }
}

/** A template build step failed (its exit code, a timeout) or the build was cancelled. */
export class TemplateBuildError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TemplateBuildError";
  }
}

/** The one mapping from vmm domain errors to Connect codes. Unknown errors become Internal. */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  if (
    err instanceof VmNotFoundError ||
    err instanceof TemplateNotFoundError ||
    err instanceof SnapshotNotFoundError
  )
    return new ConnectError(err.message, Code.NotFound);
  if (err instanceof VmImageMissingError) return new ConnectError(err.message, Code.FailedPrecondition);
  if (err instanceof SnapshotInvalidError) return new ConnectError(err.message, Code.FailedPrecondition);
  if (err instanceof TemplateImageError)
    return new ConnectError(err.message, isDiskFull(err) ? Code.ResourceExhausted : Code.FailedPrecondition);
  if (err instanceof VmExistsError || err instanceof SnapshotExistsError)
    return new ConnectError(err.message, Code.AlreadyExists);
  if (err instanceof HostFullError) return new ConnectError(err.message, Code.ResourceExhausted);
  if (err instanceof InvalidArgumentError) return new ConnectError(err.message, Code.InvalidArgument);
  if (err instanceof GuestUnavailableError) return new ConnectError(err.message, Code.Unavailable);
  if (err instanceof VmStateError || err instanceof TemplateBuildError)
    return new ConnectError(err.message, Code.FailedPrecondition);
  if (err instanceof RuntimeTimeoutError) return new ConnectError(err.message, Code.DeadlineExceeded);
  if (isDiskFull(err)) return new ConnectError("the host's disk is full", Code.ResourceExhausted);
  return new ConnectError("internal error", Code.Internal);
}

/**
 * Whether a failure is the host's disk being full (pure): ENOSPC or EDQUOT anywhere in the
 * cause chain, or a tool (mkfs, tar, cp) that said so on stderr.
 */
export function isDiskFull(err: unknown): boolean {
  let cur: unknown = err;
  for (let depth = 0; depth < 8 && typeof cur === "object" && cur !== null; depth++) {
    const e = cur as { code?: unknown; stderr?: unknown; cause?: unknown };
    if (e.code === "ENOSPC" || e.code === "EDQUOT") return true;
    if (typeof e.stderr === "string" && /No space left on device|Disk quota exceeded/.test(e.stderr))
      return true;
    cur = e.cause;
  }
  return false;
}

const SANDBOX_ID_RE = /^[a-z0-9]{1,64}$/;

export function checkSandboxId(id: string): string {
  if (!SANDBOX_ID_RE.test(id)) throw new InvalidArgumentError(`invalid sandbox id ${JSON.stringify(id)}`);
  return id;
}

/** Snapshot ids, which also name their folders and archives. */
export const SNAPSHOT_ID_RE = /^[a-z0-9_-]{1,64}$/;

export function checkSnapshotId(id: string): string {
  if (!SNAPSHOT_ID_RE.test(id)) throw new InvalidArgumentError(`invalid snapshot id ${JSON.stringify(id)}`);
  return id;
}
