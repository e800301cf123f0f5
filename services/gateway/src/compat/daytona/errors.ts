import type { Logger } from "@dnah/platform";
import { classify, type ErrorKind } from "../../errors.js";

/**
 * Who answered, as the Daytona SDK reads it from the body's `source`: the control API, the
 * toolbox daemon in the sandbox, or the preview proxy. The SDK combines `source` with `code`
 * to pick an error class (`DAYTONA_DAEMON` + `FILE_NOT_FOUND` → `DaytonaFileNotFoundError`).
 */
export type DaytonaSource = "DAYTONA_API" | "DAYTONA_DAEMON" | "DAYTONA_PROXY";

/**
 * THE table of the Daytona compatibility surface (STYLE rule 8): the HTTP status and the
 * `code` string the SDK is told for each kind of gateway failure. The SDK maps the status to
 * its class (400 validation, 401 auth, 404 not found — which `stop()` and `delete()` read as
 * "destroyed" —, 408 timeout, 409 conflict, 429 rate limit, 503 …). Everything not listed is
 * a 500 whose detail is only logged.
 */
export const DAYTONA_ERROR_TABLE = Object.freeze({
  invalid_argument: { status: 400, code: "BAD_REQUEST" },
  payload_too_large: { status: 413, code: "PAYLOAD_TOO_LARGE" },
  unsupported_media_type: { status: 415, code: "INVALID_REQUEST_BODY" },
  unauthenticated: { status: 401, code: "UNAUTHORIZED" },
  permission_denied: { status: 403, code: "FORBIDDEN" },
  not_found: { status: 404, code: "NOT_FOUND" },
  already_exists: { status: 409, code: "CONFLICT" },
  failed_precondition: { status: 409, code: "CONFLICT" },
  deadline_exceeded: { status: 408, code: "REQUEST_TIMEOUT" },
  // Over the key's request budget (auth/rate-limit.ts); the reply carries Retry-After.
  rate_limited: { status: 429, code: "TOO_MANY_REQUESTS" },
  unimplemented: { status: 501, code: "NOT_IMPLEMENTED" },
  unavailable: { status: 503, code: "SERVICE_UNAVAILABLE" },
  resource_exhausted: { status: 503, code: "SERVICE_UNAVAILABLE" },
} satisfies Partial<Record<ErrorKind, { status: number; code: string }>>);

/**
 * A failure with a Daytona-specific code that no gateway kind carries (git's
 * `GIT_AUTH_FAILED`, `PROCESS_EXECUTION_TIMEOUT`, `SESSION_ENDED` …). Thrown by the routes;
 * mapped as is.
 */
export class DaytonaHttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = "DaytonaHttpError";
  }
}

/**
 * The toolbox daemon's own codes (body `source: DAYTONA_DAEMON`) and their HTTP statuses. The
 * SDK picks a class per code (`FILE_NOT_FOUND` → `DaytonaFileNotFoundError`, `GIT_*` …).
 */
export const DAYTONA_DAEMON_CODES = Object.freeze({
  FILE_NOT_FOUND: 404,
  FILE_ACCESS_DENIED: 403,
  INVALID_FILE_PATH: 400,
  FILE_READ_FAILED: 500,
  REQUEST_TIMEOUT: 408,
  PROCESS_NOT_FOUND: 404,
  SESSION_ENDED: 410,
  COMMAND_ALREADY_COMPLETED: 410,
  GIT_AUTH_FAILED: 401,
  GIT_REPO_NOT_FOUND: 404,
  GIT_BRANCH_NOT_FOUND: 404,
  GIT_BRANCH_EXISTS: 409,
  GIT_PUSH_REJECTED: 409,
  GIT_DIRTY_WORKTREE: 409,
  GIT_MERGE_CONFLICT: 409,
  GIT_TRANSPORT_FAILED: 502,
  GIT_REMOTE_REJECTED: 422,
} satisfies Record<string, number>);

export type DaytonaDaemonCode = keyof typeof DAYTONA_DAEMON_CODES;

/** A DaytonaHttpError with a daemon code, its status from the table above. */
export function daemonError(
  code: DaytonaDaemonCode,
  message: string,
  options?: { cause?: unknown },
): DaytonaHttpError {
  return new DaytonaHttpError(DAYTONA_DAEMON_CODES[code], code, message, options);
}

/** `{statusCode, message, code, source, error, timestamp, path, method}` — every field a producer of Daytona's sends. */
export interface DaytonaErrorBody {
  statusCode: number;
  message: string;
  code: string;
  error: string;
  source: DaytonaSource;
  timestamp: string;
  path: string;
  method: string;
}

const REASON: Record<number, string> = {
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  408: "Request Timeout",
  409: "Conflict",
  410: "Gone",
  413: "Payload Too Large",
  415: "Unsupported Media Type",
  422: "Unprocessable Entity",
  429: "Too Many Requests",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
};

/** The status and body for any thrown value. Internal errors are logged with the request id. */
export function toDaytonaError(
  err: unknown,
  ctx: {
    logger: Logger;
    requestId: string;
    source: DaytonaSource;
    method: string;
    path: string;
    contentType?: string | undefined;
  },
): { status: number; body: DaytonaErrorBody } {
  let status: number;
  let code: string;
  let message: string;
  if (err instanceof DaytonaHttpError) {
    ({ status, code, message } = err);
  } else {
    const c = classify(err, ctx.contentType);
    const row = (DAYTONA_ERROR_TABLE as Partial<Record<ErrorKind, { status: number; code: string }>>)[c.kind];
    if (row === undefined || c.message === undefined) {
      ctx.logger.error({ err, requestId: ctx.requestId }, "internal error (daytona)");
      status = 500;
      code = "INTERNAL_SERVER_ERROR";
      message = `Internal server error (request id ${ctx.requestId})`;
    } else {
      ({ status, code } = row);
      message = c.message;
    }
  }
  return {
    status,
    body: {
      statusCode: status,
      message,
      code,
      error: REASON[status] ?? "Error",
      source: ctx.source,
      timestamp: new Date().toISOString(),
      path: ctx.path.split("?", 1)[0] ?? "",
      method: ctx.method,
    },
  };
}
