import type { FastifyInstance } from "fastify";
import { InvalidArgumentError } from "../../../errors.js";
import { listParam, oneParam, queryOf, toStringMap } from "../body.js";
import { type DaytonaContext, requestOrigin, toolboxProxyUrl } from "../context.js";
import { type ListFilter, listDaytonaSandboxes } from "../db.js";
import { sandboxDto } from "../dto.js";
import { LISTABLE_STATES } from "../lifecycle.js";

const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 200;
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
 */
export async function listRoute(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  app.get("/sandbox", async (req) => {
    const f = parseListQuery(req.url, req.daytonaOwner);
    const rows = await listDaytonaSandboxes(ctx.db, { ...f, limit: f.limit + 1 });
    const page = rows.slice(0, f.limit);
    const last = page[page.length - 1];
    const base = toolboxProxyUrl(requestOrigin(req));
    return {
      items: page.map((r) => sandboxDto(r, base, false)),
      nextCursor:
        rows.length > f.limit && last !== undefined ? encodeCursor(last.created_at, last.sandbox_id) : null,
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
