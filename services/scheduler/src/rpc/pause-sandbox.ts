import type { MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type {
  PauseSandboxRequest,
  PauseSandboxResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { lockSandbox, markPaused, type SandboxRow } from "../db/queries.js";
import { SandboxNotFoundError, VmmUnavailableError, WrongStateError } from "../domain/errors.js";
import { requireId } from "../domain/validate.js";
import { codeName, errorDetail, logFields } from "../provision.js";
import { toRecord } from "../records.js";

/**
 * Freezes a running sandbox on its host, then records it paused. The row stays locked while
 * the host is asked, so concurrent pauses, resumes and deletes of one sandbox take turns:
 * of two pauses exactly one succeeds, the other sees 'paused'. If the host fails, the row is
 * left running (the transaction rolls back) and the host is asked to thaw in case the freeze
 * landed after all. A host that already has it frozen (an earlier pause whose answer was
 * lost) is taken at its word.
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
    try {
      await ctx.vmm(cur.vmmUrl).pauseVm({ sandboxId: id }, { timeoutMs: ctx.cfg.vmmCallTimeoutMs });
    } catch (err) {
      if (!(isFailedPrecondition(err) && (await hostSaysPaused(ctx, cur)) === true)) {
        await undoPause(ctx, cur);
        throw new VmmUnavailableError(
          `host '${cur.hostId}' could not pause sandbox '${id}' (${codeName(err)}); try again`,
          { cause: err },
        );
      }
    }
    return markPaused(tx, id);
  });
  ctx.logger.info(logFields(row), "sandbox paused");
  return { sandbox: toRecord(row) };
}

export function isFailedPrecondition(err: unknown): boolean {
  return ConnectError.from(err).code === Code.FailedPrecondition;
}

/** Whether the host reports the sandbox paused; undefined when it cannot tell us. */
export async function hostSaysPaused(
  ctx: Context,
  row: Pick<SandboxRow, "id" | "hostId" | "vmmUrl">,
): Promise<boolean | undefined> {
  try {
    const { vms } = await ctx.vmm(row.vmmUrl).listVms({}, { timeoutMs: ctx.cfg.vmmCallTimeoutMs });
    return vms.find((v) => v.sandboxId === row.id)?.paused;
  } catch (err) {
    ctx.logger.warn({ ...logFields(row), err: errorDetail(err) }, "ListVms failed");
    return undefined;
  }
}

/** A pause that timed out may still land on the host: ask it to thaw (not paused is fine). */
async function undoPause(ctx: Context, row: SandboxRow): Promise<void> {
  try {
    await ctx.vmm(row.vmmUrl).resumeVm({ sandboxId: row.id }, { timeoutMs: ctx.cfg.vmmCallTimeoutMs });
    ctx.logger.warn(logFields(row), "thawed a sandbox whose pause failed");
  } catch (err) {
    if (!isFailedPrecondition(err))
      ctx.logger.warn({ ...logFields(row), err: errorDetail(err) }, "could not undo a failed pause");
  }
}
