import type { RpcDeps } from "./deps.js";
import { callOptions, fromTemplateScheduler, type TemplateCallOptions } from "./template-calls.js";

/** Deletes one of the caller's templates; sandboxes running from it keep running. */
export async function deleteTemplate(
  deps: RpcDeps,
  templateId: string,
  opts: TemplateCallOptions,
): Promise<void> {
  try {
    await deps.scheduler.deleteTemplate({ templateId, owner: opts.owner }, callOptions(opts));
  } catch (err) {
    throw fromTemplateScheduler(err);
  }
  deps.logger.info({ "template.id": templateId }, "template deleted");
}
