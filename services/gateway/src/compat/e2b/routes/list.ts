import { create } from "@bufbuild/protobuf";
import { ListSandboxesRequestSchema, SandboxState } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { InvalidArgumentError } from "../../../errors.js";
import { listSandboxes } from "../../../rpc/list-sandboxes.js";
import type { E2bContext } from "../context.js";
import { sandboxEnds } from "../db.js";
import { listedSandboxJson, startedAtOf } from "../views.js";

const MAX_LIMIT = 100;

interface ListQuery {
  metadata: Record<string, string>;
  states: Set<string>;
  template: string | undefined;
  startedAfter: Date | undefined;
  order: "asc" | "desc";
  limit: number;
}

/**
 * `GET /v2/sandboxes` and `GET /sandboxes` (v1, running only): `ListedSandbox[]`. Only running
 * sandboxes exist here (no pause yet), so `state=paused` alone lists nothing. No pagination:
 * at most `limit` items and never an `X-Next-Token`; a `nextToken` is ignored.
 */
export async function listRoute(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  for (const url of ["/v2/sandboxes", "/sandboxes"]) {
    app.get(url, { config: { e2bApi: true } }, async (req) => {
      const q = parseListQuery(req.url);
      if (!q.states.has("running")) return [];
      const res = await listSandboxes(ctx.deps, create(ListSandboxesRequestSchema, { metadata: q.metadata }));
      const items = res.sandboxes
        .filter((s) => s.state === SandboxState.RUNNING)
        .filter((s) => q.template === undefined || s.templateId === q.template)
        .filter((s) => q.startedAfter === undefined || startedAtOf(s) >= q.startedAfter)
        .sort((a, b) => (startedAtOf(a).getTime() - startedAtOf(b).getTime()) * (q.order === "asc" ? 1 : -1))
        .slice(0, q.limit);
      const ends = await sandboxEnds(
        ctx.db,
        items.map((s) => s.sandboxId),
      );
      return items.map((s) => listedSandboxJson(s, ends.get(s.sandboxId)));
    });
  }
}

/** The query as E2B encodes it (spec §5.2), read from the raw URL. */
export function parseListQuery(url: string): ListQuery {
  const qs = new URLSearchParams(url.includes("?") ? url.slice(url.indexOf("?") + 1) : "");
  const one = (k: string) => {
    const all = qs.getAll(k);
    if (all.length > 1) throw new InvalidArgumentError(`query parameter '${k}' must be given once`);
    return all[0];
  };
  const q: ListQuery = {
    metadata: {},
    states: new Set(["running", "paused"]),
    template: undefined,
    startedAfter: undefined,
    order: "desc",
    limit: MAX_LIMIT,
  };
  const metadata = one("metadata");
  if (metadata !== undefined && metadata !== "") q.metadata = parseMetadataFilter(metadata);
  const state = one("state");
  if (state !== undefined) {
    q.states = new Set(state.split(",").filter((s) => s !== ""));
    for (const s of q.states) {
      if (s !== "running" && s !== "paused")
        throw new InvalidArgumentError(`unknown state '${s.slice(0, 32)}'`);
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
  const limit = one("limit");
  if (limit !== undefined) {
    const n = Number(limit);
    if (!/^\d+$/.test(limit) || n < 1 || n > MAX_LIMIT)
      throw new InvalidArgumentError(`'limit' must be an integer from 1 to ${MAX_LIMIT}`);
    q.limit = n;
  }
  return q;
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
