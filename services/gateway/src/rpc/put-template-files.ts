import type { RpcDeps } from "./deps.js";
import { callOptions, fromTemplateScheduler, type TemplateCallOptions } from "./template-calls.js";

/** A context tar of up to tens of MiB crosses to the scheduler whole. */
const PUT_TIMEOUT_MS = 120_000;

/**
 * Stores a build context tar (its bytes, already hashed to `sha256` by the caller); `alias`
 * also names it for the caller (see templateFilesByAlias).
 */
export async function putTemplateFiles(
  deps: RpcDeps,
  sha256: string,
  data: Uint8Array,
  opts: TemplateCallOptions,
  alias?: string,
): Promise<void> {
  try {
    await deps.scheduler.putTemplateFiles(
      { sha256, data, ...(alias !== undefined ? { owner: opts.owner, alias } : {}) },
      callOptions(opts, PUT_TIMEOUT_MS),
    );
  } catch (err) {
    throw fromTemplateScheduler(err);
  }
}
