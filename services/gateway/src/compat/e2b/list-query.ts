import { InvalidArgumentError } from "../../errors.js";

/** E2B's `limit`: 1–100, default 100 (spec §5.2). */
export const MAX_LIMIT = 100;
const MAX_TOKEN_CHARS = 512;

export type E2bState = "running" | "paused";

export interface ListQuery {
  metadata: Record<string, string>;
  states: Set<E2bState>;
  template: string | undefined;
  startedAfter: Date | undefined;
  order: "asc" | "desc";
  limit: number;
  /** Keyset cursor: the last item of the previous page. */
  after: Cursor | undefined;
}

/** A position in the listing order: start time, then id (ties). */
export interface Cursor {
  startedAtMs: number;
  sandboxId: string;
}

/**
 * The `GET /v2/sandboxes` query as the SDK encodes it (spec §5.2), read from the raw URL.
 * Pure; every bad value is an InvalidArgumentError naming the parameter.
 */
export function parseListQuery(url: string): ListQuery {
  const one = queryReader(url);
  const q: ListQuery = {
    metadata: {},
    states: new Set(["running", "paused"]),
    template: undefined,
    startedAfter: undefined,
    order: "desc",
    limit: MAX_LIMIT,
    after: undefined,
  };
  const metadata = one("metadata");
  if (metadata !== undefined && metadata !== "") q.metadata = parseMetadataFilter(metadata);
  const state = one("state");
  if (state !== undefined && state !== "") {
    q.states = new Set();
    for (const s of state.split(",")) {
      if (s === "") continue;
      if (s !== "running" && s !== "paused")
        throw new InvalidArgumentError(`unknown state '${s.slice(0, 32)}'; use running or paused`);
      q.states.add(s);
    }
  }
  const template = one("template");
  if (template !== undefined && template !== "") q.template = template;
  const startedAfter = one("startedAfter");
  if (startedAfter !== undefined) {
    const d = new Date(startedAfter);
    if (Number.isNaN(d.getTime()))
      throw new InvalidArgumentError("'startedAfter' must be an ISO-8601 date-time");
    q.startedAfter = d;
  }
  const order = one("order");
  if (order !== undefined) {
    if (order !== "asc" && order !== "desc") throw new InvalidArgumentError("'order' must be asc or desc");
    q.order = order;
  }
  q.limit = parseLimit(one("limit"));
  const token = one("nextToken");
  if (token !== undefined && token !== "") q.after = decodeCursor(token);
  return q;
}

/**
 * The query string of a raw URL, read one parameter at a time: its value, undefined when
 * absent; a parameter given twice is an InvalidArgumentError.
 */
export function queryReader(url: string): (name: string) => string | undefined {
  const qs = new URLSearchParams(url.includes("?") ? url.slice(url.indexOf("?") + 1) : "");
  return (k) => {
    const all = qs.getAll(k);
    if (all.length > 1) throw new InvalidArgumentError(`query parameter '${k}' must be given once`);
    return all[0];
  };
}

/** E2B's `limit` parameter: 1–100, `MAX_LIMIT` when absent. */
export function parseLimit(raw: string | undefined): number {
  if (raw === undefined) return MAX_LIMIT;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || n < 1 || n > MAX_LIMIT)
    throw new InvalidArgumentError(`'limit' must be an integer from 1 to ${MAX_LIMIT}`);
  return n;
}

/**
 * infra `parseFilters`: unescape the whole value, split on `&` then the first `=`, unescape
 * each key and value (`a%2520b=c%2526d%253De` → `{"a b": "c&d=e"}`).
 */
export function parseMetadataFilter(raw: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of queryUnescape(raw).split("&")) {
    if (pair === "") continue;
    const eq = pair.indexOf("=");
    if (eq <= 0) throw new InvalidArgumentError("'metadata' must be key=value pairs");
    out[queryUnescape(pair.slice(0, eq))] = queryUnescape(pair.slice(eq + 1));
  }
  return out;
}

/** Go's url.QueryUnescape: `+` is a space, `%XX` a byte. */
function queryUnescape(s: string): string {
  try {
    return decodeURIComponent(s.replace(/\+/g, " "));
  } catch {
    throw new InvalidArgumentError("'metadata' is not validly escaped");
  }
}

/** `X-Next-Token`: base64url of `<start ms>__<id>` (opaque to the SDK, which echoes it). */
export function encodeCursor(c: Cursor): string {
  return Buffer.from(`${c.startedAtMs}__${c.sandboxId}`, "utf8").toString("base64url");
}

export function decodeCursor(token: string): Cursor {
  const bad = () => new InvalidArgumentError("'nextToken' is not a token this server issued");
  if (token.length > MAX_TOKEN_CHARS || !/^[A-Za-z0-9_-]+$/.test(token)) throw bad();
  const m = /^(\d{1,16})__([a-z0-9-]{1,128})$/.exec(Buffer.from(token, "base64url").toString("utf8"));
  if (m === null) throw bad();
  return { startedAtMs: Number(m[1]), sandboxId: m[2]! };
}

export interface Listable {
  sandboxId: string;
  templateId: string;
  startedAt: Date;
  state: E2bState;
}

/**
 * Filters (state, template, start time), orders (start time, then id) and cuts one page
 * after the cursor. `nextToken` is set only when more items follow; `totalRunning` counts the
 * running matches before paging (infra's `X-Total-Running`). Pure.
 */
export function pageOf<T extends Listable>(
  all: readonly T[],
  q: ListQuery,
): { page: T[]; nextToken: string | undefined; totalRunning: number } {
  const dir = q.order === "asc" ? 1 : -1;
  const cmp = (a: Cursor, b: Cursor) =>
    (a.startedAtMs - b.startedAtMs || (a.sandboxId < b.sandboxId ? -1 : a.sandboxId > b.sandboxId ? 1 : 0)) *
    dir;
  const key = (s: T): Cursor => ({ startedAtMs: s.startedAt.getTime(), sandboxId: s.sandboxId });
  const matching = all
    .filter((s) => q.states.has(s.state))
    .filter((s) => q.template === undefined || s.templateId === q.template)
    .filter((s) => q.startedAfter === undefined || s.startedAt >= q.startedAfter)
    .sort((a, b) => cmp(key(a), key(b)));
  const totalRunning = matching.filter((s) => s.state === "running").length;
  const after = q.after;
  const rest = after === undefined ? matching : matching.filter((s) => cmp(key(s), after) > 0);
  const page = rest.slice(0, q.limit);
  const last = page.at(-1);
  const nextToken = rest.length > page.length && last !== undefined ? encodeCursor(key(last)) : undefined;
  return { page, nextToken, totalRunning };
}
