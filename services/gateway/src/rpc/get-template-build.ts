import { setTimeout as sleep } from "node:timers/promises";
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

/** How often a followed build log asks the scheduler for new lines. */
const FOLLOW_POLL_MS = 500;

/**
 * A build's log in pages from `logsOffset` on: every page that has lines and, when `follow`,
 * new pages until the build stops `running` and has nothing more; returns the last page.
 */
export async function* buildLogPages(
  deps: RpcDeps,
  which: { templateId: string; buildId: string },
  logsOffset: number,
  opts: TemplateCallOptions & {
    follow: boolean;
    running: (b: GetTemplateBuildResponse["build"]) => boolean;
    signal: AbortSignal;
  },
): AsyncGenerator<GetTemplateBuildResponse, GetTemplateBuildResponse> {
  let page = await getTemplateBuild(deps, { ...which, logsOffset }, opts);
  for (;;) {
    if (page.logs.length > 0) yield page;
    else if (!opts.follow || !opts.running(page.build)) return page;
    else await sleep(FOLLOW_POLL_MS, undefined, { signal: opts.signal });
    page = await getTemplateBuild(deps, { ...which, logsOffset: page.nextLogsOffset }, opts);
  }
}
