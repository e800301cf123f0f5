import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  ForkResultSchema,
  ForkSandboxRequest,
  ForkSandboxResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { findSnapshot } from "../db/queries.js";
import { SnapshotNotFoundError, toConnectError } from "../domain/errors.js";
import { checkForkCount, codeSnakeName } from "../domain/snapshots.js";
import { checkStringMap, requireId } from "../domain/validate.js";
import { toRecord } from "../records.js";
import { removeSnapshot, restoreSnapshot, snapshotFields, takeSnapshot } from "../snapshots.js";

/**
 * Snapshot + `count` restores in one call; the source keeps running (or stays paused). Clones
 * are restored one after another (a restore is CPU-bound hashing and a boot) and each is
 * reported on its own. The intermediate snapshot is deleted once the clones are up: each
 * restore copied what it needs.
 */
export async function forkSandbox(
  ctx: Context,
  req: ForkSandboxRequest,
): Promise<MessageInitShape<typeof ForkSandboxResponseSchema>> {
  const sandboxId = requireId("sandbox_id", req.sandboxId);
  const count = checkForkCount(req.count);
  checkStringMap("metadata", req.metadata);
  const { snapshot, source } = await takeSnapshot(ctx, sandboxId, {
    name: undefined,
    metadata: { "dnah.fork": "true", "dnah.fork.source": sandboxId },
  });
  const owner = {
    metadata: Object.keys(req.metadata).length > 0 ? req.metadata : source.metadata,
    envVars: source.envVars,
    lifecycle: source.lifecycle,
  };
  const results: MessageInitShape<typeof ForkResultSchema>[] = [];
  try {
    for (let i = 0; i < count; i++) {
      try {
        // Read again each time: the host's liveness is checked per clone.
        const snap = await findSnapshot(ctx.db, snapshot.id, ctx.cfg.hostDeadAfterMs);
        if (snap === undefined) throw new SnapshotNotFoundError(snapshot.id);
        results.push({ sandbox: toRecord(await restoreSnapshot(ctx, snap, owner)) });
      } catch (err) {
        const ce = toConnectError(err, ctx.logger, { rpc: "ForkSandbox" });
        results.push({ error: ce.rawMessage, errorCode: codeSnakeName(ce.code) });
      }
    }
  } finally {
    try {
      const snap = await findSnapshot(ctx.db, snapshot.id, ctx.cfg.hostDeadAfterMs);
      if (snap !== undefined) await removeSnapshot(ctx, snap);
    } catch (err) {
      // It stays listed (or hidden as 'deleting'); DeleteSnapshot can remove it later.
      ctx.logger.warn({ ...snapshotFields(snapshot), err }, "intermediate fork snapshot not deleted");
    }
  }
  ctx.logger.info(
    {
      ...snapshotFields(snapshot),
      "sandbox.id": sandboxId,
      count,
      ok: results.filter((r) => r.sandbox !== undefined).length,
    },
    "sandbox forked",
  );
  return { results };
}
