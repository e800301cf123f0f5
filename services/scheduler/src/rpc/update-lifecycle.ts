import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  UpdateLifecycleRequest,
  UpdateLifecycleResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { insertEvent, lockSandbox, updateLifecycle as setLifecycle } from "../db/queries.js";
import { SandboxNotFoundError } from "../domain/errors.js";
import { applyOverrides, describeChange } from "../domain/lifecycle.js";
import { requireId } from "../domain/validate.js";
import { logFields } from "../provision.js";
import { lifecycleOverridesOf, toRecord } from "../records.js";

/** Changes the settings given, keeps the others; the change is an event of the sandbox. */
export async function updateLifecycle(
  ctx: Context,
  req: UpdateLifecycleRequest,
): Promise<MessageInitShape<typeof UpdateLifecycleResponseSchema>> {
  const id = requireId("sandbox_id", req.sandboxId);
  const row = await ctx.db.transaction(async (tx) => {
    const cur = await lockSandbox(tx, id);
    if (cur === undefined) throw new SandboxNotFoundError(id);
    const next = applyOverrides(cur.lifecycle, lifecycleOverridesOf(req), ctx.clock.now());
    const updated = await setLifecycle(tx, id, next);
    if (updated === undefined) throw new SandboxNotFoundError(id);
    const change = describeChange(cur.lifecycle, next);
    if (change !== "")
      await insertEvent(tx, { sandboxId: id, kind: "lifecycle_updated", actor: "api", detail: change });
    return updated;
  });
  ctx.logger.info({ ...logFields(row), lifecycle: row.lifecycle }, "sandbox lifecycle updated");
  return { sandbox: toRecord(row) };
}
