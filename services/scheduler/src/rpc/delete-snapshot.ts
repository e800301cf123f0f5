import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  DeleteSnapshotRequest,
  DeleteSnapshotResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { findSnapshot } from "../db/queries.js";
import { SnapshotNotFoundError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";
import { removeSnapshot } from "../snapshots.js";

/**
 * Removes the snapshot's files on its host, then its record. A host that fails leaves it
 * hidden ('deleting') and returns Unavailable; calling again retries.
 */
export async function deleteSnapshot(
  ctx: Context,
  req: DeleteSnapshotRequest,
): Promise<MessageInitShape<typeof DeleteSnapshotResponseSchema>> {
  const idOrName = requireId("snapshot_id", req.snapshotId);
  const snap = await findSnapshot(ctx.db, idOrName, ctx.cfg.hostDeadAfterMs);
  if (snap === undefined) throw new SnapshotNotFoundError(idOrName);
  await removeSnapshot(ctx, snap);
  return {};
}
