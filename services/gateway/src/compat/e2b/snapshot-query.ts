import { InvalidArgumentError } from "../../errors.js";
import { parseLimit, queryReader } from "./list-query.js";

const MAX_TOKEN_CHARS = 512;

/** `GET /snapshots` as the SDK sends it (`Sandbox.listSnapshots`). */
export interface SnapshotQuery {
  sandboxId: string | undefined;
  name: string | undefined;
  limit: number;
  /** Keyset cursor: the last item of the previous page. */
  after: SnapshotCursor | undefined;
}

export interface SnapshotCursor {
  createdAtMs: number;
  snapshotId: string;
}

/** Reads the query from the raw URL. Pure; bad values are InvalidArgumentErrors naming the parameter. */
export function parseSnapshotQuery(url: string): SnapshotQuery {
  const read = queryReader(url);
  const one = (k: string) => read(k) || undefined;
  const q: SnapshotQuery = {
    sandboxId: one("sandboxID"),
    name: one("name"),
    limit: parseLimit(one("limit")),
    after: undefined,
  };
  const token = one("nextToken");
  if (token !== undefined) q.after = parseToken(token);
  return q;
}

export function encodeToken(c: SnapshotCursor): string {
  return Buffer.from(`${c.createdAtMs}__${c.snapshotId}`, "utf8").toString("base64url");
}

function parseToken(token: string): SnapshotCursor {
  const bad = () => new InvalidArgumentError("'nextToken' is not a token this server issued");
  if (token.length > MAX_TOKEN_CHARS) throw bad();
  const raw = Buffer.from(token, "base64url").toString("utf8");
  const m = /^(\d{1,16})__(.+)$/.exec(raw);
  if (m === null) throw bad();
  return { createdAtMs: Number(m[1]), snapshotId: m[2]! };
}

/**
 * One page, newest first (ties by id, descending), strictly after the cursor: stable when
 * snapshots are added or deleted between pages. `nextToken` is set when more items follow.
 */
export function pageSnapshots<T extends SnapshotCursor & { name: string }>(
  items: readonly T[],
  q: Pick<SnapshotQuery, "name" | "limit" | "after">,
): { page: T[]; nextToken: string | undefined } {
  const cmp = (a: SnapshotCursor, b: SnapshotCursor) =>
    b.createdAtMs - a.createdAtMs || (a.snapshotId < b.snapshotId ? 1 : a.snapshotId > b.snapshotId ? -1 : 0);
  const after = q.after;
  const matching = items
    .filter((s) => q.name === undefined || s.name === q.name)
    .filter((s) => after === undefined || cmp(s, after) > 0)
    .sort(cmp);
  const page = matching.slice(0, q.limit);
  const last = page.at(-1);
  const nextToken =
    matching.length > page.length && last !== undefined
      ? encodeToken({ createdAtMs: last.createdAtMs, snapshotId: last.snapshotId })
      : undefined;
  return { page, nextToken };
}
