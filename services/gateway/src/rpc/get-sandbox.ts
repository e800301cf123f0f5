import { create } from "@bufbuild/protobuf";
import {
  type GetSandboxRequest,
  type GetSandboxResponse,
  GetSandboxResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SandboxNotFoundError } from "../errors.js";
import { fromScheduler, SCHEDULER_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { toSandbox } from "./sandbox-view.js";
import { checkSandboxId } from "./validate.js";

/** GetSandbox: one sandbox by id; unknown and deleted ids are NOT_FOUND. */
export async function getSandbox(
  deps: RpcDeps,
  req: GetSandboxRequest,
  opts: CallOptions = {},
): Promise<GetSandboxResponse> {
  checkSandboxId(req.sandboxId);
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["getSandbox"]>>;
  try {
    res = await deps.scheduler.getSandbox(
      { sandboxId: req.sandboxId },
      { timeoutMs: SCHEDULER_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new SandboxNotFoundError(req.sandboxId, { cause }));
  }
  if (res.sandbox === undefined) throw new SandboxNotFoundError(req.sandboxId);
  return create(GetSandboxResponseSchema, { sandbox: toSandbox(res.sandbox) });
}
