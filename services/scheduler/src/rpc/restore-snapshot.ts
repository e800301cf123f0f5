import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  RestoreSnapshotRequest,
  RestoreSnapshotResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { findSnapshot } from "../db/queries.js";
import { SnapshotNotFoundError } from "../domain/errors.js";
import { checkStringMap, requireId } from "../domain/validate.js";
import { toRecord } from "../records.js";
import { restoreSnapshot as restore } from "../snapshots.js";

/** A new sandbox from a snapshot (by id or name), once its signature and files check out. */
export async function restoreSnapshot(
  ctx: Context,
  req: RestoreSnapshotRequest,
): Promise<MessageInitShape<typeof RestoreSnapshotResponseSchema>> {
  const idOrName = requireId("snapshot_id", req.snapshotId);
  checkStringMap("metadata", req.metadata);
  checkStringMap("env_vars", req.envVars, true);
  const snap = await findSnapshot(ctx.db, idOrName, ctx.cfg.hostDeadAfterMs);
  if (snap === undefined) throw new SnapshotNotFoundError(idOrName);
  const row = await restore(ctx, snap, { metadata: req.metadata, envVars: req.envVars });
  return { sandbox: toRecord(row) };
}
