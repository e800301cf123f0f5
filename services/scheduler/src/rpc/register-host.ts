import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  RegisterHostRequest,
  RegisterHostResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { upsertHost } from "../db/queries.js";
import { checkHostRegistration } from "../domain/validate.js";

export async function registerHost(
  ctx: Context,
  req: RegisterHostRequest,
): Promise<MessageInitShape<typeof RegisterHostResponseSchema>> {
  const host = checkHostRegistration({
    hostId: req.hostId,
    vmmUrl: req.vmmUrl,
    runtime: req.runtime,
    capacity: req.capacitySandboxes,
  });
  await upsertHost(ctx.db, host);
  ctx.logger.info(
    { "host.id": host.hostId, vmmUrl: host.vmmUrl, runtime: host.runtime, capacity: host.capacity },
    "host registered",
  );
  // New capacity: the warm pool may be able to fill now.
  ctx.kickRefill();
  return {};
}
