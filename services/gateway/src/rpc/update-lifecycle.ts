import { create } from "@bufbuild/protobuf";
import {
  type UpdateLifecycleRequest,
  type UpdateLifecycleResponse,
  UpdateLifecycleResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { InvalidArgumentError, SandboxNotFoundError } from "../errors.js";
import { fromScheduler, SCHEDULER_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { schedulerLifecycleValues, toSandbox } from "./sandbox-view.js";
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
  const values = schedulerLifecycleValues(req);
  if (Object.keys(values).length === 0)
    throw new InvalidArgumentError(
      "give at least one of autoStopMinutes, autoArchiveDays, autoDeleteDays, clock, deleteOnStop, expiresInSeconds, onExpire",
    );
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["updateLifecycle"]>>;
  try {
    res = await deps.scheduler.updateLifecycle(
      {
        sandboxId: req.sandboxId,
        ...values,
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
