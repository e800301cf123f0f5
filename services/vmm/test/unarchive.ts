import type { CallOptions, Client } from "@connectrpc/connect";
import type { UnarchiveSnapshotResponse, VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";

/** Runs UnarchiveSnapshot to its end: every message it streamed (the last has `done`). */
export async function unarchive(
  client: Client<typeof VmmService>,
  req: { snapshotId: string; archiveUri: string },
  opts?: CallOptions,
): Promise<UnarchiveSnapshotResponse[]> {
  const out: UnarchiveSnapshotResponse[] = [];
  for await (const m of client.unarchiveSnapshot(req, opts)) out.push(m);
  return out;
}
