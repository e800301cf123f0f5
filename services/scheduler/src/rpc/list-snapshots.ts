import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  ListSnapshotsRequest,
  ListSnapshotsResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { listSnapshots as list } from "../db/queries.js";
import { toSnapshotRecord } from "../records.js";

/** Ready snapshots, newest first; of one sandbox when sandbox_id is set. */
export async function listSnapshots(
  ctx: Context,
  req: ListSnapshotsRequest,
): Promise<MessageInitShape<typeof ListSnapshotsResponseSchema>> {
  const rows = await list(ctx.db, req.sandboxId === "" ? undefined : req.sandboxId);
  return { snapshots: rows.map(toSnapshotRecord) };
}
