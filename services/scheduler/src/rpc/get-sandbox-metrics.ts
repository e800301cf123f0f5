import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import type {
  GetSandboxMetricsRequest,
  GetSandboxMetricsResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { getSandbox } from "../db/queries.js";
import { SandboxNotFoundError, VmmUnavailableError, WrongStateError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";
import { codeName } from "../provision.js";

/** One sample of a running or paused sandbox's resource use, from its host. */
export async function getSandboxMetrics(
  ctx: Context,
  req: GetSandboxMetricsRequest,
): Promise<MessageInitShape<typeof GetSandboxMetricsResponseSchema>> {
  const id = requireId("sandbox_id", req.sandboxId);
  const row = await getSandbox(ctx.db, id);
  if (row === undefined) throw new SandboxNotFoundError(id);
  if (row.state !== "running" && row.state !== "paused")
    throw new WrongStateError(`sandbox '${id}' is not running (it is ${row.state})`);
  let metrics: Awaited<ReturnType<ReturnType<Context["vmm"]>["getVmMetrics"]>>["metrics"];
  try {
    metrics = (
      await ctx.vmm(row.vmmUrl).getVmMetrics({ sandboxId: id }, { timeoutMs: ctx.cfg.vmmCallTimeoutMs })
    ).metrics;
  } catch (err) {
    throw new VmmUnavailableError(
      `host '${row.hostId}' could not measure sandbox '${id}' (${codeName(err)}); try again`,
      { cause: err },
    );
  }
  if (metrics === undefined) throw new Error(`vmm answered GetVmMetrics for ${id} without metrics`);
  return {
    metrics: {
      timestamp: timestampFromMs(Number(metrics.timestampMs)),
      cpuCount: metrics.cpuCount,
      cpuUsedPct: metrics.cpuUsedPct,
      memUsedBytes: metrics.memUsedBytes,
      memTotalBytes: metrics.memTotalBytes,
      memCacheBytes: metrics.memCacheBytes,
      diskUsedBytes: metrics.diskUsedBytes,
      diskTotalBytes: metrics.diskTotalBytes,
    },
  };
}
