import { Code, ConnectError } from "@connectrpc/connect";
import { DatabaseUnavailableError, type Logger, TunnelError } from "@dnah/platform";

/**
 * Every error the gateway reports, by kind. The kind is also the `code` of the REST body
 * `{code, message}`. THE one table: REST status and Connect code per kind.
 *
 * Choice: `resource_exhausted` (no capacity to place a sandbox) is 503, not 429: it is the
 * server that is temporarily full, and a retry later may work. The code string still tells it
 * apart from `unavailable`. A caller over its request budget (auth/rate-limit.ts) is
 * `rate_limited`: 429 with `Retry-After`, and Connect's ResourceExhausted.
 */
export const ERROR_TABLE = Object.freeze({
  invalid_argument: { httpStatus: 400, connectCode: Code.InvalidArgument },
  unauthenticated: { httpStatus: 401, connectCode: Code.Unauthenticated },
  permission_denied: { httpStatus: 403, connectCode: Code.PermissionDenied },
  not_found: { httpStatus: 404, connectCode: Code.NotFound },
  already_exists: { httpStatus: 409, connectCode: Code.AlreadyExists },
  failed_precondition: { httpStatus: 409, connectCode: Code.FailedPrecondition },
  payload_too_large: { httpStatus: 413, connectCode: Code.ResourceExhausted },
  unsupported_media_type: { httpStatus: 415, connectCode: Code.InvalidArgument },
  rate_limited: { httpStatus: 429, connectCode: Code.ResourceExhausted },
  canceled: { httpStatus: 499, connectCode: Code.Canceled },
  internal: { httpStatus: 500, connectCode: Code.Internal },
  unimplemented: { httpStatus: 501, connectCode: Code.Unimplemented },
  unavailable: { httpStatus: 503, connectCode: Code.Unavailable },
  resource_exhausted: { httpStatus: 503, connectCode: Code.ResourceExhausted },
  deadline_exceeded: { httpStatus: 504, connectCode: Code.DeadlineExceeded },
} satisfies Record<string, { httpStatus: number; connectCode: Code }>);

export type ErrorKind = keyof typeof ERROR_TABLE;

/**
 * Connect codes coming back from the scheduler or the agent. `pass` keeps the upstream
 * message (it is meant for the caller: "cwd '/x' does not exist"); otherwise the fixed
 * message is used and the upstream one is only logged. An upstream `unauthenticated` or
 * `permission_denied` is the gateway's own credentials failing, not the caller's: internal.
 */
export const UPSTREAM_CODES: Readonly<Record<Code, { kind: ErrorKind; pass: boolean; message: string }>> =
  Object.freeze({
    [Code.Canceled]: { kind: "canceled", pass: false, message: "request canceled" },
    [Code.Unknown]: { kind: "internal", pass: false, message: "" },
    [Code.InvalidArgument]: { kind: "invalid_argument", pass: true, message: "invalid argument" },
    [Code.DeadlineExceeded]: { kind: "deadline_exceeded", pass: false, message: "upstream call timed out" },
    [Code.NotFound]: { kind: "not_found", pass: true, message: "not found" },
    [Code.AlreadyExists]: { kind: "already_exists", pass: true, message: "already exists" },
    [Code.PermissionDenied]: { kind: "internal", pass: false, message: "" },
    [Code.ResourceExhausted]: { kind: "resource_exhausted", pass: true, message: "no capacity available" },
    [Code.FailedPrecondition]: { kind: "failed_precondition", pass: true, message: "failed precondition" },
    [Code.Aborted]: { kind: "failed_precondition", pass: true, message: "aborted" },
    [Code.OutOfRange]: { kind: "invalid_argument", pass: true, message: "out of range" },
    [Code.Unimplemented]: { kind: "unimplemented", pass: false, message: "operation not supported upstream" },
    [Code.Internal]: { kind: "internal", pass: false, message: "" },
    [Code.Unavailable]: { kind: "unavailable", pass: false, message: "upstream service unavailable" },
    [Code.DataLoss]: { kind: "internal", pass: false, message: "" },
    [Code.Unauthenticated]: { kind: "internal", pass: false, message: "" },
  });

const CODE_BY_NAME: ReadonlyMap<string, Code> = new Map(
  Object.entries(Code)
    .filter((e): e is [string, Code] => typeof e[1] === "number")
    .map(([name, code]) => [
      name.replace(/[A-Z]/g, (c, i: number) => (i === 0 ? "" : "_") + c.toLowerCase()),
      code,
    ]),
);

/**
 * An upstream error reported as data rather than thrown (a fork's clone that failed): its
 * Connect code name (`resource_exhausted`) and message, classified like a thrown one.
 * `message` undefined: internal; the caller logs the detail and shows a generic message.
 */
export function classifyUpstream(
  codeName: string,
  message: string,
): { kind: ErrorKind; message: string | undefined } {
  const code = CODE_BY_NAME.get(codeName) ?? Code.Unknown;
  const row = UPSTREAM_CODES[code];
  if (row.kind === "internal") return { kind: "internal", message: undefined };
  return { kind: row.kind, message: row.pass && message !== "" ? message : row.message };
}

/** The base of every typed error the gateway throws. */
export class GatewayError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = new.target.name;
  }
}

export class InvalidArgumentError extends GatewayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("invalid_argument", message, options);
  }
}

export class UnauthenticatedError extends GatewayError {
  constructor(message: string) {
    super("unauthenticated", message);
  }
}

/** The caller may see it but not change it (a built-in template, another key's public one). */
export class PermissionDeniedError extends GatewayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("permission_denied", message, options);
  }
}

export class SandboxNotFoundError extends GatewayError {
  constructor(
    readonly sandboxId: string,
    options?: { cause?: unknown },
  ) {
    super("not_found", `sandbox '${shorten(sandboxId)}' not found`, options);
  }
}

export class TemplateNotFoundError extends GatewayError {
  constructor(
    readonly templateId: string,
    options?: { cause?: unknown },
  ) {
    super("not_found", `template '${shorten(templateId)}' not found`, options);
  }
}

export class SnapshotNotFoundError extends GatewayError {
  constructor(
    readonly snapshotId: string,
    options?: { cause?: unknown },
  ) {
    super("not_found", `snapshot '${shorten(snapshotId)}' not found`, options);
  }
}

export class FileNotFoundError extends GatewayError {
  constructor(
    readonly path: string,
    options?: { cause?: unknown },
  ) {
    super("not_found", `path '${shorten(path)}' not found`, options);
  }
}

/** The sandbox exists but is not in a state that allows the call (paused, stopped…). */
export class FailedPreconditionError extends GatewayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("failed_precondition", message, options);
  }
}

export class PayloadTooLargeError extends GatewayError {
  constructor(message: string) {
    super("payload_too_large", message);
  }
}

/** No host has room for another sandbox. */
export class CapacityError extends GatewayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("resource_exhausted", message, options);
  }
}

/** The caller spent its request budget for the current window; `Retry-After` says when to retry. */
export class RateLimitedError extends GatewayError {
  constructor(
    message: string,
    readonly retryAfterSeconds: number,
  ) {
    super("rate_limited", message);
  }
}

/** A dependency (scheduler, vmm, agent) cannot be reached right now; retrying may work. */
export class UnavailableError extends GatewayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("unavailable", message, options);
  }
}

export class DeadlineExceededError extends GatewayError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("deadline_exceeded", message, options);
  }
}

/** What a caller is told. */
export interface ErrorResponse {
  httpStatus: number;
  code: ErrorKind;
  message: string;
}

interface Classified {
  kind: ErrorKind;
  /** undefined: an internal error; the caller gets a generic message with the request id. */
  message: string | undefined;
}

/** Decides what any thrown value means to a caller. Pure: logging is the caller's. */
export function classify(err: unknown, requestContentType?: string): Classified {
  if (err instanceof GatewayError) {
    return { kind: err.kind, message: err.kind === "internal" ? undefined : err.message };
  }
  // The gateway's own tables (API keys, E2B and Daytona records) while Postgres is down.
  if (findCause(err, (e): e is DatabaseUnavailableError => e instanceof DatabaseUnavailableError))
    return { kind: "unavailable", message: "the database is unavailable; retry shortly" };
  const tunnel = findCause(err, (e): e is TunnelError => e instanceof TunnelError);
  if (tunnel !== undefined) {
    if (tunnel.status === 404) return { kind: "not_found", message: "sandbox not found" };
    // The vmm refuses tunnels to a paused sandbox: "sandbox '<id>' is paused; resume it first".
    if (tunnel.status === 409)
      return { kind: "failed_precondition", message: tunnel.message || "sandbox is paused; resume it first" };
    return { kind: "unavailable", message: "sandbox agent unreachable" };
  }
  if (err instanceof ConnectError) {
    // The connection broke (a service restarting): not the upstream's answer, whatever code
    // the client library gave it (connect-node calls ECONNRESET "aborted").
    if (lostConnection(err)) return { kind: "unavailable", message: "upstream connection lost; retry" };
    const row = UPSTREAM_CODES[err.code];
    if (row.kind === "internal") return { kind: "internal", message: undefined };
    return { kind: row.kind, message: row.pass && err.rawMessage !== "" ? err.rawMessage : row.message };
  }
  const fst = fastifyError(err);
  if (fst !== undefined) return classifyFastify(fst, requestContentType);
  return { kind: "internal", message: undefined };
}

/** Node's codes for a connection that broke under a call (as opposed to an answer). */
const LOST_CONNECTION = new Set([
  "ECONNRESET",
  "EPIPE",
  "ECONNREFUSED",
  "ERR_STREAM_DESTROYED",
  "ERR_STREAM_PREMATURE_CLOSE",
]);

/** Whether a Connect error was made by the client from a broken connection (pure). */
export function lostConnection(err: ConnectError): boolean {
  return (
    findCause(err.cause, (e): e is NodeJS.ErrnoException =>
      LOST_CONNECTION.has(String((e as NodeJS.ErrnoException).code)),
    ) !== undefined || /^socket hang up$/.test(err.rawMessage)
  );
}

/** The REST answer for an error; internal errors are logged with the request id. */
export function toErrorResponse(
  err: unknown,
  ctx: { logger: Logger; requestId: string; contentType?: string | undefined },
): ErrorResponse {
  const c = classify(err, ctx.contentType);
  return { httpStatus: ERROR_TABLE[c.kind].httpStatus, code: c.kind, message: messageFor(c, err, ctx) };
}

/** The Connect answer for an error; internal errors are logged with the request id. */
export function toConnectError(err: unknown, ctx: { logger: Logger; requestId: string }): ConnectError {
  const c = classify(err);
  return new ConnectError(messageFor(c, err, ctx), ERROR_TABLE[c.kind].connectCode);
}

function messageFor(c: Classified, err: unknown, ctx: { logger: Logger; requestId: string }): string {
  // What the caller cannot see: the transport failure behind an `unavailable`.
  if (c.kind === "unavailable")
    ctx.logger.warn({ requestId: ctx.requestId, cause: causeChain(err) }, c.message ?? "unavailable");
  if (c.message !== undefined) return c.message;
  ctx.logger.error({ err, requestId: ctx.requestId }, "internal error");
  return `internal error (request id ${ctx.requestId})`;
}

interface FastifyLikeError {
  code: string;
  statusCode: number;
  message: string;
}

function fastifyError(err: unknown): FastifyLikeError | undefined {
  if (typeof err !== "object" || err === null) return undefined;
  const e = err as Partial<FastifyLikeError>;
  if (typeof e.code !== "string" || !e.code.startsWith("FST_") || typeof e.statusCode !== "number")
    return undefined;
  return e as FastifyLikeError;
}

/** Fastify's own request errors (parsing, limits) in our vocabulary; never its default shape. */
function classifyFastify(err: FastifyLikeError, contentType: string | undefined): Classified {
  switch (err.code) {
    case "FST_ERR_CTP_INVALID_JSON_BODY":
      return { kind: "invalid_argument", message: "request body is not valid JSON" };
    case "FST_ERR_CTP_EMPTY_JSON_BODY":
      return { kind: "invalid_argument", message: "request body is empty; send a JSON object" };
    case "FST_ERR_CTP_BODY_TOO_LARGE":
      return { kind: "payload_too_large", message: "request body is too large" };
    case "FST_ERR_CTP_INVALID_MEDIA_TYPE":
    case "FST_ERR_CTP_INVALID_CONTENT_TYPE": {
      const shown = contentType === undefined ? "none" : `'${shorten(contentType)}'`;
      return { kind: "unsupported_media_type", message: `unsupported content type ${shown}` };
    }
  }
  if (err.statusCode === 413) return { kind: "payload_too_large", message: "request body is too large" };
  if (err.statusCode === 415) return { kind: "unsupported_media_type", message: "unsupported content type" };
  if (err.statusCode >= 400 && err.statusCode < 500)
    return { kind: "invalid_argument", message: err.message };
  return { kind: "internal", message: undefined };
}

/** The first error in the `cause` chain that matches. */
export function findCause<T>(err: unknown, match: (e: unknown) => e is T): T | undefined {
  let cur: unknown = err;
  for (let depth = 0; depth < 8 && cur !== undefined && cur !== null; depth++) {
    if (match(cur)) return cur;
    cur = (cur as { cause?: unknown }).cause;
  }
  return undefined;
}

/** Echoed user input is cut so an error body stays small. */
function shorten(s: string): string {
  return s.length > 200 ? `${s.slice(0, 200)}…` : s;
}

/** The messages of an error and its causes, outermost first (for logs). */
function causeChain(err: unknown): string {
  const parts: string[] = [];
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 6; e = e.cause, depth++)
    parts.push(e.message);
  return parts.join(" <- ");
}
