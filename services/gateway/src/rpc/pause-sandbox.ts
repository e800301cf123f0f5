import { create } from "@bufbuild/protobuf";
import {
  type PauseSandboxRequest,
  type PauseSandboxResponse,
  PauseSandboxResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SandboxNotFoundError } from "../errors.js";
import { fromScheduler, SCHEDULER_CREATE_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { toSandbox } from "./sandbox-view.js";
import { checkSandboxId } from "./validate.js";

/**
 * PauseSandbox: the scheduler freezes the sandbox on its host. Our kept-alive tunnels to it
 * are dropped, so later calls find it paused (409) instead of waiting on a frozen agent.
 */
export async function pauseSandbox(
  deps: RpcDeps,
  req: PauseSandboxRequest,
  opts: CallOptions = {},
): Promise<PauseSandboxResponse> {
  checkSandboxId(req.sandboxId);
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["pauseSandbox"]>>;
  try {
    res = await deps.scheduler.pauseSandbox(
      { sandboxId: req.sandboxId },
      { timeoutMs: SCHEDULER_CREATE_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new SandboxNotFoundError(req.sandboxId, { cause }));
  } finally {
    deps.agents.forget(req.sandboxId);
  }
  if (res.sandbox === undefined) throw new SandboxNotFoundError(req.sandboxId);
  deps.logger.info({ "sandbox.id": req.sandboxId }, "sandbox paused");
  return create(PauseSandboxResponseSchema, { sandbox: toSandbox(res.sandbox) });
}
