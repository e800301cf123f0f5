import type { Db } from "@dnah/platform";
import type { DaytonaState } from "./lifecycle.js";

type Q = Pick<Db, "query">;

/**
 * A row of gateway_daytona_sandboxes (0004_daytona.sql, 0007_daytona_native_lifecycle.sql):
 * the Daytona view only. Intervals and the idle clock are the native lifecycle's.
 */
export interface DaytonaRow {
  sandbox_id: string;
  owner_sha256: string;
  name: string;
  snapshot: string;
  os_user: string;
  labels: Record<string, string>;
  env: Record<string, string>;
  cpu: number;
  memory_gib: number;
  disk_gib: number;
  public: boolean;
  network_block_all: boolean;
  network_allow_list: string | null;
  target: string;
  state: DaytonaState;
  error_reason: string | null;
  preview_token: string;
  created_at: Date;
  updated_at: Date;
}

const COLUMNS = `sandbox_id, owner_sha256, name, snapshot, os_user, labels, env, cpu, memory_gib, disk_gib,
  public, network_block_all, network_allow_list, target, state, error_reason, preview_token,
  created_at, updated_at`;

export type NewDaytonaRow = Omit<DaytonaRow, "created_at" | "updated_at" | "error_reason">;

/** Records a new sandbox; false when the owner already has one with that name. */
export async function insertDaytonaSandbox(db: Q, r: NewDaytonaRow): Promise<DaytonaRow | undefined> {
  const { rows } = await db.query<DaytonaRow>(
    `INSERT INTO gateway_daytona_sandboxes (sandbox_id, owner_sha256, name, snapshot, os_user, labels,
       env, cpu, memory_gib, disk_gib, public, network_block_all, network_allow_list, target, state,
       preview_token)
     VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, $10, $11, $12, $13, $14, $15, $16)
     ON CONFLICT (owner_sha256, name) DO NOTHING
     RETURNING ${COLUMNS}`,
    [
      r.sandbox_id,
      r.owner_sha256,
      r.name,
      r.snapshot,
      r.os_user,
      JSON.stringify(r.labels),
      JSON.stringify(r.env),
      r.cpu,
      r.memory_gib,
      r.disk_gib,
      r.public,
      r.network_block_all,
      r.network_allow_list,
      r.target,
      r.state,
      r.preview_token,
    ],
  );
  return rows[0];
}

export async function nameTaken(db: Q, owner: string, name: string): Promise<boolean> {
  const { rows } = await db.query(
    "SELECT 1 AS ok FROM gateway_daytona_sandboxes WHERE owner_sha256 = $1 AND name = $2",
    [owner, name],
  );
  return rows.length > 0;
}

/**
 * Postgres text cannot hold NUL: a key with one names no row, and asking would fail the query
 * (a 500 for what is a caller's typo or probe).
 */
const storable = (key: string) => !key.includes("\0");

/** The owner's sandbox with this id, else the one with this name. */
export async function findDaytonaSandbox(
  db: Q,
  owner: string,
  idOrName: string,
): Promise<DaytonaRow | undefined> {
  if (!storable(idOrName)) return undefined;
  const { rows } = await db.query<DaytonaRow>(
    `SELECT ${COLUMNS} FROM gateway_daytona_sandboxes
     WHERE owner_sha256 = $1 AND (sandbox_id = $2 OR name = $2)
     ORDER BY (sandbox_id = $2) DESC LIMIT 1`,
    [owner, idOrName],
  );
  return rows[0];
}

/** Any owner's sandbox by id (the toolbox and preview check the owner or token themselves). */
export async function daytonaSandboxById(db: Q, sandboxId: string): Promise<DaytonaRow | undefined> {
  if (!storable(sandboxId)) return undefined;
  const { rows } = await db.query<DaytonaRow>(
    `SELECT ${COLUMNS} FROM gateway_daytona_sandboxes WHERE sandbox_id = $1`,
    [sandboxId],
  );
  return rows[0];
}

/**
 * Moves a sandbox from one of `from` to `to`; undefined when it is in none of them (someone
 * else moved it first).
 */
export async function transition(
  db: Q,
  sandboxId: string,
  from: readonly DaytonaState[],
  to: DaytonaState,
  opts: { errorReason?: string | null } = {},
): Promise<{ row: DaytonaRow; old: DaytonaState } | undefined> {
  const { rows } = await db.query<DaytonaRow & { old_state: DaytonaState }>(
    `UPDATE gateway_daytona_sandboxes d SET state = $3, updated_at = now(), error_reason = $4
     FROM (SELECT sandbox_id, state AS old_state FROM gateway_daytona_sandboxes
           WHERE sandbox_id = $1 FOR UPDATE) o
     WHERE d.sandbox_id = o.sandbox_id AND o.old_state = ANY($2::text[])
     RETURNING ${COLUMNS.split(",")
       .map((c) => `d.${c.trim()}`)
       .join(", ")}, o.old_state`,
    [sandboxId, [...from], to, opts.errorReason ?? null],
  );
  const r = rows[0];
  if (r === undefined) return undefined;
  const { old_state, ...row } = r;
  return { row, old: old_state };
}

export async function deleteDaytonaRow(db: Q, sandboxId: string): Promise<void> {
  await db.query("DELETE FROM gateway_daytona_sandboxes WHERE sandbox_id = $1", [sandboxId]);
}

export async function setLabels(
  db: Q,
  sandboxId: string,
  labels: Record<string, string>,
): Promise<DaytonaRow | undefined> {
  const { rows } = await db.query<DaytonaRow>(
    `UPDATE gateway_daytona_sandboxes SET labels = $2::jsonb, updated_at = now()
     WHERE sandbox_id = $1 RETURNING ${COLUMNS}`,
    [sandboxId, JSON.stringify(labels)],
  );
  return rows[0];
}

export interface ListFilter {
  owner: string;
  ids: string[] | undefined;
  names: string[] | undefined;
  labels: Record<string, string>;
  states: string[] | undefined;
  snapshots: string[] | undefined;
  isPublic: boolean | undefined;
  createdAfter: Date | undefined;
  createdBefore: Date | undefined;
  /** Keyset: strictly after this (created_at, sandbox_id) in the order asked. */
  after: { createdAt: Date; id: string } | undefined;
  order: "asc" | "desc";
  limit: number;
}

/** One page of the owner's sandboxes by creation time (keyset paging: stable under inserts). */
export async function listDaytonaSandboxes(db: Q, f: ListFilter): Promise<DaytonaRow[]> {
  const cmp = f.order === "desc" ? "<" : ">";
  const dir = f.order === "desc" ? "DESC" : "ASC";
  const { rows } = await db.query<DaytonaRow>(
    `SELECT ${COLUMNS} FROM gateway_daytona_sandboxes
     WHERE owner_sha256 = $1
       AND labels @> $2::jsonb
       AND ($3::text[] IS NULL OR sandbox_id = ANY($3))
       AND ($4::text[] IS NULL OR name = ANY($4))
       AND ($5::text[] IS NULL OR state = ANY($5))
       AND ($6::text[] IS NULL OR snapshot = ANY($6))
       AND ($7::boolean IS NULL OR public = $7)
       AND ($8::timestamptz IS NULL OR created_at > $8)
       AND ($9::timestamptz IS NULL OR created_at < $9)
       AND ($10::timestamptz IS NULL OR (created_at, sandbox_id) ${cmp} ($10, $11::text))
       AND state <> 'destroyed'
     ORDER BY created_at ${dir}, sandbox_id ${dir}
     LIMIT $12`,
    [
      f.owner,
      JSON.stringify(f.labels),
      f.ids ?? null,
      f.names ?? null,
      f.states ?? null,
      f.snapshots ?? null,
      f.isPublic ?? null,
      f.createdAfter ?? null,
      f.createdBefore ?? null,
      f.after?.createdAt ?? null,
      f.after?.id ?? null,
      f.limit,
    ],
  );
  return rows;
}
