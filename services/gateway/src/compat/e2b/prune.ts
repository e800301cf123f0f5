import { create } from "@bufbuild/protobuf";
import { ListSandboxesRequestSchema } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { listSandboxes } from "../../rpc/list-sandboxes.js";
import type { E2bContext } from "./context.js";
import { pruneE2bSandboxes } from "./db.js";

/** How often records of sandboxes gone are looked for. */
const PRUNE_INTERVAL_MS = 60_000;
/** Records younger than this are kept whatever the list says (a create in flight). */
const MIN_AGE_S = 120;

/**
 * E2B's `timeout` is the native lifecycle's deadline: `expiresAt`, and `onExpire` stop for
 * `autoPause`. The scheduler's reaper kills or pauses a sandbox when it passes (with an event,
 * under a lease, once across replicas). What is left to the gateway is forgetting the E2B
 * records (and tunnels) of sandboxes that are gone, which this loop does every minute.
 */
export function startRecordPruner(ctx: E2bContext): () => Promise<void> {
  let stopped = false;
  let running: Promise<void> = Promise.resolve();
  const prune = async () => {
    const { sandboxes } = await listSandboxes(ctx.deps, create(ListSandboxesRequestSchema, {}));
    const gone = await pruneE2bSandboxes(
      ctx.db,
      sandboxes.map((s) => s.sandboxId),
      MIN_AGE_S,
    );
    for (const id of gone) ctx.tunnels.forget(id);
    if (gone.length > 0) ctx.logger.info({ count: gone.length }, "forgot E2B records of deleted sandboxes");
  };
  const timer = setInterval(() => {
    running = running
      .then(() => (stopped ? undefined : prune()))
      .catch((err: unknown) => ctx.logger.warn({ err }, "E2B record prune failed; retrying"));
  }, PRUNE_INTERVAL_MS);
  timer.unref();
  return async () => {
    stopped = true;
    clearInterval(timer);
    await running;
  };
}
