import { create } from "@bufbuild/protobuf";
import {
  type UpdateLifecycleRequest,
  type UpdateLifecycleResponse,
  UpdateLifecycleResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { InvalidArgumentError, SandboxNotFoundError } from "../errors.js";
import { fromScheduler, SCHEDULER_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { toSandbox } from "./sandbox-view.js";
import { checkSandboxId } from "./validate.js";

/**
 * UpdateLifecycle: changes the auto-stop / auto-archive / auto-delete settings given and keeps
 * the others. The scheduler checks the ranges and records the change as an event. Not a
 * working call: the idle clock does not move.
 */
export async function updateLifecycle(
  deps: RpcDeps,
  req: UpdateLifecycleRequest,
  opts: CallOptions = {},
): Promise<UpdateLifecycleResponse> {
  checkSandboxId(req.sandboxId);
  if (
    req.autoStopMinutes === undefined &&
    req.autoArchiveDays === undefined &&
    req.autoDeleteDays === undefined
  )
    throw new InvalidArgumentError("give at least one of autoStopMinutes, autoArchiveDays, autoDeleteDays");
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["updateLifecycle"]>>;
  try {
    res = await deps.scheduler.updateLifecycle(
      {
        sandboxId: req.sandboxId,
        ...(req.autoStopMinutes !== undefined ? { autoStopMinutes: req.autoStopMinutes } : {}),
        ...(req.autoArchiveDays !== undefined ? { autoArchiveDays: req.autoArchiveDays } : {}),
        ...(req.autoDeleteDays !== undefined ? { autoDeleteDays: req.autoDeleteDays } : {}),
      },
      { timeoutMs: SCHEDULER_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new SandboxNotFoundError(req.sandboxId, { cause }));
  }
  if (res.sandbox === undefined) throw new Error("scheduler UpdateLifecycle answered without a sandbox");
  deps.logger.info(
    { "sandbox.id": req.sandboxId, lifecycle: res.sandbox.lifecycle },
    "sandbox lifecycle updated",
  );
  return create(UpdateLifecycleResponseSchema, { sandbox: toSandbox(res.sandbox) });
}
