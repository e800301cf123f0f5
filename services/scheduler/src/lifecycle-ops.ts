import { Code, ConnectError } from "@connectrpc/connect";
import type { Context } from "./context.js";
import {
  beginReaperDelete,
  findSnapshot,
  getSandbox,
  holdsClaim,
  hostLoads,
  insertEvent,
  lockPlacement,
  lockSandbox,
  markArchived,
  markPaused,
  markUnarchived,
  moveToHost,
  type Queryable,
  type ReaperClaim,
  releaseReaperOp,
  type SandboxRow,
  type SandboxRowState,
  type SnapshotRow,
  setArchiveRefs,
} from "./db/queries.js";
import {
  HostFullError,
  SandboxNotFoundError,
  SnapshotRefusedError,
  VmmUnavailableError,
  WrongStateError,
} from "./domain/errors.js";
import { newSnapshotId } from "./domain/ids.js";
import { dueOp } from "./domain/lifecycle.js";
import { chooseHost, isLive } from "./domain/placement.js";
import { codeName, deleteVm, destroy, dropArchive, errorDetail, logFields } from "./provision.js";
import { checkSignature, restoreVmAs, takeSnapshot } from "./snapshots.js";

/**
 * The lifecycle transitions shared by the RPCs and the reaper: pause/stop (the runtime's
 * native pause: a freeze, or qemu's stop-snap), archive (signed snapshot -> archive storage ->
 * VM removed), unarchive (archive -> verified restore under the sandbox's own id) and the
 * reaper's delete. Every step is idempotent, so a reaper that takes over a dead one's lease
 * resumes wherever it stopped.
 */

export type Actor = "api" | "reaper";

/**
 * Pauses `cur` (locked by the caller's transaction `tx`, state running) on its host and
 * records it paused, as event "paused" (api) or "stopped" (reaper). If the host fails, it is
 * asked to thaw in case the pause landed after all, and VmmUnavailableError is thrown (the
 * caller's transaction rolls back); a host that already has it paused is taken at its word.
 */
export async function pauseLocked(
  ctx: Context,
  tx: Queryable,
  cur: SandboxRow,
  actor: Actor,
  detail = "",
): Promise<SandboxRow> {
  try {
    await ctx.vmm(cur.vmmUrl).pauseVm({ sandboxId: cur.id }, { timeoutMs: ctx.cfg.vmmCallTimeoutMs });
  } catch (err) {
    if (!(isFailedPrecondition(err) && (await hostSaysPaused(ctx, cur)) === true)) {
      await undoPause(ctx, cur);
      throw new VmmUnavailableError(
        `host '${cur.hostId}' could not pause sandbox '${cur.id}' (${codeName(err)}); try again`,
        { cause: err },
      );
    }
  }
  const paused = await markPaused(tx, cur.id);
  await insertEvent(tx, {
    sandboxId: cur.id,
    kind: actor === "api" ? "paused" : "stopped",
    fromState: "running",
    toState: "paused",
    actor,
    detail,
  });
  return paused;
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

/** Whether a transition happened, or why not (the claim is released either way). */
export type OpOutcome = { done: true; detail: string } | { done: false; why: string };

/**
 * The reaper's stop: the same native pause as PauseSandbox, under the row lock, only while the
 * row carries this claim and is still running and idle by the rule at `nowMs` (a takeover of
 * a dead reaper's claim does not stop a sandbox that has been used since).
 */
export function stopSandbox(ctx: Context, c: ReaperClaim, nowMs: number): Promise<OpOutcome> {
  return ctx.db.transaction(async (tx): Promise<OpOutcome> => {
    const cur = await lockSandbox(tx, c.id);
    if (cur === undefined) return { done: false, why: "gone" };
    if (!(await holdsClaim(tx, c))) return { done: false, why: "claim taken over" };
    let out: OpOutcome = { done: false, why: `it is ${cur.state}` };
    if (cur.state === "running" && dueOp({ ...cur.lifecycle, ...cur }, nowMs) === "stop") {
      const idleMin = Math.floor((nowMs - cur.lastActivityAt.getTime()) / 60_000);
      const { expiresAt, autoStopMinutes } = cur.lifecycle;
      const detail =
        expiresAt !== null && nowMs >= expiresAt.getTime()
          ? `deadline ${expiresAt.toISOString()} passed`
          : `idle ${idleMin} min (auto-stop ${autoStopMinutes} min)`;
      await pauseLocked(ctx, tx, cur, "reaper", detail);
      out = { done: true, detail };
    } else if (cur.state === "running") out = { done: false, why: "no longer idle" };
    await releaseReaperOp(tx, c);
    return out;
  });
}

/**
 * The reaper's archive of a paused sandbox. Each step is skipped when a previous (dead)
 * reaper already did it:
 *  1. a signed snapshot (takeSnapshot), its id recorded in archive_snapshot_id first; one
 *     recorded earlier is reused when it is ready and was taken since the sandbox was paused;
 *  2. vmm ArchiveSnapshot, its URI recorded in archive_uri;
 *  3. vmm DeleteVm and 4. state 'archived', in one transaction under the row lock, so a
 *     resume that came first wins (the archive is then dropped).
 */
export async function archiveSandbox(
  ctx: Context,
  c: ReaperClaim,
  nowMs: number,
  actor: Actor = "reaper",
): Promise<OpOutcome> {
  const fields = logFields(c);
  if (c.state !== "paused") {
    await releaseReaperOp(ctx.db, c);
    return { done: false, why: `it is ${c.state}` };
  }
  await insertEvent(ctx.db, {
    sandboxId: c.id,
    kind: "archiving",
    fromState: "paused",
    toState: "paused",
    actor,
    detail: c.archiveSnapshotId === null ? "" : `resuming (snapshot ${c.archiveSnapshotId})`,
  });
  const recorded =
    c.archiveSnapshotId === null
      ? undefined
      : await findSnapshot(ctx.db, c.archiveSnapshotId, ctx.cfg.hostDeadAfterMs);
  let snap: SnapshotRow;
  let uri: string | null = null;
  if (recorded !== undefined && reusable(recorded, c)) {
    snap = recorded;
    if (c.archiveUri?.endsWith(`/${snap.id}`)) uri = c.archiveUri;
    ctx.logger.info({ ...fields, "snapshot.id": snap.id, archived: uri !== null }, "archive resumed");
  } else {
    // Left by an attempt that did not finish (or one from before a resume): start over.
    if (c.archiveSnapshotId !== null) await dropArchive(ctx, c);
    const id = newSnapshotId();
    await setArchiveRefs(ctx.db, c.id, { snapshotId: id, uri: null });
    if (!(await holdsClaim(ctx.db, c))) return { done: false, why: "claim taken over" };
    snap = (await takeSnapshot(ctx, c.id, { name: undefined, metadata: { "dnah.archive_of": c.id }, id }))
      .snapshot;
  }
  let sizeBytes = snap.sizeBytes;
  if (uri === null) {
    try {
      const res = await ctx
        .vmm(snap.vmmUrl)
        .archiveSnapshot({ snapshotId: snap.id }, { timeoutMs: ctx.cfg.snapshotCallTimeoutMs });
      uri = res.archiveUri;
      sizeBytes = res.sizeBytes;
    } catch (err) {
      throw new VmmUnavailableError(
        `host '${snap.hostId}' could not archive snapshot ${snap.id} (${codeName(err)}): ${errorDetail(err)}`,
        { cause: err },
      );
    }
    await setArchiveRefs(ctx.db, c.id, { snapshotId: snap.id, uri });
  }
  const archiveUri = uri;
  return ctx.db.transaction(async (tx): Promise<OpOutcome> => {
    const cur = await lockSandbox(tx, c.id);
    if (cur === undefined) return { done: false, why: "gone" };
    if (!(await holdsClaim(tx, c))) return { done: false, why: "claim taken over" };
    if (cur.state !== "paused") {
      // Resumed while its archive was written: the archive is of no use any more.
      await setArchiveRefs(tx, c.id, { snapshotId: null, uri: null });
      await releaseReaperOp(tx, c);
      const left = { ...cur, archiveSnapshotId: snap.id, archiveUri };
      ctx.background("removal of an abandoned archive", fields, () => dropArchive(ctx, left));
      return { done: false, why: `it was resumed while archiving (now ${cur.state}); archive dropped` };
    }
    await deleteVm(ctx, cur);
    await markArchived(tx, c.id, new Date(nowMs));
    const detail = `${sizeBytes} bytes at ${archiveUri}`;
    await insertEvent(tx, {
      sandboxId: c.id,
      kind: "archived",
      fromState: "paused",
      toState: "archived",
      actor,
      detail,
    });
    return { done: true, detail };
  });
}

/** A recorded archive snapshot can be reused if it is whole and holds the current pause. */
function reusable(snap: SnapshotRow, row: SandboxRow): boolean {
  return (
    snap.state === "ready" &&
    snap.sandboxId === row.id &&
    row.pausedAt !== null &&
    Number(snap.createdAtMs) >= row.pausedAt.getTime()
  );
}

/**
 * The reaper's delete (of a paused or archived sandbox, or one whose delete a dead reaper
 * began): the VM, the archive and the snapshot it holds, then the row. The host must be live:
 * the archive is on its disk.
 */
export async function deleteByReaper(ctx: Context, c: ReaperClaim): Promise<OpOutcome> {
  if (!c.hostLive)
    throw new VmmUnavailableError(`host '${c.hostId}' is not live; the sandbox is deleted when it is back`);
  const row = await beginReaperDelete(ctx.db, c, ctx.cfg.hostDeadAfterMs);
  if (row === undefined) {
    await releaseReaperOp(ctx.db, c);
    return { done: false, why: "no longer due (resumed or deleted meanwhile)" };
  }
  await destroy(ctx, row, row.hostLive);
  const l = c.lifecycle;
  const detail =
    c.state === "running"
      ? `deadline ${l.expiresAt?.toISOString() ?? ""} passed`
      : c.state === "paused" && l.deleteOnStop
        ? "delete on stop"
        : c.state === "archived" || c.state === "paused"
          ? `${c.state === "archived" ? "archived" : "stopped"}; auto-delete ${l.autoDeleteDays} d${l.clock === "last_activity" ? " after the last activity" : ""}`
          : "delete resumed";
  await insertEvent(ctx.db, {
    sandboxId: c.id,
    kind: "deleted",
    fromState: c.state,
    toState: "deleted",
    actor: "reaper",
    detail,
  });
  return { done: true, detail };
}

/**
 * Brings an archived sandbox back under its own id: its snapshot's signature is checked
 * (snapshot service), the host copies the archive back (UnarchiveSnapshot) and restores it,
 * checking every file, before anything runs. The row stays locked and 'archived' until the
 * sandbox runs, so a failure (a tampered archive) leaves it archived, with nothing started.
 * Events: "unarchiving" (size), "unarchived" (duration). The snapshot and the archive are
 * removed afterwards (in the background: the sandbox no longer needs them).
 */
export async function unarchiveSandbox(ctx: Context, id: string): Promise<SandboxRow> {
  const started = performance.now();
  const first = await getSandbox(ctx.db, id);
  if (first === undefined) throw new SandboxNotFoundError(id);
  if (first.state !== "archived")
    throw new WrongStateError(`sandbox '${id}' is not archived (it is ${first.state})`);
  const snapId = first.archiveSnapshotId!;
  const snap = await findSnapshot(ctx.db, snapId, ctx.cfg.hostDeadAfterMs);
  if (snap === undefined)
    throw new SnapshotRefusedError(`sandbox '${id}': its archive snapshot ${snapId} is missing`);
  await checkSignature(ctx, snap);
  const fields = { ...logFields(first), "snapshot.id": snap.id };
  let restoredOn: Pick<SandboxRow, "hostId" | "vmmUrl"> = first;
  const row = await ctx.db.transaction(async (tx) => {
    let cur = await lockSandbox(tx, id);
    if (cur === undefined) throw new SandboxNotFoundError(id);
    if (cur.state !== "archived")
      throw new WrongStateError(`sandbox '${id}' is not archived (it is ${cur.state})`);
    if (
      cur.reaperOp !== null &&
      cur.reaperOpAt !== null &&
      ctx.clock.now() - cur.reaperOpAt.getTime() < ctx.cfg.reaperLeaseMs
    )
      throw new WrongStateError(`sandbox '${id}' is being ${cur.reaperOp}d by the reaper`);
    const { now, hosts } = await hostLoads(tx);
    const host = hosts.find((h) => h.hostId === cur!.hostId);
    const usable =
      host !== undefined && isLive(host, now, ctx.cfg.hostDeadAfterMs) && host.running < host.capacity;
    if (!usable && isSharedArchive(cur.archiveUri)) {
      // Shared archive storage: any live host with room can bring it back (under the
      // placement lock, like any placement); the sandbox and its snapshot move there.
      await lockPlacement(tx);
      const fresh = await hostLoads(tx);
      const to = chooseHost(
        fresh.hosts.filter((h) => h.hostId !== cur!.hostId && h.runtime === cur!.runtime),
        fresh.now,
        ctx.cfg.hostDeadAfterMs,
        {
          cpuCount: cur.cpuCount,
          memoryMib: cur.memoryMib,
          policy: ctx.cfg.placementPolicy,
          minFreeDiskMib: ctx.cfg.minFreeDiskMib,
        },
      );
      await moveToHost(tx, id, snap.id, to.hostId);
      ctx.logger.info(
        { ...fields, from: cur.hostId, to: to.hostId },
        "archived sandbox moves to another host",
      );
      cur = { ...cur, hostId: to.hostId, vmmUrl: to.vmmUrl };
    } else if (host === undefined || !isLive(host, now, ctx.cfg.hostDeadAfterMs))
      throw new VmmUnavailableError(
        `host '${cur.hostId}', which holds the archive of sandbox '${id}', is not live; try again when it is back`,
      );
    else if (host.running >= host.capacity)
      throw new HostFullError(
        `host '${cur.hostId}', which holds the archive of sandbox '${id}', is full (${host.running} of ${host.capacity} sandboxes); try later`,
      );
    restoredOn = cur;
    // Outside the transaction: a caller listing events sees them while the resume runs.
    const unarchiving = (detail: string) =>
      insertEvent(ctx.db, {
        sandboxId: id,
        kind: "unarchiving",
        fromState: "archived",
        toState: "archived",
        actor: "api",
        detail,
      });
    await unarchiving(`${snap.sizeBytes} bytes from ${cur.archiveUri}`);
    try {
      const stream = ctx
        .vmm(cur.vmmUrl)
        .unarchiveSnapshot(
          { snapshotId: snap.id, archiveUri: cur.archiveUri! },
          { timeoutMs: ctx.cfg.snapshotCallTimeoutMs },
        );
      // Progress as events a caller can list while the resume runs: every tenth.
      let reportedTenth = 0;
      for await (const m of stream) {
        if (m.done) {
          ctx.logger.info(
            { ...fields, sizeBytes: Number(m.sizeBytes), copyMs: m.durationMs },
            "archive copied back",
          );
          // No break: the stream ends after its totals, and reading it to its end is what
          // releases the call (a break leaves the client's deadline timer running).
          continue;
        }
        const tenth = m.totalBytes === 0n ? 0 : Number((m.copiedBytes * 10n) / m.totalBytes);
        if (tenth <= reportedTenth || tenth >= 10) continue;
        reportedTenth = tenth;
        await unarchiving(`${tenth * 10}% (${m.copiedBytes} of ${m.totalBytes} bytes)`);
      }
    } catch (err) {
      // A copy left by an earlier attempt is as good: RestoreVm checks every file of it.
      if (ConnectError.from(err).code !== Code.AlreadyExists)
        throw new VmmUnavailableError(
          `host '${cur.hostId}' could not bring back the archive of sandbox '${id}' (${codeName(err)}); try again`,
          { cause: err },
        );
    }
    let restored: { runtime: string };
    try {
      restored = await restoreVmAs(ctx, snap, cur);
    } catch (err) {
      await insertEvent(ctx.db, {
        sandboxId: id,
        kind: "failed",
        fromState: "archived",
        toState: "archived",
        actor: "api",
        detail: `unarchive: ${errorDetail(err)}`,
      });
      throw err;
    }
    const running = await markUnarchived(tx, id, restored.runtime);
    await insertEvent(tx, {
      sandboxId: id,
      kind: "unarchived",
      fromState: "archived",
      toState: "running",
      actor: "api",
      detail: `${Math.round(performance.now() - started)} ms`,
    });
    return running;
  });
  ctx.background("removal of a restored archive", fields, () =>
    dropArchive(ctx, { ...first, hostId: restoredOn.hostId, vmmUrl: restoredOn.vmmUrl }),
  );
  ctx.logger.info({ ...fields, totalMs: Math.round(performance.now() - started) }, "sandbox unarchived");
  return row;
}

/** Archive storage every host can read (an S3-compatible bucket), unlike a host's folder. */
function isSharedArchive(uri: string | null): boolean {
  return uri?.startsWith("s3://") ?? false;
}

/** A sandbox its host no longer has, as `markLost…` or a heartbeat found it: logged and recorded. */
export async function recordLost(
  ctx: Pick<Context, "db" | "logger">,
  l: { id: string; hostId: string; from: SandboxRowState },
  why: string,
): Promise<void> {
  ctx.logger.warn({ "sandbox.id": l.id, "host.id": l.hostId, was: l.from, why }, "sandbox lost");
  await insertEvent(ctx.db, {
    sandboxId: l.id,
    kind: "lost",
    fromState: l.from,
    toState: "lost",
    actor: "reaper",
    detail: `host '${l.hostId}' ${why}`,
  });
}
