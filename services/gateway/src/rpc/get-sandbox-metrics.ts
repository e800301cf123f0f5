import { create } from "@bufbuild/protobuf";
import {
  type GetSandboxMetricsRequest,
  type GetSandboxMetricsResponse,
  GetSandboxMetricsResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SandboxNotFoundError } from "../errors.js";
import { fromScheduler, SCHEDULER_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { checkSandboxId } from "./validate.js";

/** GetSandboxMetrics: one sample of CPU, memory and disk use, from the sandbox's host. */
export async function getSandboxMetrics(
  deps: RpcDeps,
  req: GetSandboxMetricsRequest,
  opts: CallOptions = {},
): Promise<GetSandboxMetricsResponse> {
  checkSandboxId(req.sandboxId);
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["getSandboxMetrics"]>>;
  try {
    res = await deps.scheduler.getSandboxMetrics(
      { sandboxId: req.sandboxId },
      { timeoutMs: SCHEDULER_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new SandboxNotFoundError(req.sandboxId, { cause }));
  }
  const m = res.metrics;
  if (m === undefined) throw new Error("scheduler answered GetSandboxMetrics without metrics");
  return create(GetSandboxMetricsResponseSchema, {
    metrics: {
      ...(m.timestamp !== undefined ? { timestamp: m.timestamp } : {}),
      cpuCount: m.cpuCount,
      cpuUsedPct: m.cpuUsedPct,
      memUsedBytes: m.memUsedBytes,
      memTotalBytes: m.memTotalBytes,
      memCacheBytes: m.memCacheBytes,
      diskUsedBytes: m.diskUsedBytes,
      diskTotalBytes: m.diskTotalBytes,
    },
  });
}
