import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HeartbeatRequest, HeartbeatResponseSchema } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { heartbeat as recordHeartbeat } from "../db/queries.js";
import { HostNotFoundError } from "../domain/errors.js";
import { checkCount, checkHostId } from "../domain/validate.js";

/** An unknown host is NOT_FOUND, which tells a vmm to register again (e.g. after a reset). */
export async function heartbeat(
  ctx: Context,
  req: HeartbeatRequest,
): Promise<MessageInitShape<typeof HeartbeatResponseSchema>> {
  const hostId = checkHostId(req.hostId);
  const prev = await recordHeartbeat(ctx.db, hostId, checkCount("running_sandboxes", req.runningSandboxes));
  if (prev === undefined) throw new HostNotFoundError(hostId);
  if (prev.silentMs >= ctx.cfg.hostDeadAfterMs) {
    ctx.logger.info({ "host.id": hostId, silentMs: Math.round(prev.silentMs) }, "host is alive again");
    ctx.kickRefill();
  }
  return {};
}
