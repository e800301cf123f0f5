import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ArchiveSnapshotRequest, ArchiveSnapshotResponseSchema } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { checkSnapshotId } from "../domain/errors.js";

/**
 * Moves a snapshot folder into this host's archive storage (complete or not at all), then
 * removes the local folder. Answers an already archived snapshot again (retries).
 */
export async function archiveSnapshot(
  ctx: VmmContext,
  req: ArchiveSnapshotRequest,
): Promise<MessageInitShape<typeof ArchiveSnapshotResponseSchema>> {
  const id = checkSnapshotId(req.snapshotId);
  const r = await ctx.archives.archive(id);
  return { archiveUri: r.uri, sizeBytes: BigInt(r.sizeBytes), durationMs: r.durationMs };
}
