import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  ResumeSandboxRequest,
  ResumeSandboxResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { getSandbox, insertEvent, lockSandbox, markResumed } from "../db/queries.js";
import { SandboxNotFoundError, VmmUnavailableError, WrongStateError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";
import { hostSaysPaused, isFailedPrecondition, unarchiveSandbox } from "../lifecycle-ops.js";
import { codeName, logFields } from "../provision.js";
import { toRecord } from "../records.js";

/**
 * Thaws a paused (or reaper-stopped) sandbox on its host, then records it running, under the
 * row lock (see PauseSandbox). If the host fails the row stays paused; a host that already
 * runs it (a resume whose answer was lost) is taken at its word. An archived sandbox is
 * brought back from archive storage under the same id (`unarchiveSandbox`).
 */
export async function resumeSandbox(
  ctx: Context,
  req: ResumeSandboxRequest,
): Promise<MessageInitShape<typeof ResumeSandboxResponseSchema>> {
  const id = requireId("sandbox_id", req.sandboxId);
  const seen = await getSandbox(ctx.db, id);
  if (seen?.state === "archived") return { sandbox: toRecord(await unarchiveSandbox(ctx, id)) };
  const row = await ctx.db.transaction(async (tx) => {
    const cur = await lockSandbox(tx, id);
    if (cur === undefined) throw new SandboxNotFoundError(id);
    if (cur.state === "archived")
      throw new WrongStateError(`sandbox '${id}' was archived meanwhile; resume it again`);
    if (cur.state !== "paused")
      throw new WrongStateError(`sandbox '${id}' is not paused (it is ${cur.state})`);
    try {
      await ctx.vmm(cur.vmmUrl).resumeVm({ sandboxId: id }, { timeoutMs: ctx.cfg.vmmCallTimeoutMs });
    } catch (err) {
      if (!(isFailedPrecondition(err) && (await hostSaysPaused(ctx, cur)) === false))
        throw new VmmUnavailableError(
          `host '${cur.hostId}' could not resume sandbox '${id}' (${codeName(err)}); try again`,
          { cause: err },
        );
    }
    const resumed = await markResumed(tx, id);
    await insertEvent(tx, {
      sandboxId: id,
      kind: "resumed",
      fromState: "paused",
      toState: "running",
      actor: "api",
    });
    return resumed;
  });
  ctx.logger.info(logFields(row), "sandbox resumed");
  return { sandbox: toRecord(row) };
}
