import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  SnapshotSandboxRequest,
  SnapshotSandboxResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { checkSnapshotName } from "../domain/snapshots.js";
import { checkStringMap, requireId } from "../domain/validate.js";
import { toSnapshotRecord } from "../records.js";
import { takeSnapshot } from "../snapshots.js";

/** A signed snapshot of a running or paused sandbox, which stays as it was. */
export async function snapshotSandbox(
  ctx: Context,
  req: SnapshotSandboxRequest,
): Promise<MessageInitShape<typeof SnapshotSandboxResponseSchema>> {
  const sandboxId = requireId("sandbox_id", req.sandboxId);
  const name = checkSnapshotName(req.name);
  checkStringMap("metadata", req.metadata);
  const { snapshot } = await takeSnapshot(ctx, sandboxId, { name, metadata: req.metadata });
  return { snapshot: toSnapshotRecord(snapshot) };
}
