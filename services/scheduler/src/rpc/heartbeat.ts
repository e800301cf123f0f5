import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HeartbeatRequest, HeartbeatResponseSchema } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { insertEvent, reconcileHost, heartbeat as recordHeartbeat } from "../db/queries.js";
import { HostNotFoundError, InvalidArgumentError } from "../domain/errors.js";
import { checkCount, checkHostId, checkTemplateList } from "../domain/validate.js";
import { recordLost } from "../lifecycle-ops.js";

/** Most sandbox ids one heartbeat may report. */
const MAX_REPORTED = 100_000;

/**
 * Marks a host alive. An unknown host is NOT_FOUND, which tells a vmm to register again (e.g.
 * after a reset). A host that reports its sandboxes is reconciled: its lost ones it still has
 * run again (event "found"), what it has that the scheduler deleted or never placed there
 * is named in the answer for the host to remove, and what it should have but reported missing
 * at two beats in a row is lost (event "lost"; warm-pool ones fail and the pool refills).
 */
export async function heartbeat(
  ctx: Context,
  req: HeartbeatRequest,
): Promise<MessageInitShape<typeof HeartbeatResponseSchema>> {
  const hostId = checkHostId(req.hostId);
  if (req.sandboxIds.length > MAX_REPORTED)
    throw new InvalidArgumentError(`sandbox_ids: at most ${MAX_REPORTED} per heartbeat`);
  const prev = await recordHeartbeat(ctx.db, hostId, checkCount("running_sandboxes", req.runningSandboxes), {
    diskFreeMib: req.diskFreeMib > 0n ? Number(req.diskFreeMib) : undefined,
    templates: req.templates.length > 0 ? checkTemplateList(req.templates) : undefined,
  });
  if (prev === undefined) throw new HostNotFoundError(hostId);
  if (prev.silentMs >= ctx.cfg.hostDeadAfterMs) {
    ctx.logger.info({ "host.id": hostId, silentMs: Math.round(prev.silentMs) }, "host is alive again");
    ctx.kickRefill();
  }
  if (!req.reportsSandboxes) return {};
  const { found, remove, lost, failed } = await reconcileHost(ctx.db, hostId, req.sandboxIds);
  for (const l of lost)
    await recordLost(
      ctx,
      { ...l, hostId },
      "is live but reported it missing twice (the host restarted or the VM died)",
    );
  if (failed.length > 0) {
    ctx.logger.warn({ "host.id": hostId, sandboxIds: failed }, "warm-pool sandboxes gone from their host");
    ctx.kickRefill();
  }
  for (const f of found) {
    ctx.logger.info({ "sandbox.id": f.id, "host.id": hostId, state: f.state }, "lost sandbox found again");
    await insertEvent(ctx.db, {
      sandboxId: f.id,
      kind: "found",
      fromState: "lost",
      toState: f.state,
      actor: "reaper",
      detail: `host '${hostId}' reports it again`,
    });
  }
  if (remove.length > 0)
    ctx.logger.warn(
      { "host.id": hostId, sandboxIds: remove },
      "host runs sandboxes the scheduler does not: removing",
    );
  return { removeSandboxIds: remove };
}
