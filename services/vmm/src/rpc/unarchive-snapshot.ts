import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  UnarchiveSnapshotRequest,
  UnarchiveSnapshotResponseSchema,
} from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { checkSnapshotId } from "../domain/errors.js";
import type { CopyResult } from "../snapshot/archive.js";
import { streamWhile } from "./stream-while.js";

type Message = MessageInitShape<typeof UnarchiveSnapshotResponseSchema>;

/**
 * Copies an archived snapshot back into the snapshots folder, where RestoreVm verifies it
 * like any other. The URI must name that snapshot inside this host's archive storage. Streams
 * the copy's progress (about every 500 ms), then one message with `done` and the totals. A
 * caller that goes away does not stop the copy (the next attempt finds it ALREADY_EXISTS,
 * which is as good: RestoreVm checks every file).
 */
export async function* unarchiveSnapshot(
  ctx: VmmContext,
  req: UnarchiveSnapshotRequest,
): AsyncGenerator<Message> {
  const id = checkSnapshotId(req.snapshotId);
  const copied: CopyResult = yield* streamWhile<Message, CopyResult>((push) =>
    ctx.archives.unarchive(id, req.archiveUri, (copiedBytes, total) =>
      push({ copiedBytes: BigInt(copiedBytes), totalBytes: BigInt(total) }),
    ),
  );
  const size = BigInt(copied.sizeBytes);
  yield {
    done: true,
    sizeBytes: size,
    durationMs: copied.durationMs,
    copiedBytes: size,
    totalBytes: size,
  };
}
