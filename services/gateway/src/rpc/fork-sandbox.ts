import { create } from "@bufbuild/protobuf";
import {
  type ForkResult,
  ForkResultSchema,
  type ForkSandboxRequest,
  type ForkSandboxResponse,
  ForkSandboxResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { classifyUpstream, SandboxNotFoundError } from "../errors.js";
import { fromScheduler, schedulerForkTimeoutMs } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { toSandbox } from "./sandbox-view.js";
import { checkMetadata, checkSandboxId, forkCount } from "./validate.js";

/**
 * ForkSandbox: `count` clones (1..16, 0 = 1) of a sandbox in one call; the source keeps
 * running. The call fails as a whole only when nothing could be cloned (unknown source, the
 * snapshot failed); otherwise each clone is reported on its own, `error_code` being one of
 * the gateway's error kinds (`resource_exhausted`, …).
 */
export async function forkSandbox(
  deps: RpcDeps,
  req: ForkSandboxRequest,
  opts: CallOptions = {},
): Promise<ForkSandboxResponse> {
  checkSandboxId(req.sandboxId);
  const count = forkCount(req.count);
  checkMetadata("metadata", req.metadata);
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["forkSandbox"]>>;
  try {
    res = await deps.scheduler.forkSandbox(
      { sandboxId: req.sandboxId, count, metadata: req.metadata },
      { timeoutMs: schedulerForkTimeoutMs(count), ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new SandboxNotFoundError(req.sandboxId, { cause }));
  }
  const results: ForkResult[] = res.results.map((r) => {
    if (r.sandbox !== undefined) return create(ForkResultSchema, { sandbox: toSandbox(r.sandbox) });
    const c = classifyUpstream(r.errorCode, r.error);
    if (c.message === undefined)
      deps.logger.error(
        { "sandbox.id": req.sandboxId, errorCode: r.errorCode, error: r.error },
        "a fork clone failed",
      );
    return create(ForkResultSchema, { error: c.message ?? "internal error", errorCode: c.kind });
  });
  deps.logger.info(
    {
      "sandbox.id": req.sandboxId,
      clones: results.flatMap((r) => (r.sandbox ? [r.sandbox.sandboxId] : [])),
      failed: results.filter((r) => r.sandbox === undefined).length,
    },
    "sandbox forked",
  );
  return create(ForkSandboxResponseSchema, { results });
}
