import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "@dnah/platform";

/**
 * What went wrong, independent of the wire. Each kind maps to exactly one Connect code in
 * `toConnectError`; anything that is not a SchedulerError is an internal error.
 */
export type ErrorKind =
  | "not_found"
  | "failed_precondition"
  | "resource_exhausted"
  | "unavailable"
  | "invalid_argument";

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
  constructor(readonly templateId: string) {
    super(`template '${templateId}' not found`);
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

export class InvalidArgumentError extends SchedulerError {
  readonly kind = "invalid_argument";
  constructor(message: string) {
    super(message);
    this.name = "InvalidArgumentError";
  }
}

const CODES: Record<ErrorKind, Code> = {
  not_found: Code.NotFound,
  failed_precondition: Code.FailedPrecondition,
  resource_exhausted: Code.ResourceExhausted,
  unavailable: Code.Unavailable,
  invalid_argument: Code.InvalidArgument,
};

/**
 * The one mapping from errors to the wire. Domain errors keep their message; everything else
 * (bugs, database errors, unexpected upstream errors) is logged here with its detail and sent
 * as a generic Internal error.
 */
export function toConnectError(
  err: unknown,
  logger: Logger,
  fields: Record<string, unknown> = {},
): ConnectError {
  if (err instanceof SchedulerError) return new ConnectError(err.message, CODES[err.kind]);
  logger.error({ ...fields, err }, "internal error");
  return new ConnectError("internal error", Code.Internal);
}
