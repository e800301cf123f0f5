import type { RpcDeps } from "./deps.js";
import { callOptions, fromTemplateScheduler, type TemplateCallOptions } from "./template-calls.js";

/** Whether a build context tar is stored already (so a client uploads it once). */
export async function hasTemplateFiles(
  deps: RpcDeps,
  sha256: string,
  opts: TemplateCallOptions,
): Promise<boolean> {
  try {
    return (await deps.scheduler.hasTemplateFiles({ sha256 }, callOptions(opts))).present;
  } catch (err) {
    throw fromTemplateScheduler(err);
  }
}

/**
 * The sha256 of the context tar the caller named `alias` when it uploaded it (E2B's filesHash),
 * or undefined when it never did. Aliases are per caller.
 */
export async function templateFilesByAlias(
  deps: RpcDeps,
  alias: string,
  opts: TemplateCallOptions,
): Promise<string | undefined> {
  try {
    const res = await deps.scheduler.hasTemplateFiles({ owner: opts.owner, alias }, callOptions(opts));
    return res.present ? res.sha256 : undefined;
  } catch (err) {
    throw fromTemplateScheduler(err);
  }
}
