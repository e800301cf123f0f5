import type { Template } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { RpcDeps } from "./deps.js";
import { callOptions, fromTemplateScheduler, type TemplateCallOptions } from "./template-calls.js";

/** The templates the caller sees: public ones, the built-in ones and its own. */
export async function listTemplates(deps: RpcDeps, opts: TemplateCallOptions): Promise<Template[]> {
  try {
    return (await deps.scheduler.listTemplates({ owner: opts.owner }, callOptions(opts))).templates;
  } catch (err) {
    throw fromTemplateScheduler(err);
  }
}
