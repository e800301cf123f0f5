import type { DeleteArchiveRequest } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";

/** Removes an archived snapshot; one already gone succeeds (retries). */
export async function deleteArchive(
  ctx: VmmContext,
  req: DeleteArchiveRequest,
): Promise<Record<string, never>> {
  await ctx.archives.delete(req.archiveUri);
  return {};
}
