import { create } from "@bufbuild/protobuf";
import {
  GetSandboxRequestSchema,
  ListSandboxesRequestSchema,
  type Sandbox,
  SandboxState,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SandboxNotFoundError } from "../../errors.js";
import { getSandbox } from "../../rpc/get-sandbox.js";
import { listSandboxes } from "../../rpc/list-sandboxes.js";
import type { DaytonaContext } from "./context.js";
import { type DaytonaRow, deleteDaytonaRow, transition } from "./db.js";
import { organizationIdOf } from "./dto.js";
import { observedState } from "./lifecycle.js";

/**
 * The native sandbox under a Daytona row: its lifecycle (the intervals) and its state, which
 * the scheduler's reaper changes on its own (stop, archive, delete). Reads here move the
 * Daytona row along (`observe`), so every later read agrees.
 */

/**
 * Native metadata naming the Daytona organization (API key) a sandbox belongs to: one
 * ListSandboxes filtered by it reads a whole list page. Forks inherit it.
 */
export const ORG_METADATA_KEY = "dnah.daytona.org";

/**
 * Pages up to this size read each native sandbox by id (in parallel: as cheap as one list
 * call, and independent of how many sandboxes the organization has); larger ones list.
 */
export const PER_ID_MAX = 4;

/** States a list page asks the native list for (every one a Daytona row can sit on). */
const LISTED_STATES = [
  SandboxState.STARTING,
  SandboxState.RUNNING,
  SandboxState.PAUSED,
  SandboxState.STOPPED,
  SandboxState.ARCHIVED,
];

/** The native sandbox; undefined when it is gone (unknown or deleted). */
export async function nativeOf(ctx: DaytonaContext, sandboxId: string): Promise<Sandbox | undefined> {
  try {
    const { sandbox } = await getSandbox(ctx.deps, create(GetSandboxRequestSchema, { sandboxId }));
    return sandbox === undefined || sandbox.state === SandboxState.DELETED ? undefined : sandbox;
  } catch (err) {
    if (err instanceof SandboxNotFoundError) return undefined;
    throw err;
  }
}

/**
 * Brings the row in line with its native sandbox (undefined: gone). A move is a
 * compare-and-set from the state read, emitted on socket.io; a gone sandbox's row is deleted
 * and the answer is undefined. A row another call moved meanwhile is left to it.
 */
export async function observe(
  ctx: DaytonaContext,
  row: DaytonaRow,
  native: Sandbox | undefined,
  origin: string | undefined,
): Promise<DaytonaRow | undefined> {
  const next = observedState(row.state, native?.state ?? "gone");
  if (next === undefined) return row;
  if (next === "gone") {
    await deleteDaytonaRow(ctx.db, row.sandbox_id);
    ctx.events.destroyed(row, origin, undefined);
    ctx.logger.info({ "sandbox.id": row.sandbox_id, was: row.state }, "daytona sandbox gone underneath");
    return undefined;
  }
  const t = await transition(ctx.db, row.sandbox_id, [row.state], next);
  if (t === undefined) return row;
  ctx.logger.info(
    { "sandbox.id": row.sandbox_id, from: t.old, to: next },
    "daytona sandbox moved by its native state",
  );
  ctx.events.stateUpdated(t.row, t.old, origin, native);
  return t.row;
}

/** The row as its native sandbox has it now, with that sandbox; 404 once it is gone. */
export async function viewOf(
  ctx: DaytonaContext,
  row: DaytonaRow,
  origin: string | undefined,
): Promise<{ row: DaytonaRow; native: Sandbox }> {
  const native = await nativeOf(ctx, row.sandbox_id);
  const seen = await observe(ctx, row, native, origin);
  if (seen === undefined || native === undefined) throw new SandboxNotFoundError(row.sandbox_id);
  return { row: seen, native };
}

/**
 * A list page's rows in line with their native sandboxes, each with it; gone ones are left
 * out (and their rows deleted). Small pages read by id; larger ones with one native
 * ListSandboxes filtered by the owner's organization tag, then by id for any row the list
 * did not have (created before the tag, or lost with its host).
 */
export async function viewsOf(
  ctx: DaytonaContext,
  owner: string,
  rows: readonly DaytonaRow[],
  origin: string | undefined,
): Promise<{ row: DaytonaRow; native: Sandbox }[]> {
  const found = new Map<string, Sandbox>();
  if (rows.length > PER_ID_MAX) {
    const { sandboxes } = await listSandboxes(
      ctx.deps,
      create(ListSandboxesRequestSchema, {
        metadata: { [ORG_METADATA_KEY]: organizationIdOf(owner) },
        states: LISTED_STATES,
      }),
    );
    const wanted = new Set(rows.map((r) => r.sandbox_id));
    for (const s of sandboxes) if (wanted.has(s.sandboxId)) found.set(s.sandboxId, s);
  }
  const natives = await Promise.all(
    rows.map(async (r) => found.get(r.sandbox_id) ?? (await nativeOf(ctx, r.sandbox_id))),
  );
  const out: { row: DaytonaRow; native: Sandbox }[] = [];
  for (const [i, r] of rows.entries()) {
    const native = natives[i];
    const seen = await observe(ctx, r, native, origin);
    if (seen !== undefined && native !== undefined) out.push({ row: seen, native });
  }
  return out;
}
