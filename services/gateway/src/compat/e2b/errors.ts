import type { Logger } from "@dnah/platform";
import { classify, type ErrorKind, SandboxNotFoundError, TemplateNotFoundError } from "../../errors.js";

/**
 * THE table of the E2B compatibility surface (STYLE rule 8): what the `e2b` SDK is told for
 * each kind of failure. Control-API bodies are E2B's `Error` schema `{code, message,
 * error_code?}` with `code` equal to the HTTP status; the SDK branches on that `code` (404 →
 * `SandboxNotFoundError` / `false` from kill, 409 → `false` from pause: "already paused"), on
 * 401 (`AuthenticationError`), 429 (`RateLimitError`, after retrying on its own while
 * `Retry-After` fits its timeout) and 503 (`ServiceBusyError`). Everything not listed is a 500
 * with a generic message; its detail is only logged.
 */
export const E2B_ERROR_TABLE = Object.freeze({
  invalid_argument: { status: 400 },
  payload_too_large: { status: 400 },
  unsupported_media_type: { status: 400 },
  unauthenticated: { status: 401, message: "Invalid API key" },
  // A built-in template cannot be rebuilt or deleted; a template upload URL's bad signature.
  permission_denied: { status: 403 },
  not_found: { status: 404 },
  // Wrong state for the call: pausing a paused sandbox, resuming a running one (E2B: 409).
  failed_precondition: { status: 409 },
  already_exists: { status: 409 },
  // Over the key's request budget (auth/rate-limit.ts); the reply carries Retry-After.
  rate_limited: { status: 429 },
  canceled: { status: 499 },
  unimplemented: { status: 501 },
  // A dependency (scheduler, vmm, API-key store) is down; the SDK raises ServiceBusyError.
  unavailable: { status: 503 },
  deadline_exceeded: { status: 504 },
  resource_exhausted: {
    status: 503,
    message: "No capacity available for a new sandbox, retry later",
    errorCode: "sandbox_capacity_unavailable",
  },
} satisfies Partial<Record<ErrorKind, { status: number; message?: string; errorCode?: string }>>);

/** The body E2B's sandbox proxy sends for an unknown, killed or unreachable sandbox. */
export const SANDBOX_NOT_FOUND_STATUS = 502;
export function sandboxNotFoundBody(sandboxId: string) {
  return { sandboxId, message: "The sandbox was not found", code: SANDBOX_NOT_FOUND_STATUS };
}

/** A sandbox id on the sandbox URL that E2B's proxy would refuse (`^[a-z0-9]+$`). */
export const BAD_SANDBOX_ID_STATUS = 400;
export function badSandboxIdBody() {
  return { code: BAD_SANDBOX_ID_STATUS, message: "Invalid sandbox ID" };
}

/**
 * A signed `/files` URL without a sandbox id whose signature no E2B sandbox's token
 * reproduces (tampered, or its sandbox is gone): envd's answer to a bad signature.
 */
export const UNROUTED_SIGNATURE_STATUS = 401;
export function unroutedSignatureBody() {
  return { code: UNROUTED_SIGNATURE_STATUS, message: "invalid signature" };
}

export interface E2bErrorBody {
  code: number;
  message: string;
  error_code?: string;
}

/** The status and body for any thrown value. Internal errors are logged with the request id. */
export function toE2bError(
  err: unknown,
  ctx: { logger: Logger; requestId: string; contentType?: string | undefined },
): { status: number; body: E2bErrorBody } {
  const c = classify(err, ctx.contentType);
  if (c.kind === "not_found") {
    // E2B's own wording; the SDK prints it after the status.
    const message =
      err instanceof SandboxNotFoundError
        ? `Sandbox ${err.sandboxId} not found`
        : err instanceof TemplateNotFoundError
          ? `Template ${err.templateId} not found`
          : (c.message ?? "Not found");
    return { status: 404, body: { code: 404, message } };
  }
  const row = (
    E2B_ERROR_TABLE as Partial<Record<ErrorKind, { status: number; message?: string; errorCode?: string }>>
  )[c.kind];
  if (row === undefined || c.message === undefined) {
    ctx.logger.error({ err, requestId: ctx.requestId }, "internal error (e2b api)");
    return {
      status: 500,
      body: { code: 500, message: `Internal server error (request id ${ctx.requestId})` },
    };
  }
  const body: E2bErrorBody = { code: row.status, message: row.message ?? c.message };
  if (row.errorCode !== undefined) body.error_code = row.errorCode;
  return { status: row.status, body };
}

/**
 * An error reported inside a successful answer (one clone of a fork, `SandboxForkResult`):
 * the same table, by kind. `message` undefined is internal: the caller has logged the detail.
 */
export function e2bErrorOfKind(kind: ErrorKind, message: string | undefined): E2bErrorBody {
  if (kind === "not_found") return { code: 404, message: message ?? "Not found" };
  const row = (
    E2B_ERROR_TABLE as Partial<Record<ErrorKind, { status: number; message?: string; errorCode?: string }>>
  )[kind];
  if (row === undefined || message === undefined) return { code: 500, message: "Internal server error" };
  const body: E2bErrorBody = { code: row.status, message: row.message ?? message };
  if (row.errorCode !== undefined) body.error_code = row.errorCode;
  return body;
}
