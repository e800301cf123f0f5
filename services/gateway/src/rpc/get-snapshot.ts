import { create } from "@bufbuild/protobuf";
import {
  type GetSnapshotRequest,
  type GetSnapshotResponse,
  GetSnapshotResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SnapshotNotFoundError } from "../errors.js";
import { fromScheduler, SCHEDULER_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { toSnapshot } from "./snapshot-view.js";
import { checkSnapshotRef } from "./validate.js";

/** GetSnapshot: one snapshot by id or name; unknown ones are NOT_FOUND. */
export async function getSnapshot(
  deps: RpcDeps,
  req: GetSnapshotRequest,
  opts: CallOptions = {},
): Promise<GetSnapshotResponse> {
  checkSnapshotRef(req.snapshotId);
  let res: Awaited<ReturnType<RpcDeps["scheduler"]["getSnapshot"]>>;
  try {
    res = await deps.scheduler.getSnapshot(
      { snapshotId: req.snapshotId },
      { timeoutMs: SCHEDULER_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new SnapshotNotFoundError(req.snapshotId, { cause }));
  }
  if (res.snapshot === undefined) throw new SnapshotNotFoundError(req.snapshotId);
  return create(GetSnapshotResponseSchema, { snapshot: toSnapshot(res.snapshot) });
}
