import { Code, ConnectError } from "@connectrpc/connect";
import { GatewayError, PermissionDeniedError } from "../errors.js";
import { fromScheduler, SCHEDULER_TIMEOUT_MS } from "../sandbox/scheduler.js";

/**
 * What every template call shares: the caller (its API key id owns what it builds) and the
 * one translation of scheduler failures. The scheduler's messages for templates are meant for
 * the caller ("build context … is not uploaded", "template 'x' is built in …").
 */
export interface TemplateCallOptions {
  /** The caller's API key id. */
  owner: string;
  signal?: AbortSignal | undefined;
}

export function callOptions(opts: TemplateCallOptions, timeoutMs = SCHEDULER_TIMEOUT_MS) {
  return { timeoutMs, ...(opts.signal ? { signal: opts.signal } : {}) };
}

/** A scheduler failure of a template call as a gateway error. */
export function fromTemplateScheduler(err: unknown): unknown {
  if (err instanceof ConnectError && err.code === Code.PermissionDenied)
    return new PermissionDeniedError(err.rawMessage, { cause: err });
  return fromScheduler(
    err,
    (cause) => new GatewayError("not_found", (cause as ConnectError).rawMessage, { cause }),
  );
}
