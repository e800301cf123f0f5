import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "@dnah/platform";

/** Base for errors whose message is safe to send to a caller. */
export abstract class SnapshotError extends Error {
  abstract readonly code: Code;
}

/** The request is malformed; `problems` lists every issue found, not only the first. */
export class InvalidArgumentError extends SnapshotError {
  readonly code = Code.InvalidArgument;
  constructor(readonly problems: readonly string[]) {
    super(problems.join("; "));
    this.name = "InvalidArgumentError";
  }
}

/** The named key does not exist (never did, or its file was deleted). */
export class KeyNotFoundError extends SnapshotError {
  readonly code = Code.NotFound;
  constructor(readonly kid: string) {
    super(`no key with kid ${kid}`);
    this.name = "KeyNotFoundError";
  }
}

/** The request is well formed but the keys are not in a state that allows it. */
export class FailedPreconditionError extends SnapshotError {
  readonly code = Code.FailedPrecondition;
  constructor(message: string) {
    super(message);
    this.name = "FailedPreconditionError";
  }
}

/** The service has not started (keys not loaded) or is closing; callers may retry. */
export class NotReadyError extends SnapshotError {
  readonly code = Code.Unavailable;
  constructor(message = "snapshot service is not ready") {
    super(message);
    this.name = "NotReadyError";
  }
}

/**
 * The key directory is unusable (unreadable, inconsistent, unwritable). Its message names files
 * and problems but never file contents, which hold private keys; it reaches callers only as a
 * generic Internal error.
 */
export class KeyStoreError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "KeyStoreError";
  }
}

/**
 * The one mapping from anything thrown inside the service to what a caller sees. Errors we did
 * not anticipate become Internal with a generic message; their detail is logged, never sent.
 */
export function toConnectError(err: unknown, logger: Logger, rpc: string): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof SnapshotError) return new ConnectError(err.message, err.code, undefined, undefined, err);
  logger.error({ err, rpc }, "snapshot rpc failed");
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}
