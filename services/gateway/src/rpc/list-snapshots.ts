import { create } from "@bufbuild/protobuf";
import {
  type ListSnapshotsRequest,
  type ListSnapshotsResponse,
  ListSnapshotsResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { fromScheduler, SCHEDULER_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { toSnapshot } from "./snapshot-view.js";
import { checkSandboxId } from "./validate.js";

/**
 * ListSnapshots: every snapshot, or those taken from one sandbox (which may be gone by now),
 * newest first.
 */
export async function listSnapshots(
  deps: RpcDeps,
  req: ListSnapshotsRequest,
  opts: CallOptions = {},
): Promise<ListSnapshotsResponse> {
  if (req.sandboxId !== "") checkSandboxId(req.sandboxId);
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["listSnapshots"]>>;
  try {
    res = await deps.scheduler.listSnapshots(
      { sandboxId: req.sandboxId },
      { timeoutMs: SCHEDULER_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    // A list has nothing to be missing: a NOT_FOUND here is the scheduler misbehaving.
    throw fromScheduler(err, (cause) => new Error("scheduler ListSnapshots answered NOT_FOUND", { cause }));
  }
  return create(ListSnapshotsResponseSchema, { snapshots: res.snapshots.map(toSnapshot) });
}
