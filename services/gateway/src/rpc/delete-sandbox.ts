import { create } from "@bufbuild/protobuf";
import {
  type DeleteSandboxRequest,
  type DeleteSandboxResponse,
  DeleteSandboxResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SandboxNotFoundError } from "../errors.js";
import { fromScheduler, SCHEDULER_CREATE_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { checkSandboxId } from "./validate.js";

/** DeleteSandbox: the scheduler destroys the VM and marks it deleted; our tunnels close. */
export async function deleteSandbox(
  deps: RpcDeps,
  req: DeleteSandboxRequest,
  opts: CallOptions = {},
): Promise<DeleteSandboxResponse> {
  checkSandboxId(req.sandboxId);
  try {
    await deps.scheduler.deleteSandbox(
      { sandboxId: req.sandboxId },
      { timeoutMs: SCHEDULER_CREATE_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new SandboxNotFoundError(req.sandboxId, { cause }));
  } finally {
    // Even a failed delete may have stopped the VM: reconnect from scratch next time.
    deps.agents.forget(req.sandboxId);
  }
  deps.logger.info({ "sandbox.id": req.sandboxId }, "sandbox deleted");
  return create(DeleteSandboxResponseSchema, {});
}
