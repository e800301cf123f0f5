import type { MessageInitShape } from "@bufbuild/protobuf";
import type { ListHostsRequest, ListHostsResponseSchema } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { hostLoads } from "../db/queries.js";
import { isLive } from "../domain/placement.js";
import { toHostRecord } from "../records.js";

/** Every registered host, with its load and whether it is live by the database clock. */
export async function listHosts(
  ctx: Context,
  _req: ListHostsRequest,
): Promise<MessageInitShape<typeof ListHostsResponseSchema>> {
  const { now, hosts } = await hostLoads(ctx.db);
  return { hosts: hosts.map((h) => toHostRecord(h, isLive(h, now, ctx.cfg.hostDeadAfterMs))) };
}
