import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  GetSnapshotRequest,
  GetSnapshotResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { findSnapshot } from "../db/queries.js";
import { SnapshotNotFoundError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";
import { toSnapshotRecord } from "../records.js";

/** A ready snapshot by id or name; one being written or deleted is not found. */
export async function getSnapshot(
  ctx: Context,
  req: GetSnapshotRequest,
): Promise<MessageInitShape<typeof GetSnapshotResponseSchema>> {
  const idOrName = requireId("snapshot_id", req.snapshotId);
  const snap = await findSnapshot(ctx.db, idOrName, ctx.cfg.hostDeadAfterMs);
  if (snap === undefined || snap.state !== "ready") throw new SnapshotNotFoundError(idOrName);
  return { snapshot: toSnapshotRecord(snap) };
}
