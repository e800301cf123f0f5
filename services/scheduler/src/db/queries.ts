import type { Db } from "@dnah/platform";

/** Anything that runs SQL: the pool or a transaction. */
export type Queryable = Pick<Db, "query">;

export type SandboxRowState =
  | "starting"
  | "running"
  | "paused"
  | "stopped"
  | "deleting"
  | "deleted"
  | "error";

export interface SandboxRow {
  id: string;
  templateId: string;
  hostId: string;
  /** From the host's row; the gateway opens tunnels here. */
  vmmUrl: string;
  state: SandboxRowState;
  pooled: boolean;
  metadata: Record<string, string>;
  envVars: Record<string, string>;
  cpuCount: number;
  memoryMib: number;
  runtime: string;
  createdAt: Date;
  /** Set while paused. */
  pausedAt: Date | null;
}

export interface TemplateRow {
  id: string;
  aliases: string[];
  cpuCount: number;
  memoryMib: number;
  poolTarget: number;
}

export interface HostLoadRow {
  hostId: string;
  vmmUrl: string;
  runtime: string;
  capacity: number;
  /** The larger of what the host reported and what the database says it runs or boots. */
  running: number;
  lastHeartbeat: Date;
}

/** States in which a sandbox is the user's and visible to Get and List. */
const VISIBLE = "('starting', 'running', 'paused', 'stopped')";

/** States that occupy a slot on their host: a paused sandbox keeps its memory there. */
const OCCUPYING = "('starting', 'running', 'paused', 'deleting')";

const SANDBOX_COLUMNS = `s.id, s.template_id, s.host_id, h.vmm_url, s.state, s.pooled, s.metadata, s.env_vars,
  s.cpu_count, s.memory_mib, s.runtime, s.created_at, s.paused_at`;

interface RawSandbox {
  id: string;
  template_id: string;
  host_id: string;
  vmm_url: string;
  state: SandboxRowState;
  pooled: boolean;
  metadata: Record<string, string>;
  env_vars: Record<string, string>;
  cpu_count: number;
  memory_mib: number;
  runtime: string;
  created_at: Date;
  paused_at: Date | null;
}

function toSandbox(r: RawSandbox): SandboxRow {
  return {
    id: r.id,
    templateId: r.template_id,
    hostId: r.host_id,
    vmmUrl: r.vmm_url,
    state: r.state,
    pooled: r.pooled,
    metadata: r.metadata,
    envVars: r.env_vars,
    cpuCount: r.cpu_count,
    memoryMib: r.memory_mib,
    runtime: r.runtime,
    createdAt: r.created_at,
    pausedAt: r.paused_at,
  };
}

// ---- templates

interface RawTemplate {
  id: string;
  aliases: string[];
  cpu_count: number;
  memory_mib: number;
  pool_target: number;
}

function toTemplate(r: RawTemplate): TemplateRow {
  return {
    id: r.id,
    aliases: r.aliases,
    cpuCount: r.cpu_count,
    memoryMib: r.memory_mib,
    poolTarget: r.pool_target,
  };
}

const TEMPLATE_COLUMNS = "id, aliases, cpu_count, memory_mib, pool_target";

/** A template by id or, failing that, by alias. */
export async function getTemplate(db: Queryable, idOrAlias: string): Promise<TemplateRow | undefined> {
  const { rows } = await db.query<RawTemplate>(
    `SELECT ${TEMPLATE_COLUMNS} FROM templates WHERE id = $1 OR aliases @> ARRAY[$1::text]
     ORDER BY id = $1 DESC, id LIMIT 1`,
    [idOrAlias],
  );
  return rows[0] && toTemplate(rows[0]);
}

export async function listPoolTemplates(db: Queryable): Promise<TemplateRow[]> {
  const { rows } = await db.query<RawTemplate>(
    `SELECT ${TEMPLATE_COLUMNS} FROM templates WHERE pool_target > 0 ORDER BY id`,
  );
  return rows.map(toTemplate);
}

/** Returns false when the template does not exist. */
export async function setPoolTarget(db: Queryable, templateId: string, target: number): Promise<boolean> {
  const { rows } = await db.query("UPDATE templates SET pool_target = $2 WHERE id = $1 RETURNING id", [
    templateId,
    target,
  ]);
  return rows.length > 0;
}

// ---- hosts

export async function upsertHost(
  db: Queryable,
  h: { hostId: string; vmmUrl: string; runtime: string; capacity: number },
): Promise<void> {
  await db.query(
    `INSERT INTO hosts (id, vmm_url, runtime, capacity) VALUES ($1, $2, $3, $4)
     ON CONFLICT (id) DO UPDATE
       SET vmm_url = EXCLUDED.vmm_url, runtime = EXCLUDED.runtime, capacity = EXCLUDED.capacity,
           last_heartbeat = now()`,
    [h.hostId, h.vmmUrl, h.runtime, h.capacity],
  );
}

/**
 * Marks a host alive. Returns undefined for an unknown host, else how long it had been silent
 * (by the database clock), so the caller can tell a host coming back.
 */
export async function heartbeat(
  db: Queryable,
  hostId: string,
  running: number,
): Promise<{ silentMs: number } | undefined> {
  const { rows } = await db.query<{ silent_ms: number }>(
    `WITH prev AS (SELECT id, last_heartbeat FROM hosts WHERE id = $1 FOR UPDATE)
     UPDATE hosts h SET last_heartbeat = now(), running = $2 FROM prev WHERE h.id = prev.id
     RETURNING (extract(epoch FROM now() - prev.last_heartbeat) * 1000)::float8 AS silent_ms`,
    [hostId, running],
  );
  return rows[0] && { silentMs: rows[0].silent_ms };
}

/** Every host with its load, and the database's clock (the one heartbeats are stamped with). */
export async function hostLoads(db: Queryable): Promise<{ now: Date; hosts: HostLoadRow[] }> {
  const { rows } = await db.query<{
    id: string;
    vmm_url: string;
    runtime: string;
    capacity: number;
    running: number;
    last_heartbeat: Date;
    now: Date;
  }>(
    `SELECT h.id, h.vmm_url, h.runtime, h.capacity, h.last_heartbeat, now() AS now,
            GREATEST(h.running, (SELECT count(*) FROM sandboxes s
                                 WHERE s.host_id = h.id AND s.state IN ${OCCUPYING}))::int AS running
     FROM hosts h ORDER BY h.id`,
  );
  const now = rows[0]?.now ?? (await db.query<{ now: Date }>("SELECT now() AS now")).rows[0]!.now;
  return {
    now,
    hosts: rows.map((r) => ({
      hostId: r.id,
      vmmUrl: r.vmm_url,
      runtime: r.runtime,
      capacity: r.capacity,
      running: r.running,
      lastHeartbeat: r.last_heartbeat,
    })),
  };
}

/**
 * Serialises placement across every scheduler replica for the rest of the transaction, so
 * that capacity and pool counts read under it stay true until the new rows are inserted.
 */
export async function lockPlacement(tx: Queryable): Promise<void> {
  await tx.query("SELECT pg_advisory_xact_lock(hashtext('dnah_scheduler_placement'))");
}

// ---- sandboxes

export interface NewSandbox {
  id: string;
  templateId: string;
  hostId: string;
  pooled: boolean;
  metadata: Record<string, string>;
  envVars: Record<string, string>;
  cpuCount: number;
  memoryMib: number;
  runtime: string;
}

/** Inserts a sandbox in state 'starting'. */
export async function insertSandbox(db: Queryable, s: NewSandbox): Promise<SandboxRow> {
  const { rows } = await db.query<RawSandbox>(
    `WITH s AS (
       INSERT INTO sandboxes (id, template_id, host_id, state, pooled, metadata, env_vars, cpu_count, memory_mib, runtime)
       VALUES ($1, $2, $3, 'starting', $4, $5::jsonb, $6::jsonb, $7, $8, $9)
       RETURNING *)
     SELECT ${SANDBOX_COLUMNS} FROM s JOIN hosts h ON h.id = s.host_id`,
    [
      s.id,
      s.templateId,
      s.hostId,
      s.pooled,
      JSON.stringify(s.metadata),
      JSON.stringify(s.envVars),
      s.cpuCount,
      s.memoryMib,
      s.runtime,
    ],
  );
  return toSandbox(rows[0]!);
}

/**
 * Hands the oldest warm sandbox of a template on a live host to a user, in one statement:
 * concurrent claims skip each other's locked rows instead of waiting, and no row is handed
 * out twice. Returns undefined on a miss.
 */
export async function claimPooledSandbox(
  db: Queryable,
  templateId: string,
  opts: { metadata: Record<string, string>; envVars: Record<string, string>; hostDeadAfterMs: number },
): Promise<SandboxRow | undefined> {
  const { rows } = await db.query<RawSandbox>(
    `WITH s AS (
       UPDATE sandboxes SET pooled = false, claimed_at = now(), metadata = $2::jsonb, env_vars = $3::jsonb
       WHERE id = (
         SELECT c.id FROM sandboxes c JOIN hosts ch ON ch.id = c.host_id
         WHERE c.template_id = $1 AND c.pooled AND c.state = 'running'
           AND ch.last_heartbeat > now() - $4 * interval '1 millisecond'
         ORDER BY c.created_at
         LIMIT 1
         FOR UPDATE OF c SKIP LOCKED)
       RETURNING *)
     SELECT ${SANDBOX_COLUMNS} FROM s JOIN hosts h ON h.id = s.host_id`,
    [templateId, JSON.stringify(opts.metadata), JSON.stringify(opts.envVars), opts.hostDeadAfterMs],
  );
  return rows[0] && toSandbox(rows[0]);
}

/**
 * Warm sandboxes of a template that count towards its target: running ones on live hosts
 * (the ones a claim can take) and those still booting.
 */
export async function countPool(db: Queryable, templateId: string, hostDeadAfterMs: number): Promise<number> {
  const { rows } = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM sandboxes s JOIN hosts h ON h.id = s.host_id
     WHERE s.template_id = $1 AND s.pooled
       AND (s.state = 'starting'
            OR (s.state = 'running' AND h.last_heartbeat > now() - $2 * interval '1 millisecond'))`,
    [templateId, hostDeadAfterMs],
  );
  return rows[0]!.n;
}

/** starting -> running. Undefined when the row is no longer starting (deleted meanwhile). */
export async function markRunning(
  db: Queryable,
  id: string,
  runtime: string,
): Promise<SandboxRow | undefined> {
  const { rows } = await db.query<RawSandbox>(
    `WITH s AS (
       UPDATE sandboxes SET state = 'running', runtime = COALESCE(NULLIF($2, ''), runtime)
       WHERE id = $1 AND state = 'starting' RETURNING *)
     SELECT ${SANDBOX_COLUMNS} FROM s JOIN hosts h ON h.id = s.host_id`,
    [id, runtime],
  );
  return rows[0] && toSandbox(rows[0]);
}

/** Records a sandbox that could not be started or configured; it is gone for good. */
export async function markFailed(db: Queryable, id: string, error: string): Promise<void> {
  await db.query(
    `UPDATE sandboxes SET state = 'error', error = $2, deleted_at = now()
     WHERE id = $1 AND state NOT IN ('deleted', 'error')`,
    [id, error.slice(0, 2000)],
  );
}

/**
 * Moves a user's sandbox to 'deleting' (again, if a previous delete did not finish) and says
 * whether its host is alive. Undefined when there is no such sandbox to delete.
 */
export async function beginDelete(
  db: Queryable,
  id: string,
  hostDeadAfterMs: number,
): Promise<(SandboxRow & { hostLive: boolean }) | undefined> {
  const { rows } = await db.query<RawSandbox & { host_live: boolean }>(
    `WITH s AS (
       UPDATE sandboxes SET state = 'deleting'
       WHERE id = $1 AND NOT pooled AND state NOT IN ('deleted', 'error') RETURNING *)
     SELECT ${SANDBOX_COLUMNS}, h.last_heartbeat > now() - $2 * interval '1 millisecond' AS host_live
     FROM s JOIN hosts h ON h.id = s.host_id`,
    [id, hostDeadAfterMs],
  );
  return rows[0] && { ...toSandbox(rows[0]), hostLive: rows[0].host_live };
}

export async function markDeleted(db: Queryable, id: string): Promise<void> {
  await db.query(
    "UPDATE sandboxes SET state = 'deleted', deleted_at = now() WHERE id = $1 AND state <> 'deleted'",
    [id],
  );
}

/** Takes every running warm sandbox out of the pool for deletion (dev shutdown). */
export async function takePoolForDrain(
  db: Queryable,
  hostDeadAfterMs: number,
): Promise<(SandboxRow & { hostLive: boolean })[]> {
  const { rows } = await db.query<RawSandbox & { host_live: boolean }>(
    `WITH s AS (
       UPDATE sandboxes SET state = 'deleting' WHERE pooled AND state = 'running' RETURNING *)
     SELECT ${SANDBOX_COLUMNS}, h.last_heartbeat > now() - $1 * interval '1 millisecond' AS host_live
     FROM s JOIN hosts h ON h.id = s.host_id`,
    [hostDeadAfterMs],
  );
  return rows.map((r) => ({ ...toSandbox(r), hostLive: r.host_live }));
}

/**
 * Fails sandboxes left 'starting' for longer than any boot may take (their scheduler died
 * mid-boot), so they stop counting towards pools and hosts. Returns them for cleanup.
 */
export async function failAbandonedStarts(db: Queryable, olderThanMs: number): Promise<SandboxRow[]> {
  const { rows } = await db.query<RawSandbox>(
    `WITH s AS (
       UPDATE sandboxes SET state = 'error', error = 'boot abandoned', deleted_at = now()
       WHERE state = 'starting' AND created_at < now() - $1 * interval '1 millisecond' RETURNING *)
     SELECT ${SANDBOX_COLUMNS} FROM s JOIN hosts h ON h.id = s.host_id`,
    [olderThanMs],
  );
  return rows.map(toSandbox);
}

/** A user's sandbox (not pooled, not deleted or being deleted). */
export async function getSandbox(db: Queryable, id: string): Promise<SandboxRow | undefined> {
  const { rows } = await db.query<RawSandbox>(
    `SELECT ${SANDBOX_COLUMNS} FROM sandboxes s JOIN hosts h ON h.id = s.host_id
     WHERE s.id = $1 AND NOT s.pooled AND s.state IN ${VISIBLE}`,
    [id],
  );
  return rows[0] && toSandbox(rows[0]);
}

/**
 * Users' sandboxes whose metadata contains every given pair, newest first; only those in
 * `states` when given (states outside the visible ones match nothing).
 */
export async function listSandboxes(
  db: Queryable,
  metadata: Record<string, string>,
  states: readonly SandboxRowState[] = [],
): Promise<SandboxRow[]> {
  const { rows } = await db.query<RawSandbox>(
    `SELECT ${SANDBOX_COLUMNS} FROM sandboxes s JOIN hosts h ON h.id = s.host_id
     WHERE NOT s.pooled AND s.state IN ${VISIBLE} AND s.metadata @> $1::jsonb
       AND (cardinality($2::text[]) = 0 OR s.state = ANY($2::text[]))
     ORDER BY s.created_at DESC, s.id`,
    [JSON.stringify(metadata), states],
  );
  return rows.map(toSandbox);
}

/**
 * A user's sandbox, locked for the rest of the transaction so that pause and resume of one
 * sandbox (and its delete) take turns. Undefined when there is no such visible sandbox.
 */
export async function lockSandbox(tx: Queryable, id: string): Promise<SandboxRow | undefined> {
  const { rows } = await tx.query<RawSandbox>(
    `SELECT ${SANDBOX_COLUMNS} FROM sandboxes s JOIN hosts h ON h.id = s.host_id
     WHERE s.id = $1 AND NOT s.pooled AND s.state IN ${VISIBLE}
     FOR UPDATE OF s`,
    [id],
  );
  return rows[0] && toSandbox(rows[0]);
}

/** running -> paused, stamped with the database clock. */
export async function markPaused(tx: Queryable, id: string): Promise<SandboxRow> {
  const { rows } = await tx.query<RawSandbox>(
    `WITH s AS (
       UPDATE sandboxes SET state = 'paused', paused_at = now()
       WHERE id = $1 AND state = 'running' RETURNING *)
     SELECT ${SANDBOX_COLUMNS} FROM s JOIN hosts h ON h.id = s.host_id`,
    [id],
  );
  if (rows[0] === undefined) throw new Error(`sandbox ${id} was not running when marked paused`);
  return toSandbox(rows[0]);
}

/** paused -> running. */
export async function markResumed(tx: Queryable, id: string): Promise<SandboxRow> {
  const { rows } = await tx.query<RawSandbox>(
    `WITH s AS (
       UPDATE sandboxes SET state = 'running', paused_at = NULL
       WHERE id = $1 AND state = 'paused' RETURNING *)
     SELECT ${SANDBOX_COLUMNS} FROM s JOIN hosts h ON h.id = s.host_id`,
    [id],
  );
  if (rows[0] === undefined) throw new Error(`sandbox ${id} was not paused when marked resumed`);
  return toSandbox(rows[0]);
}
