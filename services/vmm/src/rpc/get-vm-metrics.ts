import type { MessageInitShape } from "@bufbuild/protobuf";
import type { GetVmMetricsRequest, GetVmMetricsResponseSchema } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { checkSandboxId, VmNotFoundError } from "../domain/errors.js";

/** One sample of a sandbox's CPU, memory and disk use (paused sandboxes too). */
export async function getVmMetrics(
  ctx: VmmContext,
  req: GetVmMetricsRequest,
): Promise<MessageInitShape<typeof GetVmMetricsResponseSchema>> {
  const id = checkSandboxId(req.sandboxId);
  if (!ctx.vms.has(id)) throw new VmNotFoundError(id);
  const m = await ctx.runtime.metrics(id);
  return {
    metrics: {
      timestampMs: BigInt(m.timestampMs),
      cpuCount: m.cpuCount,
      cpuUsedPct: m.cpuUsedPct,
      memUsedBytes: BigInt(Math.round(m.memUsedBytes)),
      memTotalBytes: BigInt(Math.round(m.memTotalBytes)),
      memCacheBytes: BigInt(Math.round(m.memCacheBytes)),
      diskUsedBytes: BigInt(Math.round(m.diskUsedBytes)),
      diskTotalBytes: BigInt(Math.round(m.diskTotalBytes)),
    },
  };
}
