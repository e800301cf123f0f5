import type { Template } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { RpcDeps } from "./deps.js";
import { callOptions, fromTemplateScheduler, type TemplateCallOptions } from "./template-calls.js";

/** A template (by id or alias) the caller sees: public, built in, or its own. */
export async function getTemplate(
  deps: RpcDeps,
  templateId: string,
  opts: TemplateCallOptions,
): Promise<Template> {
  try {
    const res = await deps.scheduler.getTemplate({ templateId, owner: opts.owner }, callOptions(opts));
    if (res.template === undefined) throw new Error("scheduler GetTemplate answered without a template");
    return res.template;
  } catch (err) {
    throw fromTemplateScheduler(err);
  }
}
