import type { GetTemplateBuildResponse } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { RpcDeps } from "./deps.js";
import { callOptions, fromTemplateScheduler, type TemplateCallOptions } from "./template-calls.js";

/** A build of one of the caller's templates, with its log lines from `logsOffset` on. */
export async function getTemplateBuild(
  deps: RpcDeps,
  req: { templateId: string; buildId: string; logsOffset: number },
  opts: TemplateCallOptions,
): Promise<GetTemplateBuildResponse> {
  try {
    return await deps.scheduler.getTemplateBuild({ ...req, owner: opts.owner }, callOptions(opts));
  } catch (err) {
    throw fromTemplateScheduler(err);
  }
}
