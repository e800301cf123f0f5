import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  ArchiveSandboxRequest,
  ArchiveSandboxResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { claimSandboxOp, getSandbox, releaseReaperOp } from "../db/queries.js";
import { SandboxNotFoundError, WrongStateError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";
import { archiveSandbox as archive } from "../lifecycle-ops.js";
import { logFields } from "../provision.js";
import { toRecord } from "../records.js";

/**
 * Archives a paused sandbox now: the reaper's archive, under the same lease (a reaper that
 * finds the row held leaves it, and a takeover after a crash resumes it). Synchronous: it
 * answers once the sandbox is archived.
 */
export async function archiveSandbox(
  ctx: Context,
  req: ArchiveSandboxRequest,
): Promise<MessageInitShape<typeof ArchiveSandboxResponseSchema>> {
  const id = requireId("sandbox_id", req.sandboxId);
  const nowMs = ctx.clock.now();
  const claim = await claimSandboxOp(ctx.db, id, "archive", ["paused", "archived"], new Date(nowMs), {
    leaseMs: ctx.cfg.reaperLeaseMs,
    hostDeadAfterMs: ctx.cfg.hostDeadAfterMs,
  });
  if (claim === undefined) {
    const row = await getSandbox(ctx.db, id);
    if (row === undefined) throw new SandboxNotFoundError(id);
    if (row.state === "paused" || row.state === "archived")
      throw new WrongStateError(
        `sandbox '${id}' is busy (${row.reaperOp ?? "a transition"} in progress); try again later`,
      );
    throw new WrongStateError(`sandbox '${id}' is ${row.state}; pause it before archiving`);
  }
  if (claim.state === "archived") {
    await releaseReaperOp(ctx.db, claim);
    return { sandbox: toRecord(claim) };
  }
  const out = await archive(ctx, claim, nowMs, "api");
  if (!out.done) throw new WrongStateError(`sandbox '${id}' was not archived: ${out.why}`);
  const row = await getSandbox(ctx.db, id);
  if (row === undefined) throw new SandboxNotFoundError(id);
  ctx.logger.info({ ...logFields(row), detail: out.detail }, "sandbox archived on request");
  return { sandbox: toRecord(row) };
}
