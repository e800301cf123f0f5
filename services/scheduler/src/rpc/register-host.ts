import { createHash, timingSafeEqual } from "node:crypto";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import type {
  RegisterHostRequest,
  RegisterHostResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { upsertHost } from "../db/queries.js";
import { JoinRefusedError } from "../domain/errors.js";
import { checkHostRegistration } from "../domain/validate.js";

/**
 * Records (or refreshes) a host: where its vmm listens, its runtime, what it offers (slots,
 * vCPUs, memory, free disk), its placement labels and the templates it holds. With a join
 * token configured (`DNAH_JOIN_TOKEN`), only a caller presenting it may register; the token is
 * compared by SHA-256 digest in constant time, and is good for nothing else.
 */
export async function registerHost(
  ctx: Context,
  req: RegisterHostRequest,
  call?: HandlerContext,
): Promise<MessageInitShape<typeof RegisterHostResponseSchema>> {
  checkJoinToken(ctx.cfg.joinToken, call?.requestHeader.get("authorization") ?? null);
  const host = checkHostRegistration({
    hostId: req.hostId,
    vmmUrl: req.vmmUrl,
    runtime: req.runtime,
    capacity: req.capacitySandboxes,
    vcpus: req.vcpus,
    memoryMib: Number(req.memoryMib),
    diskFreeMib: Number(req.diskFreeMib),
    labels: req.labels,
    templates: req.templates,
  });
  await upsertHost(ctx.db, host);
  ctx.logger.info(
    {
      "host.id": host.hostId,
      vmmUrl: host.vmmUrl,
      runtime: host.runtime,
      capacity: host.capacity,
      vcpus: host.vcpus,
      memoryMib: host.memoryMib,
      labels: host.labels,
    },
    "host registered",
  );
  // New capacity: the warm pool may be able to fill now.
  ctx.kickRefill();
  return { controlPublicKey: (await ctx.controlKey()).publicKey };
}

const digest = (s: string) => createHash("sha256").update(s).digest();

function checkJoinToken(expected: string | undefined, authorization: string | null): void {
  if (expected === undefined) return;
  const m = /^Bearer (.+)$/.exec(authorization ?? "");
  if (m === null)
    throw new JoinRefusedError("RegisterHost needs the join token (authorization: Bearer <token>)");
  if (!timingSafeEqual(digest(m[1]!), digest(expected)))
    throw new JoinRefusedError("the join token is not the one this scheduler accepts");
}
