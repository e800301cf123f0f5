import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  PauseSandboxRequest,
  PauseSandboxResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { lockSandbox } from "../db/queries.js";
import { SandboxNotFoundError, WrongStateError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";
import { pauseLocked } from "../lifecycle-ops.js";
import { logFields } from "../provision.js";
import { toRecord } from "../records.js";

/**
 * Freezes a running sandbox on its host, then records it paused (event "paused"). The row
 * stays locked while the host is asked, so concurrent pauses, resumes and deletes of one
 * sandbox take turns: of two pauses exactly one succeeds, the other sees 'paused'. The steps
 * (and what happens when the host fails) are `pauseLocked`, shared with the reaper's stop.
 */
export async function pauseSandbox(
  ctx: Context,
  req: PauseSandboxRequest,
): Promise<MessageInitShape<typeof PauseSandboxResponseSchema>> {
  const id = requireId("sandbox_id", req.sandboxId);
  const row = await ctx.db.transaction(async (tx) => {
    const cur = await lockSandbox(tx, id);
    if (cur === undefined) throw new SandboxNotFoundError(id);
    if (cur.state === "paused") throw new WrongStateError(`sandbox '${id}' is paused`);
    if (cur.state !== "running")
      throw new WrongStateError(`sandbox '${id}' is not running (it is ${cur.state})`);
    return pauseLocked(ctx, tx, cur, "api");
  });
  ctx.logger.info(logFields(row), "sandbox paused");
  return { sandbox: toRecord(row) };
}
