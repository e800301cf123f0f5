import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "./log.js";

/**
 * Domain errors. Handlers throw `GuestError`s; `toConnectError` (RPCs) and `httpStatusOf`
 * (plain HTTP) are the only places that turn them into wire errors. Messages follow envd's
 * wording where the SDK or users see them.
 */
export type ErrorKind =
  | "invalid_argument"
  | "not_found"
  | "already_exists"
  | "permission_denied"
  | "unauthenticated"
  | "failed_precondition"
  | "no_space"
  | "unimplemented"
  | "unknown"
  | "internal";

export class GuestError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "GuestError";
  }
}

export const invalidArgument = (msg: string, cause?: unknown) =>
  new GuestError("invalid_argument", msg, { cause });
export const notFound = (msg: string, cause?: unknown) => new GuestError("not_found", msg, { cause });
export const alreadyExists = (msg: string) => new GuestError("already_exists", msg);
export const unauthenticated = (msg: string) => new GuestError("unauthenticated", msg);
export const unimplemented = (msg: string) => new GuestError("unimplemented", msg);
export const internal = (msg: string, cause?: unknown) => new GuestError("internal", msg, { cause });

const CONNECT_CODE: Record<ErrorKind, Code> = {
  invalid_argument: Code.InvalidArgument,
  not_found: Code.NotFound,
  already_exists: Code.AlreadyExists,
  permission_denied: Code.PermissionDenied,
  unauthenticated: Code.Unauthenticated,
  failed_precondition: Code.FailedPrecondition,
  no_space: Code.ResourceExhausted,
  unimplemented: Code.Unimplemented,
  unknown: Code.Unknown,
  internal: Code.Internal,
};

const HTTP_STATUS: Record<ErrorKind, number> = {
  invalid_argument: 400,
  not_found: 404,
  already_exists: 409,
  permission_denied: 403,
  unauthenticated: 401,
  failed_precondition: 400,
  no_space: 507,
  unimplemented: 501,
  unknown: 500,
  internal: 500,
};

/** Node's errno code of a system error, if it is one. */
export function errnoOf(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/**
 * Classifies a failed filesystem call. `what` says what was being done ("error opening file");
 * the system message is appended, as envd does with Go's wrapped errors.
 */
export function fsError(err: unknown, what: string): GuestError {
  if (err instanceof GuestError) return err;
  const detail = err instanceof Error ? err.message : String(err);
  const msg = `${what}: ${detail}`;
  switch (errnoOf(err)) {
    case "ENOENT":
      return new GuestError("not_found", msg, { cause: err });
    case "EACCES":
    case "EPERM":
      return new GuestError("permission_denied", msg, { cause: err });
    case "ENOSPC":
    case "EDQUOT":
      return new GuestError("no_space", msg, { cause: err });
    case "ENOTDIR":
    case "EISDIR":
    case "EINVAL":
    case "ENAMETOOLONG":
    case "ELOOP":
      return new GuestError("invalid_argument", msg, { cause: err });
    default:
      return new GuestError("internal", msg, { cause: err });
  }
}

/** The one mapping from anything thrown inside an RPC to the error the client sees. */
export function toConnectError(err: unknown, log: Logger, procedure: string): ConnectError {
  if (err instanceof ConnectError) return err;
  if (err instanceof GuestError) {
    if (err.kind === "internal" || err.kind === "unknown") {
      log.warn("rpc failed", { procedure, error: err.message, cause: describe(err.cause) });
    }
    return new ConnectError(err.message, CONNECT_CODE[err.kind], undefined, undefined, err);
  }
  log.error("rpc failed unexpectedly", { procedure, error: describe(err) });
  return new ConnectError("internal error", Code.Internal, undefined, undefined, err);
}

/** HTTP status and `{code, message}` body for an error on a plain-HTTP route. */
export function toHttpError(err: unknown, log: Logger, route: string): { status: number; message: string } {
  if (err instanceof GuestError) {
    const status = HTTP_STATUS[err.kind];
    if (status >= 500 && status !== 507) log.warn("request failed", { route, error: err.message });
    return { status, message: err.message };
  }
  log.error("request failed unexpectedly", { route, error: describe(err) });
  return { status: 500, message: "internal error" };
}

function describe(err: unknown): string | undefined {
  if (err === undefined) return undefined;
  return err instanceof Error ? (err.stack ?? err.message) : String(err);
}
