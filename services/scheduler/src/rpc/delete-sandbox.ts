import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  DeleteSandboxRequest,
  DeleteSandboxResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { beginDelete, insertEvent } from "../db/queries.js";
import { SandboxNotFoundError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";
import { destroy } from "../provision.js";

/**
 * A delete that fails on the vmm leaves the row 'deleting' (hidden from Get and List) and
 * returns Unavailable; calling DeleteSandbox again retries it.
 */
export async function deleteSandbox(
  ctx: Context,
  req: DeleteSandboxRequest,
): Promise<MessageInitShape<typeof DeleteSandboxResponseSchema>> {
  const id = requireId("sandbox_id", req.sandboxId);
  const row = await beginDelete(ctx.db, id, ctx.cfg.hostDeadAfterMs);
  if (row === undefined) throw new SandboxNotFoundError(id);
  await destroy(ctx, row, row.hostLive);
  await insertEvent(ctx.db, { sandboxId: id, kind: "deleted", toState: "deleted", actor: "api" });
  return {};
}
