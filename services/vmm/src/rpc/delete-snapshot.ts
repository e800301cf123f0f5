import type { DeleteSnapshotRequest } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { checkSnapshotId } from "../domain/errors.js";

/** Removes a snapshot folder; waits for a restore reading it. Unknown ids succeed (retries). */
export async function deleteSnapshot(
  ctx: VmmContext,
  req: DeleteSnapshotRequest,
): Promise<Record<string, never>> {
  const id = checkSnapshotId(req.snapshotId);
  const removed = await ctx.snapshots.delete(id);
  if (removed) ctx.logger.info({ "snapshot.id": id }, "snapshot deleted");
  return {};
}
