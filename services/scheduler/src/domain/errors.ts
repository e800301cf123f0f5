import { Code, ConnectError } from "@connectrpc/connect";
import { DatabaseUnavailableError, type Logger } from "@dnah/platform";

/**
 * What went wrong, independent of the wire. Each kind maps to exactly one Connect code in
 * `toConnectError`; anything that is not a SchedulerError is an internal error.
 */
export type ErrorKind =
  | "not_found"
  | "failed_precondition"
  | "resource_exhausted"
  | "unavailable"
  | "invalid_argument"
  | "already_exists"
  | "unauthenticated"
  | "permission_denied";

export abstract class SchedulerError extends Error {
  abstract readonly kind: ErrorKind;
}

export class SandboxNotFoundError extends SchedulerError {
  readonly kind = "not_found";
  constructor(readonly sandboxId: string) {
    super(`sandbox '${sandboxId}' not found`);
    this.name = "SandboxNotFoundError";
  }
}

export class TemplateNotFoundError extends SchedulerError {
  readonly kind = "not_found";
  constructor(
    readonly templateId: string,
    message = `template '${templateId}' not found`,
  ) {
    super(message);
    this.name = "TemplateNotFoundError";
  }
}

export class HostNotFoundError extends SchedulerError {
  readonly kind = "not_found";
  constructor(readonly hostId: string) {
    super(`host '${hostId}' is not registered; call RegisterHost first`);
    this.name = "HostNotFoundError";
  }
}

/** A host without the join token (or with a wrong one) asked to register. */
export class JoinRefusedError extends SchedulerError {
  readonly kind = "unauthenticated";
  constructor(message: string) {
    super(message);
    this.name = "JoinRefusedError";
  }
}

/** No live host has room (or none is registered). */
export class NoCapacityError extends SchedulerError {
  readonly kind = "resource_exhausted";
  constructor(
    readonly reason: "no_hosts" | "no_live_hosts" | "hosts_full",
    message: string,
  ) {
    super(message);
    this.name = "NoCapacityError";
  }
}

/** A vmm did not do what was asked; the caller may retry. */
export class VmmUnavailableError extends SchedulerError {
  readonly kind = "unavailable";
  constructor(message: string, options?: { cause: unknown }) {
    super(message, options);
    this.name = "VmmUnavailableError";
  }
}

/** The sandbox exists but is in a state that does not allow the call. */
export class WrongStateError extends SchedulerError {
  readonly kind = "failed_precondition";
  constructor(message: string) {
    super(message);
    this.name = "WrongStateError";
  }
}

export class SnapshotNotFoundError extends SchedulerError {
  readonly kind = "not_found";
  constructor(readonly snapshotId: string) {
    super(`snapshot '${snapshotId}' not found`);
    this.name = "SnapshotNotFoundError";
  }
}

/**
 * A snapshot that must not be restored (unsigned, failed verification, files that do not
 * match what was signed) or that is not ready for the call.
 */
export class SnapshotRefusedError extends SchedulerError {
  readonly kind = "failed_precondition";
  constructor(message: string, options?: { cause: unknown }) {
    super(message, options);
    this.name = "SnapshotRefusedError";
  }
}

/** A name (or id) that is taken. */
export class AlreadyExistsError extends SchedulerError {
  readonly kind = "already_exists";
  constructor(message: string) {
    super(message);
    this.name = "AlreadyExistsError";
  }
}

/** An upstream other than a vmm (the snapshot service) did not answer; the caller may retry. */
export class UpstreamUnavailableError extends SchedulerError {
  readonly kind = "unavailable";
  constructor(message: string, options?: { cause: unknown }) {
    super(message, options);
    this.name = "UpstreamUnavailableError";
  }
}

/** A named cause of exhaustion that is not placement (e.g. the snapshot's own host is full). */
export class HostFullError extends SchedulerError {
  readonly kind = "resource_exhausted";
  constructor(message: string) {
    super(message);
    this.name = "HostFullError";
  }
}

export class InvalidArgumentError extends SchedulerError {
  readonly kind = "invalid_argument";
  constructor(message: string) {
    super(message);
    this.name = "InvalidArgumentError";
  }
}

/** A request over a size limit (a build context tar). */
export class TooLargeError extends SchedulerError {
  readonly kind = "resource_exhausted";
  constructor(message: string) {
    super(message);
    this.name = "TooLargeError";
  }
}

/** The caller may see it but not change it (a built-in template, another key's public one). */
export class PermissionDeniedError extends SchedulerError {
  readonly kind = "permission_denied";
  constructor(message: string) {
    super(message);
    this.name = "PermissionDeniedError";
  }
}

const CODES: Record<ErrorKind, Code> = {
  not_found: Code.NotFound,
  failed_precondition: Code.FailedPrecondition,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
  invalid_argument: Code.InvalidArgument,
  already_exists: Code.AlreadyExists,
  unauthenticated: Code.Unauthenticated,
  permission_denied: Code.PermissionDenied,
};

/**
 * The one mapping from errors to the wire. Domain errors keep their message; the database
 * being down is Unavailable (retry); everything else
 * (bugs, database errors, unexpected upstream errors) is logged here with its detail and sent
 * as a generic Internal error.
 */
export function toConnectError(
  err: unknown,
  logger: Logger,
  fields: Record<string, unknown> = {},
): ConnectError {
  if (err instanceof SchedulerError) return new ConnectError(err.message, CODES[err.kind]);
  if (err instanceof DatabaseUnavailableError) {
    logger.warn({ ...fields, err: err.cause }, "database unavailable");
    return new ConnectError(err.message, Code.Unavailable);
  }
  logger.error({ ...fields, err }, "internal error");
  return new ConnectError("internal error", Code.Internal);
}
