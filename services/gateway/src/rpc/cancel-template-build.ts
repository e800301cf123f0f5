import type { TemplateBuild } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { RpcDeps } from "./deps.js";
import { callOptions, fromTemplateScheduler, type TemplateCallOptions } from "./template-calls.js";

/** Stops a running build; the template keeps its last good build. */
export async function cancelTemplateBuild(
  deps: RpcDeps,
  req: { templateId: string; buildId: string },
  opts: TemplateCallOptions,
): Promise<TemplateBuild> {
  try {
    const res = await deps.scheduler.cancelTemplateBuild(
      { ...req, owner: opts.owner },
      callOptions(opts, 30_000),
    );
    if (res.build === undefined) throw new Error("scheduler CancelTemplateBuild answered without a build");
    return res.build;
  } catch (err) {
    throw fromTemplateScheduler(err);
  }
}
