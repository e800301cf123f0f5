import { create } from "@bufbuild/protobuf";
import {
  type ResumeSandboxRequest,
  type ResumeSandboxResponse,
  ResumeSandboxResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SandboxNotFoundError } from "../errors.js";
import { fromScheduler, SCHEDULER_CREATE_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { toSandbox } from "./sandbox-view.js";
import { checkSandboxId } from "./validate.js";

/** ResumeSandbox: the scheduler thaws the sandbox; the next call looks its state up afresh. */
export async function resumeSandbox(
  deps: RpcDeps,
  req: ResumeSandboxRequest,
  opts: CallOptions = {},
): Promise<ResumeSandboxResponse> {
  checkSandboxId(req.sandboxId);
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["resumeSandbox"]>>;
  try {
    res = await deps.scheduler.resumeSandbox(
      { sandboxId: req.sandboxId },
      { timeoutMs: SCHEDULER_CREATE_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new SandboxNotFoundError(req.sandboxId, { cause }));
  } finally {
    // The cached lookup still says "paused": drop it so the next call sees it running.
    deps.agents.forget(req.sandboxId);
  }
  if (res.sandbox === undefined) throw new SandboxNotFoundError(req.sandboxId);
  deps.logger.info({ "sandbox.id": req.sandboxId }, "sandbox resumed");
  return create(ResumeSandboxResponseSchema, { sandbox: toSandbox(res.sandbox) });
}
