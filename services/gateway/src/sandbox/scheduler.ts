import { Code, ConnectError } from "@connectrpc/connect";
import {
  CapacityError,
  DeadlineExceededError,
  FailedPreconditionError,
  InvalidArgumentError,
  UnavailableError,
} from "../errors.js";

/** Per-call deadlines towards the scheduler; a create may spawn a VM cold. */
export const SCHEDULER_TIMEOUT_MS = 10_000;
export const SCHEDULER_CREATE_TIMEOUT_MS = 60_000;
/**
 * Snapshot, restore and delete-snapshot: a microVM's memory written or read under TCG, and
 * every file hashed, take well over a create. The scheduler bounds its own calls below this.
 */
export const SCHEDULER_SNAPSHOT_TIMEOUT_MS = 300_000;
/** A fork is one snapshot plus `count` restores, which the scheduler may run one by one. */
export function schedulerForkTimeoutMs(count: number): number {
  return SCHEDULER_SNAPSHOT_TIMEOUT_MS * (1 + count);
}

/**
 * Turns a scheduler failure into a typed gateway error. `notFound` builds the error that a
 * NOT_FOUND means for this call (an unknown sandbox, or an unknown template on create).
 */
export function fromScheduler(err: unknown, notFound: (cause: unknown) => Error): unknown {
  if (!(err instanceof ConnectError)) return err;
  switch (err.code) {
    case Code.NotFound:
      return notFound(err);
    case Code.Unavailable:
      return new UnavailableError("scheduler unavailable; retry", { cause: err });
    case Code.DeadlineExceeded:
      return new DeadlineExceededError("scheduler did not answer in time", { cause: err });
    case Code.ResourceExhausted:
      return new CapacityError(err.rawMessage || "no capacity for a new sandbox", { cause: err });
    case Code.InvalidArgument:
      return new InvalidArgumentError(err.rawMessage, { cause: err });
    case Code.FailedPrecondition:
      return new FailedPreconditionError(err.rawMessage, { cause: err });
    default:
      // Internal, Unauthenticated (our own credentials) …: the error table makes these a
      // generic internal error and logs the detail.
      return err;
  }
}
