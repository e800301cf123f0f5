import { create } from "@bufbuild/protobuf";
import {
  ArchiveSandboxRequestSchema,
  DeleteSandboxRequestSchema,
  PauseSandboxRequestSchema,
  ResumeSandboxRequestSchema,
  type Sandbox,
  SandboxState,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { FailedPreconditionError, SandboxNotFoundError } from "../../errors.js";
import { archiveSandbox as archiveNative } from "../../rpc/archive-sandbox.js";
import { deleteSandbox } from "../../rpc/delete-sandbox.js";
import { pauseSandbox } from "../../rpc/pause-sandbox.js";
import { resumeSandbox } from "../../rpc/resume-sandbox.js";
import type { DaytonaContext } from "./context.js";
import { type DaytonaRow, daytonaSandboxById, deleteDaytonaRow, transition } from "./db.js";
import { type DaytonaState, FROM } from "./lifecycle.js";
import { nativeOf } from "./native.js";

/**
 * The lifecycle actions of the Daytona routes. Each moves the row through an intermediate
 * state (stopping, starting, destroying) with a compare-and-set, calls the native RPC, then
 * lands in the final state; every move is emitted on socket.io. A failed native call leaves
 * the sandbox in `error` with the reason (Daytona shows it in SDK errors). Auto-stop, archive
 * and delete are the scheduler's reaper's, on the native lifecycle; reads catch up with them
 * (native.ts). Callers pass the row as `viewOf` left it, with its native sandbox.
 */

/** A row and its native sandbox (undefined when it could not be read after a move). */
export interface Viewed {
  row: DaytonaRow;
  native: Sandbox | undefined;
}

function moved(
  ctx: DaytonaContext,
  origin: string | undefined,
  t: { row: DaytonaRow; old: DaytonaState },
  native: Sandbox | undefined,
) {
  ctx.events.stateUpdated(t.row, t.old, origin, native);
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
  ctx.events.destroyed(row, origin, undefined);
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
  if (t !== undefined) moved(ctx, origin, t, undefined);
}

/** The row after a move another call may have overtaken, with the native sandbox. */
async function landed(
  ctx: DaytonaContext,
  origin: string | undefined,
  done: { row: DaytonaRow; old: DaytonaState } | undefined,
  fallback: DaytonaRow,
  native: Sandbox | undefined,
): Promise<Viewed> {
  if (done !== undefined) return { row: moved(ctx, origin, done, native), native };
  return { row: (await daytonaSandboxById(ctx.db, fallback.sandbox_id)) ?? fallback, native };
}

/**
 * started → stopping → stopped (native pause). An ephemeral sandbox (autoDelete 0: the native
 * deleteOnStop) is then deleted by the scheduler's reaper, on its next pass.
 */
export async function stopSandbox(
  ctx: DaytonaContext,
  v: Viewed,
  origin: string | undefined,
): Promise<Viewed> {
  if (v.row.state === "stopped") return v;
  return pauseNative(ctx, v, origin, FROM.stop, "stopping", "stopped");
}

/** started → pausing → paused (SDK `pause()`: the native pause, memory and disk kept). */
export async function pauseDaytonaSandbox(
  ctx: DaytonaContext,
  v: Viewed,
  origin: string | undefined,
): Promise<Viewed> {
  if (v.row.state === "paused") return v;
  return pauseNative(ctx, v, origin, FROM.pause, "pausing", "paused");
}

/** `from` → `via` → native pause → `to`; the row as it ended. */
async function pauseNative(
  ctx: DaytonaContext,
  v: Viewed,
  origin: string | undefined,
  from: readonly DaytonaState[],
  via: "stopping" | "pausing",
  to: "stopped" | "paused",
): Promise<Viewed> {
  const { row } = v;
  const action = to === "stopped" ? "stop" : "pause";
  const t = await transition(ctx.db, row.sandbox_id, from, via);
  if (t === undefined) throw wrongState(row, action);
  moved(ctx, origin, t, v.native);
  let native: Sandbox | undefined;
  try {
    ({ sandbox: native } = await pauseSandbox(
      ctx.deps,
      create(PauseSandboxRequestSchema, { sandboxId: row.sandbox_id }),
    ));
  } catch (err) {
    if (isNotFound(err)) return vanished(ctx, t.row, origin);
    // Already paused underneath (a retried stop, or the reaper's auto-stop): that is the goal.
    native =
      err instanceof FailedPreconditionError ? await nativeIn(ctx, row, SandboxState.PAUSED) : undefined;
    if (native === undefined) {
      ctx.logger.warn({ err, "sandbox.id": row.sandbox_id }, `daytona ${action} failed`);
      await fail(ctx, t.row, via, `${action} failed; start it again or delete it`, origin);
      throw err;
    }
  }
  const done = await transition(ctx.db, row.sandbox_id, [via], to);
  return landed(ctx, origin, done, t.row, native);
}

/** stopped | archived | paused | error → starting → started (native resume). */
export async function startSandbox(
  ctx: DaytonaContext,
  v: Viewed,
  origin: string | undefined,
): Promise<Viewed> {
  const { row } = v;
  if (row.state === "started") return v;
  const t = await transition(ctx.db, row.sandbox_id, FROM.start, "starting");
  if (t === undefined) throw wrongState(row, "start");
  moved(ctx, origin, t, v.native);
  let native: Sandbox | undefined;
  try {
    // A resume counts as activity: the scheduler moves the idle clock itself.
    ({ sandbox: native } = await resumeSandbox(
      ctx.deps,
      create(ResumeSandboxRequestSchema, { sandboxId: row.sandbox_id }),
    ));
  } catch (err) {
    if (isNotFound(err)) return vanished(ctx, t.row, origin);
    // Running already underneath (an `error` from a failed stop, a retried start): fine.
    native =
      err instanceof FailedPreconditionError ? await nativeIn(ctx, row, SandboxState.RUNNING) : undefined;
    if (native === undefined) {
      ctx.logger.warn({ err, "sandbox.id": row.sandbox_id }, "daytona start failed");
      await fail(ctx, t.row, "starting", "start failed; try again or delete it", origin);
      throw err;
    }
  }
  const done = await transition(ctx.db, row.sandbox_id, ["starting"], "started");
  return landed(ctx, origin, done, t.row, native);
}

/**
 * stopped → archiving → archived: the native archive (a signed snapshot moved to archive
 * storage; the sandbox leaves its host). A failed archive leaves it stopped (still paused on
 * its host, unharmed) and the error goes to the caller.
 */
export async function archiveSandbox(
  ctx: DaytonaContext,
  v: Viewed,
  origin: string | undefined,
): Promise<Viewed> {
  const { row } = v;
  if (row.state === "archived") return v;
  const t = await transition(ctx.db, row.sandbox_id, ["stopped"], "archiving");
  if (t === undefined) throw wrongState(row, "archive (stop it first)");
  moved(ctx, origin, t, v.native);
  let native: Sandbox | undefined;
  try {
    ({ sandbox: native } = await archiveNative(
      ctx.deps,
      create(ArchiveSandboxRequestSchema, { sandboxId: row.sandbox_id }),
    ));
  } catch (err) {
    if (isNotFound(err)) return vanished(ctx, t.row, origin);
    ctx.logger.warn({ err, "sandbox.id": row.sandbox_id }, "daytona archive failed; left stopped");
    const back = await transition(ctx.db, row.sandbox_id, ["archiving"], "stopped");
    if (back !== undefined) moved(ctx, origin, back, v.native);
    throw err;
  }
  const done = await transition(ctx.db, row.sandbox_id, ["archiving"], "archived");
  return landed(ctx, origin, done, t.row, native);
}

/** any → destroying → gone (row deleted; GET answers 404 afterwards). */
export async function destroySandbox(
  ctx: DaytonaContext,
  v: Viewed,
  origin: string | undefined,
): Promise<void> {
  const { row } = v;
  const t = await transition(ctx.db, row.sandbox_id, FROM.delete, "destroying");
  if (t === undefined) throw wrongState(row, "delete");
  moved(ctx, origin, t, v.native);
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
  ctx.events.destroyed(t.row, origin, v.native);
}

/** The native sandbox when it is in `state` (undefined otherwise, or when it cannot be told). */
async function nativeIn(
  ctx: DaytonaContext,
  row: DaytonaRow,
  state: SandboxState,
): Promise<Sandbox | undefined> {
  try {
    const native = await nativeOf(ctx, row.sandbox_id);
    return native?.state === state ? native : undefined;
  } catch (err) {
    ctx.logger.debug({ err, "sandbox.id": row.sandbox_id }, "cannot look up a native sandbox state");
    return undefined;
  }
}
