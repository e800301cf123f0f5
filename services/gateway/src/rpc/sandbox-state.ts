import type { Sandbox } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SandboxNotFoundError } from "../errors.js";
import {
  fromScheduler,
  SCHEDULER_CREATE_TIMEOUT_MS,
  SCHEDULER_SNAPSHOT_TIMEOUT_MS,
} from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { toSandbox } from "./sandbox-view.js";
import { checkSandboxId } from "./validate.js";

/**
 * Pause or resume through the scheduler, which freezes or thaws the sandbox on its host. Our
 * kept-alive tunnels and cached lookup of the sandbox are dropped either way: after a pause,
 * later calls find it paused (409) instead of waiting on a frozen agent; after a resume, the
 * next call sees it running. Resuming an archived sandbox restores it from archive storage
 * first, and archiving writes a snapshot and moves it: both get the restore's deadline.
 */
export async function changeSandboxState(
  deps: RpcDeps,
  sandboxId: string,
  to: "pause" | "resume" | "archive",
  opts: CallOptions,
): Promise<Sandbox> {
  checkSandboxId(sandboxId);
  const call =
    to === "pause"
      ? deps.scheduler.pauseSandbox
      : to === "resume"
        ? deps.scheduler.resumeSandbox
        : deps.scheduler.archiveSandbox;
  let res: Awaited<ReturnType<typeof call>>;
  try {
    res = await call(
      { sandboxId },
      {
        timeoutMs: to === "pause" ? SCHEDULER_CREATE_TIMEOUT_MS : SCHEDULER_SNAPSHOT_TIMEOUT_MS,
        ...(opts.signal ? { signal: opts.signal } : {}),
      },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new SandboxNotFoundError(sandboxId, { cause }));
  } finally {
    deps.agents.forget(sandboxId);
  }
  if (res.sandbox === undefined) throw new SandboxNotFoundError(sandboxId);
  deps.logger.info({ "sandbox.id": sandboxId }, `sandbox ${to === "pause" ? "paused" : `${to}d`}`);
  return toSandbox(res.sandbox);
}
