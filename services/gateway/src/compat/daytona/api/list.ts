import type { FastifyInstance } from "fastify";
import { InvalidArgumentError } from "../../../errors.js";
import { listParam, oneParam, queryOf, toStringMap } from "../body.js";
import { type DaytonaContext, requestOrigin, toolboxProxyUrl } from "../context.js";
import { type ListFilter, listDaytonaSandboxes } from "../db.js";
import { sandboxDto } from "../dto.js";
import { LISTABLE_STATES } from "../lifecycle.js";
import { viewsOf } from "../native.js";

const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 200;
/** At most this many batches are read for one page; the cursor then resumes after the last. */
const MAX_BATCHES = 4;
/** The settled states a row can move between when its native state is read (lifecycle.ts). */
const FOLLOWING: ReadonlySet<string> = new Set(["started", "stopped", "paused", "archived"]);
/** Filters Daytona has that this server does not apply: refused, never silently ignored. */
const UNSUPPORTED = [
  "regionIds",
  "sandboxClasses",
  "minCpu",
  "maxCpu",
  "minMemoryGiB",
  "maxMemoryGiB",
  "minDiskGiB",
  "maxDiskGiB",
  "minGpu",
  "maxGpu",
  "isRecoverable",
  "lastEventAfter",
  "lastEventBefore",
  "autoDestroyAtAfter",
  "autoDestroyAtBefore",
];

/**
 * `GET /sandbox` → `{items, nextCursor}` (spec §5.1): the caller's sandboxes, newest first
 * (or `order=asc`), filtered by `labels` (a JSON object; every pair must match), `id`, `name`,
 * `states`, `snapshots`, `isPublic`, `createdAtAfter|Before`. Keyset paging: `nextCursor` is
 * an opaque position, null on the last page. Items carry no `env` (spec §12.3).
 *
 * Each page is read against the native sandboxes (native.ts `viewsOf`: one ListSandboxes, or
 * a few GetSandbox for small pages), for the intervals and for the state the reaper may have
 * changed: rows move along, gone ones drop out. So a `states` filter on a settled state is
 * asked of the table widened to every settled state and applied after that read; a page short
 * of matches reads the next batch (at most MAX_BATCHES, then the cursor resumes there).
 */
export async function listRoute(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  app.get("/sandbox", async (req) => {
    const f = parseListQuery(req.url, req.daytonaOwner);
    const origin = requestOrigin(req);
    const wanted = f.states === undefined ? undefined : new Set(f.states);
    const states = f.states?.some((s) => FOLLOWING.has(s))
      ? [...new Set([...f.states, ...FOLLOWING])]
      : f.states;
    const items: Awaited<ReturnType<typeof viewsOf>> = [];
    let after = f.after;
    let cursor: { createdAt: Date; id: string } | undefined;
    for (let batch = 0; ; batch++) {
      const rows = await listDaytonaSandboxes(ctx.db, { ...f, states, after, limit: f.limit + 1 });
      for (const v of await viewsOf(ctx, f.owner, rows, origin))
        if (wanted === undefined || wanted.has(v.row.state)) items.push(v);
      if (items.length > f.limit) {
        const last = items[f.limit - 1]!.row;
        cursor = { createdAt: last.created_at, id: last.sandbox_id };
        break;
      }
      const scanned = rows[rows.length - 1];
      if (rows.length <= f.limit || scanned === undefined) break;
      after = { createdAt: scanned.created_at, id: scanned.sandbox_id };
      if (batch + 1 >= MAX_BATCHES) {
        cursor = after;
        break;
      }
    }
    const base = toolboxProxyUrl(origin);
    return {
      items: items.slice(0, f.limit).map((v) => sandboxDto(v.row, v.native, base, false)),
      nextCursor: cursor === undefined ? null : encodeCursor(cursor.createdAt, cursor.id),
    };
  });
}

export function parseListQuery(url: string, owner: string): ListFilter {
  const q = queryOf(url);
  for (const k of UNSUPPORTED) {
    if (q.has(k)) throw new InvalidArgumentError(`the ${k} filter is not supported`);
  }
  for (const k of ["includeErroredDeleted", "includeWarm"]) {
    const v = oneParam(q, k);
    if (v !== undefined && v !== "false" && v !== "true")
      throw new InvalidArgumentError(`${k} must be true or false`);
  }
  const sort = oneParam(q, "sort");
  if (sort !== undefined && sort !== "createdAt")
    throw new InvalidArgumentError("sort: only createdAt is supported");
  const order = oneParam(q, "order") ?? "desc";
  if (order !== "asc" && order !== "desc") throw new InvalidArgumentError("order must be asc or desc");
  const limitRaw = oneParam(q, "limit");
  let limit = DEFAULT_LIMIT;
  if (limitRaw !== undefined) {
    if (!/^\d{1,4}$/.test(limitRaw) || Number(limitRaw) < 1 || Number(limitRaw) > MAX_LIMIT)
      throw new InvalidArgumentError(`limit must be an integer from 1 to ${MAX_LIMIT}`);
    limit = Number(limitRaw);
  }
  let labels: Record<string, string> = {};
  const labelsRaw = oneParam(q, "labels");
  if (labelsRaw !== undefined && labelsRaw !== "") {
    let parsed: unknown;
    try {
      parsed = JSON.parse(labelsRaw);
    } catch {
      throw new InvalidArgumentError('labels must be a JSON object, e.g. {"team":"core"}');
    }
    labels = toStringMap(parsed, "labels");
  }
  const states = listParam(q, "states");
  for (const s of states ?? []) {
    if (!LISTABLE_STATES.has(s)) throw new InvalidArgumentError(`unknown state ${s.slice(0, 32)}`);
  }
  const isPublicRaw = oneParam(q, "isPublic");
  if (isPublicRaw !== undefined && isPublicRaw !== "true" && isPublicRaw !== "false")
    throw new InvalidArgumentError("isPublic must be true or false");
  const cursor = oneParam(q, "cursor");
  return {
    owner,
    ids: listParam(q, "id"),
    names: listParam(q, "name"),
    labels,
    states,
    snapshots: listParam(q, "snapshots"),
    isPublic: isPublicRaw === undefined ? undefined : isPublicRaw === "true",
    createdAfter: dateParam(q, "createdAtAfter"),
    createdBefore: dateParam(q, "createdAtBefore"),
    after: cursor === undefined || cursor === "" ? undefined : decodeCursor(cursor),
    order,
    limit,
  };
}

function dateParam(q: URLSearchParams, key: string): Date | undefined {
  const v = oneParam(q, key);
  if (v === undefined) return undefined;
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) throw new InvalidArgumentError(`${key} must be an ISO-8601 date-time`);
  return d;
}

/** created_at is stored to the millisecond (0004_daytona.sql), so a Date carries it exactly. */
export function encodeCursor(createdAt: Date, id: string): string {
  return Buffer.from(JSON.stringify([createdAt.toISOString(), id])).toString("base64url");
}

export function decodeCursor(s: string): { createdAt: Date; id: string } {
  try {
    const v: unknown = JSON.parse(Buffer.from(s, "base64url").toString("utf8"));
    if (Array.isArray(v) && v.length === 2 && typeof v[0] === "string" && typeof v[1] === "string") {
      const createdAt = new Date(v[0]);
      if (!Number.isNaN(createdAt.getTime())) return { createdAt, id: v[1] };
    }
  } catch {
    // falls through to the error below
  }
  throw new InvalidArgumentError("cursor is not one this server returned");
}
