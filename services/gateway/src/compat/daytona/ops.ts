import { create } from "@bufbuild/protobuf";
import {
  ArchiveSandboxRequestSchema,
  DeleteSandboxRequestSchema,
  GetSandboxRequestSchema,
  PauseSandboxRequestSchema,
  ResumeSandboxRequestSchema,
  SandboxState,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { FailedPreconditionError, SandboxNotFoundError } from "../../errors.js";
import { archiveSandbox as archiveNative } from "../../rpc/archive-sandbox.js";
import { deleteSandbox } from "../../rpc/delete-sandbox.js";
import { getSandbox } from "../../rpc/get-sandbox.js";
import { pauseSandbox } from "../../rpc/pause-sandbox.js";
import { resumeSandbox } from "../../rpc/resume-sandbox.js";
import type { DaytonaContext } from "./context.js";
import { type DaytonaRow, daytonaSandboxById, deleteDaytonaRow, transition } from "./db.js";
import { type DaytonaState, FROM } from "./lifecycle.js";

/**
 * The lifecycle actions, shared by the routes and the sweeper. Each moves the row through an
 * intermediate state (stopping, starting, destroying) with a compare-and-set, calls the native
 * RPC, then lands in the final state; every move is emitted on socket.io. A failed native call
 * leaves the sandbox in `error` with the reason (Daytona shows it in SDK errors).
 */

function moved(ctx: DaytonaContext, origin: string | undefined, t: { row: DaytonaRow; old: DaytonaState }) {
  ctx.events.stateUpdated(t.row, t.old, origin);
  return t.row;
}

function wrongState(row: DaytonaRow, action: string): FailedPreconditionError {
  return new FailedPreconditionError(`Sandbox ${row.sandbox_id} is ${row.state}; cannot ${action} it`);
}

function isNotFound(err: unknown): boolean {
  return err instanceof SandboxNotFoundError;
}

/** The native sandbox is gone (deleted behind our back): forget the row too. */
async function vanished(ctx: DaytonaContext, row: DaytonaRow, origin: string | undefined): Promise<never> {
  await deleteDaytonaRow(ctx.db, row.sandbox_id);
  ctx.events.destroyed(row, origin);
  throw new SandboxNotFoundError(row.sandbox_id);
}

async function fail(
  ctx: DaytonaContext,
  row: DaytonaRow,
  from: DaytonaState,
  reason: string,
  origin: string | undefined,
): Promise<void> {
  const t = await transition(ctx.db, row.sandbox_id, [from], "error", { errorReason: reason });
  if (t !== undefined) moved(ctx, origin, t);
}

/** started → stopping → stopped (native pause). An ephemeral sandbox (autoDelete 0) is then deleted. */
export async function stopSandbox(
  ctx: DaytonaContext,
  row: DaytonaRow,
  origin: string | undefined,
): Promise<DaytonaRow> {
  if (row.state === "stopped") return row;
  const done = await pauseNative(ctx, row, origin, FROM.stop, "stopping", "stopped");
  if (done.state === "stopped" && done.auto_delete_min === 0) {
    await destroySandbox(ctx, done, origin);
    return { ...done, state: "destroyed" };
  }
  return done;
}

/** started → pausing → paused (SDK `pause()`: the native pause, memory and disk kept). */
export async function pauseDaytonaSandbox(
  ctx: DaytonaContext,
  row: DaytonaRow,
  origin: string | undefined,
): Promise<DaytonaRow> {
  if (row.state === "paused") return row;
  return pauseNative(ctx, row, origin, FROM.pause, "pausing", "paused");
}

/** `from` → `via` → native pause → `to`; the row as it ended. */
async function pauseNative(
  ctx: DaytonaContext,
  row: DaytonaRow,
  origin: string | undefined,
  from: readonly DaytonaState[],
  via: "stopping" | "pausing",
  to: "stopped" | "paused",
): Promise<DaytonaRow> {
  const action = to === "stopped" ? "stop" : "pause";
  const t = await transition(ctx.db, row.sandbox_id, from, via);
  if (t === undefined) throw wrongState(row, action);
  moved(ctx, origin, t);
  try {
    await pauseSandbox(ctx.deps, create(PauseSandboxRequestSchema, { sandboxId: row.sandbox_id }));
  } catch (err) {
    if (isNotFound(err)) return vanished(ctx, t.row, origin);
    // Already paused underneath (a retried stop): that is the goal.
    if (
      !(err instanceof FailedPreconditionError) ||
      !(await nativeIs(ctx, row.sandbox_id, SandboxState.PAUSED))
    ) {
      ctx.logger.warn({ err, "sandbox.id": row.sandbox_id }, `daytona ${action} failed`);
      await fail(ctx, t.row, via, `${action} failed; start it again or delete it`, origin);
      throw err;
    }
  }
  const done = await transition(ctx.db, row.sandbox_id, [via], to);
  if (done === undefined) return (await daytonaSandboxById(ctx.db, row.sandbox_id)) ?? t.row;
  return moved(ctx, origin, done);
}

/** stopped | archived | paused | error → starting → started (native resume). */
export async function startSandbox(
  ctx: DaytonaContext,
  row: DaytonaRow,
  origin: string | undefined,
): Promise<DaytonaRow> {
  if (row.state === "started") return row;
  const t = await transition(ctx.db, row.sandbox_id, FROM.start, "starting", { touch: true });
  if (t === undefined) throw wrongState(row, "start");
  moved(ctx, origin, t);
  try {
    await resumeSandbox(ctx.deps, create(ResumeSandboxRequestSchema, { sandboxId: row.sandbox_id }));
  } catch (err) {
    if (isNotFound(err)) return vanished(ctx, t.row, origin);
    // Running already underneath (an `error` from a failed stop, a retried start): fine.
    if (
      !(err instanceof FailedPreconditionError) ||
      !(await nativeIs(ctx, row.sandbox_id, SandboxState.RUNNING))
    ) {
      ctx.logger.warn({ err, "sandbox.id": row.sandbox_id }, "daytona start failed");
      await fail(ctx, t.row, "starting", "start failed; try again or delete it", origin);
      throw err;
    }
  }
  const done = await transition(ctx.db, row.sandbox_id, ["starting"], "started", { touch: true });
  if (done === undefined) return (await daytonaSandboxById(ctx.db, row.sandbox_id)) ?? t.row;
  return moved(ctx, origin, done);
}

/**
 * stopped → archiving → archived: the native archive (a signed snapshot moved to archive
 * storage; the sandbox leaves its host). A failed archive leaves it stopped (still paused on
 * its host, unharmed) and the error goes to the caller.
 */
export async function archiveSandbox(
  ctx: DaytonaContext,
  row: DaytonaRow,
  origin: string | undefined,
): Promise<DaytonaRow> {
  if (row.state === "archived") return row;
  const t = await transition(ctx.db, row.sandbox_id, ["stopped"], "archiving");
  if (t === undefined) throw wrongState(row, "archive (stop it first)");
  moved(ctx, origin, t);
  try {
    await archiveNative(ctx.deps, create(ArchiveSandboxRequestSchema, { sandboxId: row.sandbox_id }));
  } catch (err) {
    if (isNotFound(err)) return vanished(ctx, t.row, origin);
    ctx.logger.warn({ err, "sandbox.id": row.sandbox_id }, "daytona archive failed; left stopped");
    const back = await transition(ctx.db, row.sandbox_id, ["archiving"], "stopped");
    if (back !== undefined) moved(ctx, origin, back);
    throw err;
  }
  const done = await transition(ctx.db, row.sandbox_id, ["archiving"], "archived");
  if (done === undefined) return (await daytonaSandboxById(ctx.db, row.sandbox_id)) ?? t.row;
  return moved(ctx, origin, done);
}

/** any → destroying → gone (row deleted; GET answers 404 afterwards). */
export async function destroySandbox(
  ctx: DaytonaContext,
  row: DaytonaRow,
  origin: string | undefined,
): Promise<void> {
  const t = await transition(ctx.db, row.sandbox_id, FROM.delete, "destroying");
  if (t === undefined) throw wrongState(row, "delete");
  moved(ctx, origin, t);
  try {
    await deleteSandbox(ctx.deps, create(DeleteSandboxRequestSchema, { sandboxId: row.sandbox_id }));
  } catch (err) {
    if (!isNotFound(err)) {
      ctx.logger.warn({ err, "sandbox.id": row.sandbox_id }, "daytona delete failed");
      await fail(ctx, t.row, "destroying", "delete failed; try again", origin);
      throw err;
    }
  }
  await deleteDaytonaRow(ctx.db, row.sandbox_id);
  ctx.events.destroyed(t.row, origin);
}

/** Whether the native sandbox is in `state` (false when it cannot be told). */
async function nativeIs(ctx: DaytonaContext, sandboxId: string, state: SandboxState): Promise<boolean> {
  try {
    const res = await getSandbox(ctx.deps, create(GetSandboxRequestSchema, { sandboxId }));
    return res.sandbox?.state === state;
  } catch (err) {
    ctx.logger.debug({ err, "sandbox.id": sandboxId }, "cannot look up a native sandbox state");
    return false;
  }
}

/**
 * For a GET: a row whose native sandbox is gone (deleted through another API, or lost with its
 * host) is forgotten, and the caller gets 404, as for any deleted sandbox.
 */
export async function reconcile(
  ctx: DaytonaContext,
  row: DaytonaRow,
  origin: string | undefined,
): Promise<DaytonaRow> {
  if (!["started", "stopped", "archived", "paused", "archiving"].includes(row.state)) return row;
  try {
    await getSandbox(ctx.deps, create(GetSandboxRequestSchema, { sandboxId: row.sandbox_id }));
  } catch (err) {
    if (isNotFound(err)) return vanished(ctx, row, origin);
    throw err;
  }
  return row;
}
