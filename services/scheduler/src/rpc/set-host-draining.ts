import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  SetHostDrainingRequest,
  SetHostDrainingResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { hostLoads, setHostDraining as setDraining } from "../db/queries.js";
import { HostNotFoundError } from "../domain/errors.js";
import { isLive } from "../domain/placement.js";
import { checkHostId } from "../domain/validate.js";
import { toHostRecord } from "../records.js";

/** Maintenance: a draining host keeps what it runs and is not placed on (warm pools included). */
export async function setHostDraining(
  ctx: Context,
  req: SetHostDrainingRequest,
): Promise<MessageInitShape<typeof SetHostDrainingResponseSchema>> {
  const hostId = checkHostId(req.hostId);
  if (!(await setDraining(ctx.db, hostId, req.draining))) throw new HostNotFoundError(hostId);
  ctx.logger.info(
    { "host.id": hostId, draining: req.draining },
    req.draining ? "host draining" : "host back in service",
  );
  if (!req.draining) ctx.kickRefill();
  const { now, hosts } = await hostLoads(ctx.db);
  const h = hosts.find((x) => x.hostId === hostId);
  if (h === undefined) throw new HostNotFoundError(hostId);
  return { host: toHostRecord(h, isLive(h, now, ctx.cfg.hostDeadAfterMs)) };
}
