import { Code, ConnectError } from "@connectrpc/connect";
import type { Context } from "./context.js";
import {
  countPool,
  deleteSnapshotRow,
  findSnapshot,
  type HostLoadRow,
  hostLoads,
  insertSandbox,
  lockPlacement,
  markDeleted,
  markFailed,
  markRunning,
  type NewSandbox,
  type Queryable,
  type SandboxRow,
  type TemplateRow,
} from "./db/queries.js";
import {
  HostFullError,
  type NoCapacityError,
  SandboxNotFoundError,
  VmmUnavailableError,
} from "./domain/errors.js";
import { newSandboxId } from "./domain/ids.js";
import type { LifecycleSettings } from "./domain/lifecycle.js";
import { chooseHost, isLive, type PlacementRequest, placeMany } from "./domain/placement.js";

/**
 * The steps every path that makes or destroys a VM shares (cold create, pool refill, delete,
 * drain): reserve a slot on a host, boot it, tear it down.
 */

export interface Owner {
  metadata: Record<string, string>;
  envVars: Record<string, string>;
  /** Persistent (never anything automatic) when not given. */
  lifecycle?: LifecycleSettings | undefined;
  /** Only hosts with all these labels. */
  hostLabels?: Record<string, string> | undefined;
}

/** What placing one sandbox of `template` asks of a host. */
function placementOf(ctx: Context, template: TemplateRow, labels?: Record<string, string>): PlacementRequest {
  return {
    cpuCount: template.cpuCount,
    memoryMib: template.memoryMib,
    templateId: template.id,
    // A built template exists only where it was built; installed ones are built on demand.
    requireTemplate: template.readyBuildId !== null,
    policy: ctx.cfg.placementPolicy,
    cpuOvercommit: ctx.cfg.cpuOvercommit,
    minFreeDiskMib: ctx.cfg.minFreeDiskMib,
    ...(labels !== undefined ? { labels } : {}),
  };
}

export const logFields = (row: Pick<SandboxRow, "id" | "hostId">) => ({
  "sandbox.id": row.id,
  "host.id": row.hostId,
});

/** The tail of each scheduler's queue of placement transactions. */
const placements = new WeakMap<Context, Promise<unknown>>();

/**
 * A transaction under the placement lock. Placements serialize on that Postgres lock anyway
 * (replicas too); queueing this process's ones first means a burst of creates keeps one
 * pooled connection waiting for the lock instead of all of them. (50 creates at once used to
 * hold the whole pool for seconds: heartbeats waited behind them, long enough for a live host
 * to count as dead and the creates after to fail with "no live host".)
 */
function underPlacementLock<T>(ctx: Context, fn: (tx: Queryable) => Promise<T>): Promise<T> {
  const run = (placements.get(ctx) ?? Promise.resolve()).then(() =>
    ctx.db.transaction(async (tx) => {
      await lockPlacement(tx);
      return fn(tx);
    }),
  );
  placements.set(
    ctx,
    run.catch(() => undefined),
  );
  return run;
}

/** Places one sandbox on the least loaded live host and records it as 'starting'. */
export function reserveSandbox(ctx: Context, template: TemplateRow, owner: Owner): Promise<SandboxRow> {
  return underPlacementLock(ctx, async (tx) => {
    const { now, hosts } = await hostLoads(tx);
    const host = chooseHost(
      hosts,
      now,
      ctx.cfg.hostDeadAfterMs,
      placementOf(ctx, template, owner.hostLabels),
    );
    return insertSandbox(tx, newRow(template, host, false, owner));
  });
}

/**
 * Records a user's sandbox as 'starting' on one given host (a restore: the snapshot's files
 * are on that host's disk), under the placement lock and within the host's capacity, which
 * counts starting, running and paused sandboxes like any placement. `holding` says why that
 * host, for the errors.
 */
export function reserveOnHost(
  ctx: Context,
  hostId: string,
  holding: string,
  s: Omit<NewSandbox, "id" | "hostId" | "pooled" | "runtime">,
): Promise<SandboxRow> {
  return underPlacementLock(ctx, async (tx) => {
    const { now, hosts } = await hostLoads(tx);
    const host = hosts.find((h) => h.hostId === hostId);
    if (host === undefined || !isLive(host, now, ctx.cfg.hostDeadAfterMs))
      throw new VmmUnavailableError(
        `host '${hostId}', which holds ${holding}, is not live; try again when it is back`,
      );
    if (host.running >= host.capacity)
      throw new HostFullError(
        `host '${hostId}', which holds ${holding}, is full (${host.running} of ${host.capacity} sandboxes); delete a sandbox there or try later`,
      );
    return insertSandbox(tx, { ...s, id: newSandboxId(), hostId, pooled: false, runtime: host.runtime });
  });
}

/**
 * Reserves as many warm sandboxes as the template's pool lacks (booting ones count), under
 * the placement lock so that replicas never overshoot the target together.
 */
export function reservePoolSlots(
  ctx: Context,
  template: TemplateRow,
): Promise<{ rows: SandboxRow[]; shortfall: NoCapacityError | undefined }> {
  return underPlacementLock(ctx, async (tx) => {
    const deficit = template.poolTarget - (await countPool(tx, template.id, ctx.cfg.hostDeadAfterMs));
    if (deficit <= 0) return { rows: [], shortfall: undefined };
    const { now, hosts } = await hostLoads(tx);
    const { placed, shortfall } = placeMany(
      hosts,
      deficit,
      now,
      ctx.cfg.hostDeadAfterMs,
      placementOf(ctx, template),
    );
    const rows: SandboxRow[] = [];
    for (const host of placed)
      rows.push(await insertSandbox(tx, newRow(template, host, true, { metadata: {}, envVars: {} })));
    return { rows, shortfall };
  });
}

function newRow(template: TemplateRow, host: HostLoadRow, pooled: boolean, owner: Owner) {
  return {
    id: newSandboxId(),
    templateId: template.id,
    hostId: host.hostId,
    pooled,
    metadata: owner.metadata,
    envVars: owner.envVars,
    lifecycle: owner.lifecycle,
    cpuCount: template.cpuCount,
    memoryMib: template.memoryMib,
    runtime: host.runtime,
  };
}

/**
 * Boots a reserved sandbox on its host and marks it running. On failure the row becomes
 * 'error', the host is asked (in the background) to remove whatever it got to, and a
 * VmmUnavailableError is thrown; the caller logs it with its own context.
 */
export async function boot(
  ctx: Context,
  row: SandboxRow,
  opts: { background?: boolean } = {},
): Promise<SandboxRow> {
  let runtime = "";
  try {
    const res = await ctx.vmm(row.vmmUrl).createVm(
      {
        sandboxId: row.id,
        templateId: row.templateId,
        envVars: row.envVars,
        cpuCount: row.cpuCount,
        memoryMib: row.memoryMib,
        background: opts.background ?? false,
      },
      { timeoutMs: ctx.cfg.vmBootTimeoutMs },
    );
    runtime = res.vm?.runtime ?? "";
  } catch (err) {
    await markFailed(ctx.db, row.id, `CreateVm: ${errorDetail(err)}`);
    // The vmm may have got part of the way, or finished after our deadline; DeleteVm of an
    // unknown id succeeds, so asking is always safe.
    ctx.background("cleanup after a failed boot", logFields(row), () => deleteVm(ctx, row));
    // The host is out of something (its disk): retrying there will not help until it has room.
    if (ConnectError.from(err).code === Code.ResourceExhausted)
      throw new HostFullError(
        `host '${row.hostId}' cannot start the sandbox: ${ConnectError.from(err).rawMessage}`,
      );
    throw new VmmUnavailableError(
      `could not start sandbox on host '${row.hostId}' (${codeName(err)}); try again`,
      { cause: err },
    );
  }
  const running = await markRunning(ctx.db, row.id, runtime);
  if (running === undefined) {
    // Deleted while it booted: the VM that was just made has no row left to own it.
    ctx.background("cleanup of a sandbox deleted while starting", logFields(row), () => deleteVm(ctx, row));
    throw new SandboxNotFoundError(row.id);
  }
  return running;
}

/**
 * Destroys a sandbox already marked 'deleting' and marks it deleted. A dead host is not
 * asked (it would only time out); the row is marked deleted anyway and the skip is logged.
 */
export async function destroy(ctx: Context, row: SandboxRow, hostLive: boolean): Promise<void> {
  if (hostLive) {
    try {
      await deleteVm(ctx, row);
      await dropArchive(ctx, row);
    } catch (err) {
      throw new VmmUnavailableError(
        `host '${row.hostId}' could not delete sandbox '${row.id}' (${codeName(err)}); try again`,
        { cause: err },
      );
    }
  } else {
    ctx.logger.warn(logFields(row), "host is dead: sandbox marked deleted without DeleteVm");
  }
  await markDeleted(ctx.db, row.id);
  ctx.logger.info({ ...logFields(row), pooled: row.pooled }, "sandbox deleted");
}

/**
 * Removes what an archive of the sandbox left (its archive copy, its snapshot's files and
 * record), whatever step it reached; each call is idempotent. Nothing to do without one.
 */
export async function dropArchive(
  ctx: Context,
  row: Pick<SandboxRow, "id" | "hostId" | "vmmUrl" | "archiveSnapshotId" | "archiveUri">,
): Promise<void> {
  const timeoutMs = ctx.cfg.snapshotCallTimeoutMs;
  if (row.archiveUri !== null)
    await ctx.vmm(row.vmmUrl).deleteArchive({ archiveUri: row.archiveUri }, { timeoutMs });
  if (row.archiveSnapshotId === null) return;
  const snap = await findSnapshot(ctx.db, row.archiveSnapshotId, ctx.cfg.hostDeadAfterMs);
  if (snap !== undefined) {
    await ctx.vmm(snap.vmmUrl).deleteSnapshot({ snapshotId: snap.id }, { timeoutMs });
    await deleteSnapshotRow(ctx.db, snap.id);
  }
  ctx.logger.info(
    { ...logFields(row), "snapshot.id": row.archiveSnapshotId, archived: row.archiveUri !== null },
    "archive of the sandbox removed",
  );
}

export async function deleteVm(ctx: Context, row: Pick<SandboxRow, "id" | "vmmUrl">): Promise<void> {
  await ctx.vmm(row.vmmUrl).deleteVm({ sandboxId: row.id }, { timeoutMs: ctx.cfg.vmDeleteTimeoutMs });
}

/** The Connect code name of an upstream failure, safe to show to callers. */
export function codeName(err: unknown): string {
  return Code[ConnectError.from(err).code] ?? "Unknown";
}

/** The full upstream error, for logs and the row's error column (never sent to callers). */
export function errorDetail(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
