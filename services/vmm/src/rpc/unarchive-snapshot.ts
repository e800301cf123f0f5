import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  UnarchiveSnapshotRequest,
  UnarchiveSnapshotResponseSchema,
} from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { checkSnapshotId } from "../domain/errors.js";

/**
 * Copies an archived snapshot back into the snapshots folder, where RestoreVm verifies it
 * like any other. The URI must name that snapshot inside this host's archive folder.
 */
export async function unarchiveSnapshot(
  ctx: VmmContext,
  req: UnarchiveSnapshotRequest,
): Promise<MessageInitShape<typeof UnarchiveSnapshotResponseSchema>> {
  const id = checkSnapshotId(req.snapshotId);
  const r = await ctx.archives.unarchive(id, req.archiveUri);
  return { sizeBytes: BigInt(r.sizeBytes), durationMs: r.durationMs };
}
