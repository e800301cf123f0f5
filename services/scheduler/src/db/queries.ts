import type { Db } from "@dnah/platform";
import {
  type EventKind,
  type ExpireAction,
  type LifecycleClock,
  type LifecycleSettings,
  type LifecycleType,
  PRESETS,
  type ReaperOp,
} from "../domain/lifecycle.js";
import type { HostRegistration } from "../domain/validate.js";

/** Anything that runs SQL: the pool or a transaction. */
export type Queryable = Pick<Db, "query">;

export type SandboxRowState =
  | "starting"
  | "running"
  | "paused"
  | "stopped"
  | "archived"
  | "lost"
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
  /** The snapshot it was restored or forked from. */
  sourceSnapshotId: string | null;
  lifecycle: LifecycleSettings;
  /** The idle clock: the last working call. */
  lastActivityAt: Date;
  /** Set while archived, with the snapshot holding its state and where that is stored. */
  archivedAt: Date | null;
  archiveSnapshotId: string | null;
  archiveUri: string | null;
  /** A reaper's transition in flight, and since when (its lease). */
  reaperOp: ReaperOp | null;
  reaperOpAt: Date | null;
}

export interface TemplateRow {
  id: string;
  aliases: string[];
  cpuCount: number;
  memoryMib: number;
  poolTarget: number;
  /** The API key that built it; '' for the installation's own (visible to every key). */
  owner: string;
  public: boolean;
  builtin: boolean;
  status: "building" | "ready" | "error";
  baseTemplateId: string | null;
  latestBuildId: string | null;
  /** Set once a build succeeded: its rootfs exists only on the hosts that report it. */
  readyBuildId: string | null;
  createdAt: Date;
  updatedAt: Date;
}

export interface HostLoadRow {
  hostId: string;
  vmmUrl: string;
  runtime: string;
  capacity: number;
  /** The larger of what the host reported and what the database says it runs or boots. */
  running: number;
  lastHeartbeat: Date;
  vcpus: number;
  usedVcpus: number;
  memoryMib: number;
  usedMemoryMib: number;
  diskFreeMib: number;
  labels: Record<string, string>;
  templates: string[];
  draining: boolean;
  registeredAt: Date;
}

/** States in which a sandbox is the user's and visible to Get and List. */
const VISIBLE = "('starting', 'running', 'paused', 'stopped', 'archived', 'lost')";

/** States that occupy a slot on their host: a paused sandbox keeps its memory there. */
const OCCUPYING = "('starting', 'running', 'paused', 'deleting')";

const SANDBOX_COLUMNS = `s.id, s.template_id, s.host_id, h.vmm_url, s.state, s.pooled, s.metadata, s.env_vars,
  s.cpu_count, s.memory_mib, s.runtime, s.created_at, s.paused_at, s.source_snapshot_id, s.lifecycle_type,
  s.auto_stop_minutes, s.auto_archive_days, s.auto_delete_days, s.lifecycle_clock, s.delete_on_stop,
  s.expires_at, s.on_expire, s.last_activity_at, s.archived_at, s.archive_snapshot_id, s.archive_uri, s.reaper_op, s.reaper_op_at`;

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
  source_snapshot_id: string | null;
  lifecycle_type: LifecycleType;
  auto_stop_minutes: number;
  auto_archive_days: number;
  auto_delete_days: number;
  lifecycle_clock: LifecycleClock;
  delete_on_stop: boolean;
  expires_at: Date | null;
  on_expire: ExpireAction;
  last_activity_at: Date;
  archived_at: Date | null;
  archive_snapshot_id: string | null;
  archive_uri: string | null;
  reaper_op: ReaperOp | null;
  reaper_op_at: Date | null;
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
    sourceSnapshotId: r.source_snapshot_id,
    lifecycle: {
      type: r.lifecycle_type,
      autoStopMinutes: r.auto_stop_minutes,
      autoArchiveDays: r.auto_archive_days,
      autoDeleteDays: r.auto_delete_days,
      clock: r.lifecycle_clock,
      deleteOnStop: r.delete_on_stop,
      expiresAt: r.expires_at,
      onExpire: r.on_expire,
    },
    lastActivityAt: r.last_activity_at,
    archivedAt: r.archived_at,
    archiveSnapshotId: r.archive_snapshot_id,
    archiveUri: r.archive_uri,
    reaperOp: r.reaper_op,
    reaperOpAt: r.reaper_op_at,
  };
}

// ---- templates

export interface RawTemplate {
  id: string;
  aliases: string[];
  cpu_count: number;
  memory_mib: number;
  pool_target: number;
  owner: string;
  public: boolean;
  builtin: boolean;
  status: TemplateRow["status"];
  base_template_id: string | null;
  latest_build_id: string | null;
  ready_build_id: string | null;
  created_at: Date;
  updated_at: Date;
}

export function toTemplate(r: RawTemplate): TemplateRow {
  return {
    id: r.id,
    aliases: r.aliases,
    cpuCount: r.cpu_count,
    memoryMib: r.memory_mib,
    poolTarget: r.pool_target,
    owner: r.owner,
    public: r.public,
    builtin: r.builtin,
    status: r.status,
    baseTemplateId: r.base_template_id,
    latestBuildId: r.latest_build_id,
    readyBuildId: r.ready_build_id,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
  };
}

export const TEMPLATE_COLUMNS = `id, aliases, cpu_count, memory_mib, pool_target, owner, public, builtin, status,
  base_template_id, latest_build_id, ready_build_id, created_at, updated_at`;

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

export async function upsertHost(db: Queryable, h: HostRegistration): Promise<void> {
  await db.query(
    `INSERT INTO hosts (id, vmm_url, runtime, capacity, vcpus, memory_mib, disk_free_mib, labels, templates)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)
     ON CONFLICT (id) DO UPDATE
       SET vmm_url = EXCLUDED.vmm_url, runtime = EXCLUDED.runtime, capacity = EXCLUDED.capacity,
           vcpus = EXCLUDED.vcpus, memory_mib = EXCLUDED.memory_mib, disk_free_mib = EXCLUDED.disk_free_mib,
           labels = EXCLUDED.labels, templates = EXCLUDED.templates, last_heartbeat = now()`,
    [
      h.hostId,
      h.vmmUrl,
      h.runtime,
      h.capacity,
      h.vcpus ?? 0,
      h.memoryMib ?? 0,
      h.diskFreeMib ?? 0,
      JSON.stringify(h.labels ?? {}),
      h.templates ?? [],
    ],
  );
}

/**
 * Marks a host alive. Returns undefined for an unknown host, else how long it had been silent
 * (by the database clock), so the caller can tell a host coming back. `report` updates what
 * it reported, when given. A template whose build on this host finished in the last minute
 * stays on its list: the vmm may have read its templates before that build's last write, and
 * a heartbeat landing after the build was recorded would take it away until the next one
 * (a create from the new template then found no host; seen in CI).
 */
export async function heartbeat(
  db: Queryable,
  hostId: string,
  running: number,
  report: { diskFreeMib?: number | undefined; templates?: string[] | undefined } = {},
): Promise<{ silentMs: number } | undefined> {
  const { rows } = await db.query<{ silent_ms: number }>(
    `WITH prev AS (SELECT id, last_heartbeat FROM hosts WHERE id = $1 FOR UPDATE)
     UPDATE hosts h SET last_heartbeat = now(), running = $2,
       disk_free_mib = COALESCE($3, h.disk_free_mib),
       templates = CASE WHEN $4::text[] IS NULL THEN h.templates ELSE ARRAY(
         SELECT unnest($4::text[]) UNION
         SELECT b.template_id FROM template_builds b JOIN templates t ON t.ready_build_id = b.id
         WHERE b.host_id = h.id AND b.finished_at > now() - interval '60 seconds') END
     FROM prev WHERE h.id = prev.id
     RETURNING (extract(epoch FROM now() - prev.last_heartbeat) * 1000)::float8 AS silent_ms`,
    [hostId, running, report.diskFreeMib ?? null, report.templates ?? null],
  );
  return rows[0] && { silentMs: rows[0].silent_ms };
}

/** Sets a host's maintenance flag; false for an unknown host. */
export async function setHostDraining(db: Queryable, hostId: string, draining: boolean): Promise<boolean> {
  const { rows } = await db.query("UPDATE hosts SET draining = $2 WHERE id = $1 RETURNING id", [
    hostId,
    draining,
  ]);
  return rows.length > 0;
}

/**
 * Users' sandboxes on hosts silent for `deadAfterMs` become 'lost' (remembering the state
 * they had), in one statement; returns them. Never silently "running" on a dead host. Rows a
 * reaper holds a claim on are left to it.
 */
export async function markLostOnDeadHosts(
  db: Queryable,
  deadAfterMs: number,
): Promise<{ id: string; hostId: string; from: SandboxRowState }[]> {
  const { rows } = await db.query<{ id: string; host_id: string; lost_from: SandboxRowState }>(
    `UPDATE sandboxes s SET lost_from = s.state, state = 'lost'
     FROM hosts h
     WHERE h.id = s.host_id AND h.last_heartbeat <= now() - $1 * interval '1 millisecond'
       AND NOT s.pooled AND s.state IN ('starting', 'running', 'paused') AND s.reaper_op IS NULL
     RETURNING s.id, s.host_id, s.lost_from`,
    [deadAfterMs],
  );
  return rows.map((r) => ({ id: r.id, hostId: r.host_id, from: r.lost_from }));
}

/**
 * Reconciles what a live host reports it has with the database: its lost sandboxes it still
 * has are back in the state they had ('found'); what it has that the database does not hold
 * as its own (deleted, failed, unknown, on another host) is returned for removal; what the
 * database holds there that it no longer has becomes lost at its second missed beat.
 */
export async function reconcileHost(
  db: Queryable,
  hostId: string,
  has: readonly string[],
): Promise<{
  found: { id: string; state: SandboxRowState }[];
  remove: string[];
  lost: { id: string; from: SandboxRowState }[];
  failed: string[];
}> {
  const found = await db.query<{ id: string; state: SandboxRowState }>(
    `UPDATE sandboxes SET state = lost_from, lost_from = NULL
     WHERE host_id = $1 AND state = 'lost' AND id = ANY($2::text[]) RETURNING id, state`,
    [hostId, has],
  );
  const known = await db.query<{ id: string }>(
    `SELECT id FROM sandboxes
     WHERE host_id = $1 AND id = ANY($2::text[]) AND state IN ('starting', 'running', 'paused', 'deleting')`,
    [hostId, has],
  );
  const keep = new Set(known.rows.map((r) => r.id));
  return {
    found: found.rows,
    remove: has.filter((id) => !keep.has(id)),
    ...(await missingOnHost(db, hostId, has)),
  };
}

/**
 * What the database holds as running or paused on a live host that its heartbeat does not
 * list: missing at one beat it is marked, at the next it is lost (users' sandboxes, remembering
 * their state) or failed (warm-pool ones, which nobody was given). Listed again, the mark goes.
 * Rows a reaper holds a claim on are left to it.
 */
async function missingOnHost(
  db: Queryable,
  hostId: string,
  has: readonly string[],
): Promise<{ lost: { id: string; from: SandboxRowState }[]; failed: string[] }> {
  await db.query(
    "UPDATE sandboxes SET missing_since = NULL WHERE host_id = $1 AND missing_since IS NOT NULL AND id = ANY($2::text[])",
    [hostId, has],
  );
  const gone = `host_id = $1 AND NOT (id = ANY($2::text[])) AND state IN ('running', 'paused') AND reaper_op IS NULL`;
  const lost = await db.query<{ id: string; lost_from: SandboxRowState }>(
    `UPDATE sandboxes SET lost_from = state, state = 'lost', missing_since = NULL
     WHERE ${gone} AND missing_since IS NOT NULL AND NOT pooled RETURNING id, lost_from`,
    [hostId, has],
  );
  const failed = await db.query<{ id: string }>(
    `UPDATE sandboxes SET state = 'error', error = 'its host no longer has it', deleted_at = now(), missing_since = NULL
     WHERE ${gone} AND missing_since IS NOT NULL AND pooled RETURNING id`,
    [hostId, has],
  );
  await db.query(`UPDATE sandboxes SET missing_since = now() WHERE ${gone} AND missing_since IS NULL`, [
    hostId,
    has,
  ]);
  return {
    lost: lost.rows.map((r) => ({ id: r.id, from: r.lost_from })),
    failed: failed.rows.map((r) => r.id),
  };
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
    used_vcpus: number;
    used_memory_mib: number;
    vcpus: number;
    memory_mib: number;
    disk_free_mib: number;
    labels: Record<string, string>;
    templates: string[];
    draining: boolean;
    registered_at: Date;
  }>(
    `SELECT h.id, h.vmm_url, h.runtime, h.capacity, h.last_heartbeat, now() AS now,
            GREATEST(h.running, o.n)::int AS running, o.cpus::int AS used_vcpus, o.mem::float8 AS used_memory_mib,
            h.vcpus, h.memory_mib::float8 AS memory_mib, h.disk_free_mib::float8 AS disk_free_mib, h.labels,
            h.templates, h.draining, h.registered_at
     FROM hosts h
     CROSS JOIN LATERAL (SELECT count(*) AS n, COALESCE(sum(s.cpu_count), 0) AS cpus,
                                COALESCE(sum(s.memory_mib), 0) AS mem
                         FROM sandboxes s WHERE s.host_id = h.id AND s.state IN ${OCCUPYING}) o
     ORDER BY h.id`,
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
      vcpus: r.vcpus,
      usedVcpus: r.used_vcpus,
      memoryMib: r.memory_mib,
      usedMemoryMib: r.used_memory_mib,
      diskFreeMib: r.disk_free_mib,
      labels: r.labels,
      templates: r.templates,
      draining: r.draining,
      registeredAt: r.registered_at,
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
  /** Set for a sandbox restored from a snapshot. */
  sourceSnapshotId?: string | undefined;
  /** Persistent (0 / 0 / 0) when not given: a pooled sandbox gets its owner's at claim. */
  lifecycle?: LifecycleSettings | undefined;
}

/** Inserts a sandbox in state 'starting'. */
export async function insertSandbox(db: Queryable, s: NewSandbox): Promise<SandboxRow> {
  const { rows } = await db.query<RawSandbox>(
    `WITH s AS (
       INSERT INTO sandboxes (id, template_id, host_id, state, pooled, metadata, env_vars, cpu_count, memory_mib, runtime,
                              source_snapshot_id, lifecycle_type, auto_stop_minutes, auto_archive_days, auto_delete_days,
                              lifecycle_clock, delete_on_stop, expires_at, on_expire)
       VALUES ($1, $2, $3, 'starting', $4, $5::jsonb, $6::jsonb, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)
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
      s.sourceSnapshotId ?? null,
      ...lifecycleParams(s.lifecycle ?? PRESETS.persistent),
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
  opts: {
    metadata: Record<string, string>;
    envVars: Record<string, string>;
    lifecycle: LifecycleSettings;
    hostDeadAfterMs: number;
    /** Only from a host with all these labels. */
    hostLabels?: Record<string, string> | undefined;
  },
): Promise<SandboxRow | undefined> {
  const { rows } = await db.query<RawSandbox>(
    `WITH s AS (
       UPDATE sandboxes SET pooled = false, claimed_at = now(), metadata = $2::jsonb, env_vars = $3::jsonb,
         lifecycle_type = $5, auto_stop_minutes = $6, auto_archive_days = $7, auto_delete_days = $8,
         lifecycle_clock = $9, delete_on_stop = $10, expires_at = $11, on_expire = $12, last_activity_at = now()
       WHERE id = (
         SELECT c.id FROM sandboxes c JOIN hosts ch ON ch.id = c.host_id
         WHERE c.template_id = $1 AND c.pooled AND c.state = 'running'
           AND ch.last_heartbeat > now() - $4 * interval '1 millisecond'
           AND NOT ch.draining AND ch.labels @> $13::jsonb
         ORDER BY c.created_at
         LIMIT 1
         FOR UPDATE OF c SKIP LOCKED)
       RETURNING *)
     SELECT ${SANDBOX_COLUMNS} FROM s JOIN hosts h ON h.id = s.host_id`,
    [
      templateId,
      JSON.stringify(opts.metadata),
      JSON.stringify(opts.envVars),
      opts.hostDeadAfterMs,
      ...lifecycleParams(opts.lifecycle),
      JSON.stringify(opts.hostLabels ?? {}),
    ],
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
       UPDATE sandboxes SET state = 'paused', paused_at = now(), expires_at = NULL
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
       UPDATE sandboxes SET state = 'running', paused_at = NULL, last_activity_at = now()
       WHERE id = $1 AND state = 'paused' RETURNING *)
     SELECT ${SANDBOX_COLUMNS} FROM s JOIN hosts h ON h.id = s.host_id`,
    [id],
  );
  if (rows[0] === undefined) throw new Error(`sandbox ${id} was not paused when marked resumed`);
  return toSandbox(rows[0]);
}

// ---- lifecycle

/** A lifecycle as the nine query parameters type … on_expire, in the columns' order. */
function lifecycleParams(l: LifecycleSettings) {
  return [
    l.type,
    l.autoStopMinutes,
    l.autoArchiveDays,
    l.autoDeleteDays,
    l.clock,
    l.deleteOnStop,
    l.expiresAt?.toISOString() ?? null,
    l.onExpire,
  ];
}

/** Sets a sandbox's lifecycle settings; undefined when it is not a visible sandbox. */
export async function updateLifecycle(
  db: Queryable,
  id: string,
  l: LifecycleSettings,
): Promise<SandboxRow | undefined> {
  const { rows } = await db.query<RawSandbox>(
    `WITH s AS (
       UPDATE sandboxes SET lifecycle_type = $2, auto_stop_minutes = $3, auto_archive_days = $4, auto_delete_days = $5,
         lifecycle_clock = $6, delete_on_stop = $7, expires_at = $8, on_expire = $9
       WHERE id = $1 AND NOT pooled AND state IN ${VISIBLE} RETURNING *)
     SELECT ${SANDBOX_COLUMNS} FROM s JOIN hosts h ON h.id = s.host_id`,
    [id, ...lifecycleParams(l)],
  );
  return rows[0] && toSandbox(rows[0]);
}

/**
 * Moves idle clocks forward, never back, for users' live sandboxes (one statement for the
 * whole batch). Returns how many moved.
 */
export async function recordActivity(
  db: Queryable,
  marks: readonly { sandboxId: string; at: Date }[],
): Promise<number> {
  if (marks.length === 0) return 0;
  const { rows } = await db.query(
    `UPDATE sandboxes s SET last_activity_at = m.at
     FROM (SELECT unnest($1::text[]) AS id, unnest($2::timestamptz[]) AS at) m
     WHERE s.id = m.id AND NOT s.pooled AND s.state IN ('starting', 'running', 'paused', 'stopped', 'archived')
       AND s.last_activity_at < m.at
     RETURNING s.id`,
    [marks.map((m) => m.sandboxId), marks.map((m) => m.at.toISOString())],
  );
  return rows.length;
}

export interface SandboxEventRow {
  id: bigint;
  sandboxId: string;
  at: Date;
  kind: EventKind;
  fromState: string;
  toState: string;
  actor: "api" | "reaper";
  detail: string;
}

export interface NewSandboxEvent {
  sandboxId: string;
  kind: EventKind;
  fromState?: string;
  toState?: string;
  actor: "api" | "reaper";
  detail?: string;
}

/** Records one transition (in the caller's transaction when given one). */
export async function insertEvent(db: Queryable, e: NewSandboxEvent): Promise<void> {
  await db.query(
    `INSERT INTO sandbox_events (sandbox_id, kind, from_state, to_state, actor, detail)
     VALUES ($1, $2, $3, $4, $5, $6)`,
    [e.sandboxId, e.kind, e.fromState ?? "", e.toState ?? "", e.actor, e.detail ?? ""],
  );
}

/** The newest `limit` events of a sandbox, oldest first. */
export async function listEvents(
  db: Queryable,
  sandboxId: string,
  limit: number,
): Promise<SandboxEventRow[]> {
  const { rows } = await db.query<{
    id: string;
    sandbox_id: string;
    at: Date;
    kind: EventKind;
    from_state: string;
    to_state: string;
    actor: "api" | "reaper";
    detail: string;
  }>(
    `SELECT * FROM (SELECT id, sandbox_id, at, kind, from_state, to_state, actor, detail FROM sandbox_events
                    WHERE sandbox_id = $1 ORDER BY id DESC LIMIT $2) e
     ORDER BY id`,
    [sandboxId, limit],
  );
  return rows.map((r) => ({
    id: BigInt(r.id),
    sandboxId: r.sandbox_id,
    at: r.at,
    kind: r.kind,
    fromState: r.from_state,
    toState: r.to_state,
    actor: r.actor,
    detail: r.detail,
  }));
}

/** True when the scheduler ever had a sandbox of this id (deleted ones included). */
export async function sandboxEverExisted(db: Queryable, id: string): Promise<boolean> {
  const { rows } = await db.query(`SELECT 1 FROM sandboxes WHERE id = $1 AND NOT pooled`, [id]);
  return rows.length > 0;
}

// ---- snapshots

export type SnapshotRowState = "creating" | "ready" | "deleting";

export interface SnapshotFileRow {
  name: string;
  sizeBytes: bigint;
  sha256: string;
}

export interface SnapshotRow {
  id: string;
  name: string | null;
  sandboxId: string;
  templateId: string;
  hostId: string;
  /** From the host's row: where the snapshot's files are. */
  vmmUrl: string;
  runtime: string;
  memory: boolean;
  manifestSha256: string;
  sizeBytes: bigint;
  /** The timestamp that was signed, in Unix milliseconds. */
  createdAtMs: bigint;
  kid: string | null;
  /** Null (or empty) when unsigned: a restore refuses it. */
  signature: Uint8Array | null;
  files: SnapshotFileRow[];
  cpuCount: number;
  memoryMib: number;
  metadata: Record<string, string>;
  state: SnapshotRowState;
}

const SNAPSHOT_COLUMNS = `p.id, p.name, p.sandbox_id, p.template_id, p.host_id, h.vmm_url, p.runtime, p.memory,
  p.manifest_sha256, p.size_bytes::text AS size_bytes, p.created_at_ms::text AS created_at_ms, p.kid,
  p.signature, p.files, p.cpu_count, p.memory_mib, p.metadata, p.state`;

interface RawSnapshot {
  id: string;
  name: string | null;
  sandbox_id: string;
  template_id: string;
  host_id: string;
  vmm_url: string;
  runtime: string;
  memory: boolean;
  manifest_sha256: string;
  // bigint columns are read as text: pg and PGlite disagree on how they return int8.
  size_bytes: string;
  created_at_ms: string;
  kid: string | null;
  signature: Uint8Array | null;
  files: { name: string; sizeBytes: string; sha256: string }[];
  cpu_count: number;
  memory_mib: number;
  metadata: Record<string, string>;
  state: SnapshotRowState;
}

function toSnapshot(r: RawSnapshot): SnapshotRow {
  return {
    id: r.id,
    name: r.name,
    sandboxId: r.sandbox_id,
    templateId: r.template_id,
    hostId: r.host_id,
    vmmUrl: r.vmm_url,
    runtime: r.runtime,
    memory: r.memory,
    manifestSha256: r.manifest_sha256,
    sizeBytes: BigInt(r.size_bytes),
    createdAtMs: BigInt(r.created_at_ms),
    kid: r.kid,
    signature: r.signature === null ? null : new Uint8Array(r.signature),
    files: r.files.map((f) => ({ name: f.name, sizeBytes: BigInt(f.sizeBytes), sha256: f.sha256 })),
    cpuCount: r.cpu_count,
    memoryMib: r.memory_mib,
    metadata: r.metadata,
    state: r.state,
  };
}

export interface NewSnapshot {
  id: string;
  name: string | undefined;
  sandboxId: string;
  templateId: string;
  hostId: string;
  runtime: string;
  cpuCount: number;
  memoryMib: number;
  metadata: Record<string, string>;
}

/**
 * Records a snapshot about to be written ('creating'), stamped with the database clock in
 * milliseconds: the value that will be signed. Undefined when the name is taken.
 */
export async function insertSnapshot(db: Queryable, s: NewSnapshot): Promise<SnapshotRow | undefined> {
  const { rows } = await db.query<RawSnapshot>(
    `WITH p AS (
       INSERT INTO snapshots (id, name, sandbox_id, template_id, host_id, runtime, cpu_count, memory_mib, metadata,
                              state, created_at_ms, created_at)
       SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::int, $8::int, $9::jsonb, 'creating', floor(extract(epoch FROM t.now) * 1000)::bigint, t.now
       FROM (SELECT now() AS now) t
       ON CONFLICT (name) DO NOTHING
       RETURNING *)
     SELECT ${SNAPSHOT_COLUMNS} FROM p JOIN hosts h ON h.id = p.host_id`,
    [
      s.id,
      s.name ?? null,
      s.sandboxId,
      s.templateId,
      s.hostId,
      s.runtime,
      s.cpuCount,
      s.memoryMib,
      JSON.stringify(s.metadata),
    ],
  );
  return rows[0] && toSnapshot(rows[0]);
}

export interface WrittenSnapshot {
  runtime: string;
  memory: boolean;
  manifestSha256: string;
  sizeBytes: bigint;
  files: SnapshotFileRow[];
  cpuCount: number;
  memoryMib: number;
  kid: string;
  signature: Uint8Array;
}

/** creating -> ready, with what the host wrote and the signature over it. */
export async function markSnapshotReady(db: Queryable, id: string, w: WrittenSnapshot): Promise<SnapshotRow> {
  const { rows } = await db.query<RawSnapshot>(
    `WITH p AS (
       UPDATE snapshots SET state = 'ready', runtime = COALESCE(NULLIF($2::text, ''), runtime), memory = $3,
         manifest_sha256 = $4, size_bytes = $5::bigint, files = $6::jsonb,
         cpu_count = CASE WHEN $7::int > 0 THEN $7::int ELSE cpu_count END,
         memory_mib = CASE WHEN $8::int > 0 THEN $8::int ELSE memory_mib END,
         kid = $9, signature = $10
       WHERE id = $1 AND state = 'creating' RETURNING *)
     SELECT ${SNAPSHOT_COLUMNS} FROM p JOIN hosts h ON h.id = p.host_id`,
    [
      id,
      w.runtime,
      w.memory,
      w.manifestSha256,
      w.sizeBytes.toString(),
      JSON.stringify(w.files.map((f) => ({ ...f, sizeBytes: f.sizeBytes.toString() }))),
      w.cpuCount,
      w.memoryMib,
      w.kid,
      // node-postgres sends a Buffer (not any Uint8Array) as bytea.
      Buffer.from(w.signature),
    ],
  );
  if (rows[0] === undefined) throw new Error(`snapshot ${id} was not 'creating' when marked ready`);
  return toSnapshot(rows[0]);
}

/** A snapshot by id or, failing that, by name, in any state, with its host's liveness. */
export async function findSnapshot(
  db: Queryable,
  idOrName: string,
  hostDeadAfterMs: number,
): Promise<(SnapshotRow & { hostLive: boolean }) | undefined> {
  const { rows } = await db.query<RawSnapshot & { host_live: boolean }>(
    `SELECT ${SNAPSHOT_COLUMNS}, h.last_heartbeat > now() - $2 * interval '1 millisecond' AS host_live
     FROM snapshots p JOIN hosts h ON h.id = p.host_id
     WHERE p.id = $1 OR p.name = $1
     ORDER BY p.id = $1 DESC LIMIT 1`,
    [idOrName, hostDeadAfterMs],
  );
  return rows[0] && { ...toSnapshot(rows[0]), hostLive: rows[0].host_live };
}

/** Ready snapshots, newest first; only those of one sandbox when given. */
export async function listSnapshots(db: Queryable, sandboxId: string | undefined): Promise<SnapshotRow[]> {
  const { rows } = await db.query<RawSnapshot>(
    `SELECT ${SNAPSHOT_COLUMNS} FROM snapshots p JOIN hosts h ON h.id = p.host_id
     WHERE p.state = 'ready' AND ($1::text IS NULL OR p.sandbox_id = $1)
     ORDER BY p.created_at DESC, p.id`,
    [sandboxId ?? null],
  );
  return rows.map(toSnapshot);
}

/**
 * ready (or a 'deleting' left by a failed delete) -> deleting. The name is released at once,
 * so it can be reused while the files go. Undefined when there is no such snapshot to delete.
 */
export async function beginSnapshotDelete(db: Queryable, id: string): Promise<SnapshotRow | undefined> {
  const { rows } = await db.query<RawSnapshot>(
    `WITH p AS (
       UPDATE snapshots SET state = 'deleting', name = NULL
       WHERE id = $1 AND state IN ('ready', 'deleting') RETURNING *)
     SELECT ${SNAPSHOT_COLUMNS} FROM p JOIN hosts h ON h.id = p.host_id`,
    [id],
  );
  return rows[0] && toSnapshot(rows[0]);
}

/**
 * Snapshots left 'creating' longer than anyone writing them can take (their scheduler died,
 * or the database went away before the failure could be recorded): hidden as 'deleting' and
 * their name freed, for the caller to remove their files and then the row.
 */
export async function abandonCreatingSnapshots(db: Queryable, olderThanMs: number): Promise<SnapshotRow[]> {
  const { rows } = await db.query<RawSnapshot>(
    `WITH p AS (
       UPDATE snapshots SET state = 'deleting', name = NULL
       WHERE state = 'creating' AND created_at < now() - $1 * interval '1 millisecond' RETURNING *)
     SELECT ${SNAPSHOT_COLUMNS} FROM p JOIN hosts h ON h.id = p.host_id`,
    [olderThanMs],
  );
  return rows.map(toSnapshot);
}

export async function deleteSnapshotRow(db: Queryable, id: string): Promise<void> {
  await db.query("DELETE FROM snapshots WHERE id = $1", [id]);
}

// ---- reaper

/**
 * The reaper's rule per op, in SQL, at `$2` (the reaper's clock); the same rule as `dueOp` in
 * domain/lifecycle.ts (test/lifecycle-domain.test.ts checks that both agree).
 */
const ARCHIVE_CLOCK =
  "CASE WHEN c.lifecycle_clock = 'last_activity' THEN c.last_activity_at ELSE c.paused_at END";
const DELETE_CLOCK =
  "CASE WHEN c.lifecycle_clock = 'last_activity' THEN c.last_activity_at ELSE c.archived_at END";
const EXPIRED = "c.state = 'running' AND c.expires_at IS NOT NULL AND $2::timestamptz >= c.expires_at";
const DUE: Record<ReaperOp, string> = {
  stop: `(${EXPIRED} AND c.on_expire = 'stop')
      OR (c.state = 'running' AND (c.expires_at IS NULL OR $2::timestamptz < c.expires_at)
          AND c.auto_stop_minutes > 0 AND $2::timestamptz >= c.last_activity_at + c.auto_stop_minutes * interval '1 minute')`,
  archive: `c.state = 'paused' AND c.paused_at IS NOT NULL AND NOT c.delete_on_stop AND c.auto_archive_days > 0
            AND $2::timestamptz >= ${ARCHIVE_CLOCK} + c.auto_archive_days * interval '24 hours'
            AND NOT (c.lifecycle_clock = 'last_activity' AND c.auto_delete_days > 0
                     AND $2::timestamptz >= c.last_activity_at + c.auto_delete_days * interval '24 hours')`,
  delete: `(${EXPIRED} AND c.on_expire = 'delete')
        OR (c.state = 'paused' AND c.paused_at IS NOT NULL AND c.delete_on_stop)
        OR (c.auto_delete_days > 0 AND (
             (c.state = 'paused' AND c.paused_at IS NOT NULL
              AND (c.auto_archive_days = 0 OR c.lifecycle_clock = 'last_activity')
              AND $2::timestamptz >= ${ARCHIVE_CLOCK} + c.auto_delete_days * interval '24 hours')
          OR (c.state = 'archived' AND c.archived_at IS NOT NULL
              AND $2::timestamptz >= ${DELETE_CLOCK} + c.auto_delete_days * interval '24 hours')))`,
};

/** States in which an op, once claimed, may still be in flight (and be taken over). */
const IN_FLIGHT: Record<ReaperOp, string> = {
  stop: "('running', 'paused')",
  archive: "('paused')",
  delete: "('running', 'paused', 'archived', 'deleting')",
};

/** A row a reaper claimed for `op`, stamped `claimAt` (its lease), with its host's liveness. */
export type ReaperClaim = SandboxRow & { hostLive: boolean; claimAt: Date };

/**
 * Claims up to `batch` users' sandboxes for `op` at `now`, in one statement: rows due by the
 * rule and not claimed by a live lease, and rows whose `op` lease ran out (a reaper died
 * mid-transition: the op is resumed, due or not). SKIP LOCKED: two reapers never take one row.
 */
export async function claimReaperOps(
  db: Queryable,
  op: ReaperOp,
  now: Date,
  opts: { leaseMs: number; batch: number; hostDeadAfterMs: number },
): Promise<ReaperClaim[]> {
  const { rows } = await db.query<RawSandbox & { host_live: boolean }>(
    `WITH s AS (
       UPDATE sandboxes SET reaper_op = $1, reaper_op_at = $2
       WHERE id IN (
         SELECT c.id FROM sandboxes c
         WHERE NOT c.pooled
           AND (((${DUE[op]}) AND (c.reaper_op IS NULL OR c.reaper_op_at < $2::timestamptz - $3 * interval '1 millisecond'))
             OR (c.reaper_op = $1 AND c.state IN ${IN_FLIGHT[op]}
                 AND c.reaper_op_at < $2::timestamptz - $3 * interval '1 millisecond'))
         ORDER BY c.id
         LIMIT $4
         FOR UPDATE SKIP LOCKED)
       RETURNING *)
     SELECT ${SANDBOX_COLUMNS}, h.last_heartbeat > now() - $5 * interval '1 millisecond' AS host_live
     FROM s JOIN hosts h ON h.id = s.host_id`,
    [op, now.toISOString(), opts.leaseMs, opts.batch, opts.hostDeadAfterMs],
  );
  return rows.map((r) => ({ ...toSandbox(r), hostLive: r.host_live, claimAt: now }));
}

/**
 * Claims one user's sandbox for `op` on a caller's behalf (an explicit archive): like the
 * reaper's claim, due or not, when the row is in `states` and no live lease holds it.
 * Undefined when it is not there, in another state, or held.
 */
export async function claimSandboxOp(
  db: Queryable,
  id: string,
  op: ReaperOp,
  states: readonly SandboxRowState[],
  now: Date,
  opts: { leaseMs: number; hostDeadAfterMs: number },
): Promise<ReaperClaim | undefined> {
  const { rows } = await db.query<RawSandbox & { host_live: boolean }>(
    `WITH s AS (
       UPDATE sandboxes SET reaper_op = $2, reaper_op_at = $3
       WHERE id = (
         SELECT c.id FROM sandboxes c
         WHERE c.id = $1 AND NOT c.pooled AND c.state = ANY($4::text[])
           AND (c.reaper_op IS NULL OR c.reaper_op_at < $3::timestamptz - $5 * interval '1 millisecond')
         FOR UPDATE SKIP LOCKED)
       RETURNING *)
     SELECT ${SANDBOX_COLUMNS}, h.last_heartbeat > now() - $6 * interval '1 millisecond' AS host_live
     FROM s JOIN hosts h ON h.id = s.host_id`,
    [id, op, now.toISOString(), states, opts.leaseMs, opts.hostDeadAfterMs],
  );
  return rows[0] && { ...toSandbox(rows[0]), hostLive: rows[0].host_live, claimAt: now };
}

/** Ends a claim, if it is still this one (a takeover's newer claim is left alone). */
export async function releaseReaperOp(db: Queryable, c: Pick<ReaperClaim, "id" | "reaperOp" | "claimAt">) {
  await db.query(
    `UPDATE sandboxes SET reaper_op = NULL, reaper_op_at = NULL
     WHERE id = $1 AND reaper_op = $2 AND reaper_op_at = $3`,
    [c.id, c.reaperOp, c.claimAt.toISOString()],
  );
}

/** Whether the row still carries this claim (false: taken over, or released). */
export async function holdsClaim(
  db: Queryable,
  c: Pick<ReaperClaim, "id" | "reaperOp" | "claimAt">,
): Promise<boolean> {
  const { rows } = await db.query(
    "SELECT 1 FROM sandboxes WHERE id = $1 AND reaper_op = $2 AND reaper_op_at = $3",
    [c.id, c.reaperOp, c.claimAt.toISOString()],
  );
  return rows.length > 0;
}

/** Records the archive's snapshot id and its archive URI (either may be cleared with null). */
export async function setArchiveRefs(
  db: Queryable,
  id: string,
  refs: { snapshotId: string | null; uri: string | null },
): Promise<void> {
  await db.query("UPDATE sandboxes SET archive_snapshot_id = $2, archive_uri = $3 WHERE id = $1", [
    id,
    refs.snapshotId,
    refs.uri,
  ]);
}

/**
 * Moves an archived sandbox, and the snapshot holding its state, to another host (its
 * archive is in storage every host reads).
 */
export async function moveToHost(
  tx: Queryable,
  id: string,
  snapshotId: string,
  hostId: string,
): Promise<void> {
  await tx.query("UPDATE sandboxes SET host_id = $2 WHERE id = $1 AND state = 'archived'", [id, hostId]);
  await tx.query("UPDATE snapshots SET host_id = $2 WHERE id = $1", [snapshotId, hostId]);
}

/** paused -> archived at `at` (the reaper's clock); the claim ends with it. */
export async function markArchived(tx: Queryable, id: string, at: Date): Promise<SandboxRow> {
  const { rows } = await tx.query<RawSandbox>(
    `WITH s AS (
       UPDATE sandboxes SET state = 'archived', archived_at = $2, reaper_op = NULL, reaper_op_at = NULL
       WHERE id = $1 AND state = 'paused' AND archive_snapshot_id IS NOT NULL AND archive_uri IS NOT NULL
       RETURNING *)
     SELECT ${SANDBOX_COLUMNS} FROM s JOIN hosts h ON h.id = s.host_id`,
    [id, at.toISOString()],
  );
  if (rows[0] === undefined)
    throw new Error(`sandbox ${id} was not paused with an archive when marked archived`);
  return toSandbox(rows[0]);
}

/** archived -> running, restored under its own id: the archive references go. */
export async function markUnarchived(tx: Queryable, id: string, runtime: string): Promise<SandboxRow> {
  const { rows } = await tx.query<RawSandbox>(
    `WITH s AS (
       UPDATE sandboxes SET state = 'running', runtime = COALESCE(NULLIF($2, ''), runtime), archived_at = NULL,
         archive_snapshot_id = NULL, archive_uri = NULL, paused_at = NULL, last_activity_at = now(),
         reaper_op = NULL, reaper_op_at = NULL
       WHERE id = $1 AND state = 'archived' RETURNING *)
     SELECT ${SANDBOX_COLUMNS} FROM s JOIN hosts h ON h.id = s.host_id`,
    [id, runtime],
  );
  if (rows[0] === undefined) throw new Error(`sandbox ${id} was not archived when marked unarchived`);
  return toSandbox(rows[0]);
}

/**
 * A reaper's delete: -> 'deleting', only while the row still carries this claim and is in a
 * state the reaper deletes (a sandbox resumed meanwhile is left alone). Undefined otherwise.
 */
export async function beginReaperDelete(
  db: Queryable,
  c: Pick<ReaperClaim, "id" | "claimAt">,
  hostDeadAfterMs: number,
): Promise<(SandboxRow & { hostLive: boolean }) | undefined> {
  const { rows } = await db.query<RawSandbox & { host_live: boolean }>(
    `WITH s AS (
       UPDATE sandboxes SET state = 'deleting'
       WHERE id = $1 AND NOT pooled AND state IN ('running', 'paused', 'archived', 'deleting')
         -- A running one only while its deadline has passed (a setTimeout may have moved it).
         AND (state <> 'running' OR (expires_at IS NOT NULL AND expires_at <= $2))
         AND reaper_op = 'delete' AND reaper_op_at = $2 RETURNING *)
     SELECT ${SANDBOX_COLUMNS}, h.last_heartbeat > now() - $3 * interval '1 millisecond' AS host_live
     FROM s JOIN hosts h ON h.id = s.host_id`,
    [c.id, c.claimAt.toISOString(), hostDeadAfterMs],
  );
  return rows[0] && { ...toSandbox(rows[0]), hostLive: rows[0].host_live };
}
