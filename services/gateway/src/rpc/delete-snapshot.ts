import { create } from "@bufbuild/protobuf";
import {
  type DeleteSnapshotRequest,
  type DeleteSnapshotResponse,
  DeleteSnapshotResponseSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SnapshotNotFoundError } from "../errors.js";
import { fromScheduler, SCHEDULER_SNAPSHOT_TIMEOUT_MS } from "../sandbox/scheduler.js";
import type { CallOptions, RpcDeps } from "./deps.js";
import { checkSnapshotRef } from "./validate.js";

/**
 * DeleteSnapshot: the scheduler removes its files on its host, then its record. Sandboxes
 * restored from it are not affected (they copied what they need). Unknown ids are NOT_FOUND.
 */
export async function deleteSnapshot(
  deps: RpcDeps,
  req: DeleteSnapshotRequest,
  opts: CallOptions = {},
): Promise<DeleteSnapshotResponse> {
  checkSnapshotRef(req.snapshotId);
  try {
    await deps.scheduler.deleteSnapshot(
      { snapshotId: req.snapshotId },
      { timeoutMs: SCHEDULER_SNAPSHOT_TIMEOUT_MS, ...(opts.signal ? { signal: opts.signal } : {}) },
    );
  } catch (err) {
    throw fromScheduler(err, (cause) => new SnapshotNotFoundError(req.snapshotId, { cause }));
  }
  deps.logger.info({ "snapshot.id": req.snapshotId }, "snapshot deleted");
  return create(DeleteSnapshotResponseSchema, {});
}
