import type { BuildSpec, BuildStatus } from "../domain/templates.js";
import {
  type Queryable,
  type RawTemplate,
  TEMPLATE_COLUMNS,
  type TemplateRow,
  toTemplate,
} from "./queries.js";

/** SQL of user templates: their builds, build logs and build contexts (tables of 0009). */

export interface BuildResultJson {
  buildKey: string;
  cachedSteps: number;
  builtSteps: number;
  sizeBytes: string;
  durationMs: number;
}

export interface BuildRow {
  id: string;
  templateId: string;
  status: BuildStatus;
  reason: string;
  hostId: string;
  spec: BuildSpec;
  result: BuildResultJson | null;
  createdAt: Date;
  finishedAt: Date | null;
}

interface RawBuild {
  id: string;
  template_id: string;
  status: BuildStatus;
  reason: string;
  host_id: string;
  spec: BuildSpec;
  result: BuildResultJson | null;
  created_at: Date;
  finished_at: Date | null;
}

const BUILD_COLUMNS = "id, template_id, status, reason, host_id, spec, result, created_at, finished_at";

function toBuild(r: RawBuild): BuildRow {
  return {
    id: r.id,
    templateId: r.template_id,
    status: r.status,
    reason: r.reason,
    hostId: r.host_id,
    spec: r.spec,
    result: r.result,
    createdAt: r.created_at,
    finishedAt: r.finished_at,
  };
}

export interface LogLine {
  at: Date;
  level: string;
  message: string;
}

// ---- templates

/**
 * Serialises every change to template names (builds, deletes) for the rest of the
 * transaction, so that two builds cannot take the same name or alias at once.
 */
export async function lockTemplateNames(tx: Queryable): Promise<void> {
  await tx.query("SELECT pg_advisory_xact_lock(hashtext('dnah_scheduler_template_names'))");
}

/** A template by its id (not an alias), locked for the rest of the transaction. */
export async function lockTemplate(tx: Queryable, id: string): Promise<TemplateRow | undefined> {
  const { rows } = await tx.query<RawTemplate>(
    `SELECT ${TEMPLATE_COLUMNS} FROM templates WHERE id = $1 FOR UPDATE`,
    [id],
  );
  return rows[0] && toTemplate(rows[0]);
}

/** Which of `names` another template (not `exceptId`) uses as its id or an alias. */
export async function namesTaken(
  db: Queryable,
  names: readonly string[],
  exceptId: string,
): Promise<{ name: string; templateId: string }[]> {
  const { rows } = await db.query<{ name: string; id: string }>(
    `SELECT n AS name, t.id FROM unnest($1::text[]) AS n
     JOIN templates t ON t.id <> $2 AND (t.id = n OR n = ANY(t.aliases))
     ORDER BY n`,
    [names, exceptId],
  );
  return rows.map((r) => ({ name: r.name, templateId: r.id }));
}

export interface NewTemplate {
  id: string;
  aliases: string[];
  owner: string;
  public: boolean;
  cpuCount: number;
  memoryMib: number;
  /** Null for a reserved build's template (its base comes with the steps). */
  baseTemplateId: string | null;
  latestBuildId: string;
}

/** A new user template, 'building' until its first build is ready. */
export async function insertTemplate(tx: Queryable, t: NewTemplate): Promise<TemplateRow> {
  const { rows } = await tx.query<RawTemplate>(
    `INSERT INTO templates (id, aliases, cpu_count, memory_mib, owner, public, builtin, base_template_id, status, latest_build_id)
     VALUES ($1, $2, $3, $4, $5, $6, false, $7, 'building', $8)
     RETURNING ${TEMPLATE_COLUMNS}`,
    [t.id, t.aliases, t.cpuCount, t.memoryMib, t.owner, t.public, t.baseTemplateId, t.latestBuildId],
  );
  return toTemplate(rows[0]!);
}

/**
 * A rebuild: names and visibility change now, what it runs (spec, base, size) when the build
 * is ready. A template with a ready build stays ready meanwhile.
 */
export async function startRebuild(
  tx: Queryable,
  id: string,
  t: { aliases: string[]; public: boolean; latestBuildId: string },
): Promise<TemplateRow> {
  const { rows } = await tx.query<RawTemplate>(
    `UPDATE templates SET aliases = $2, public = $3, latest_build_id = $4,
       status = CASE WHEN ready_build_id IS NULL THEN 'building' ELSE 'ready' END, updated_at = now()
     WHERE id = $1 RETURNING ${TEMPLATE_COLUMNS}`,
    [id, t.aliases, t.public, t.latestBuildId],
  );
  return toTemplate(rows[0]!);
}

/** Templates a caller sees: public ones, the installation's and its own; built-in first. */
export async function listVisibleTemplates(db: Queryable, owner: string): Promise<TemplateRow[]> {
  const { rows } = await db.query<RawTemplate>(
    `SELECT ${TEMPLATE_COLUMNS} FROM templates
     WHERE public OR owner = '' OR ($1 <> '' AND owner = $1)
     ORDER BY builtin DESC, id`,
    [owner],
  );
  return rows.map(toTemplate);
}

/**
 * Removes a template with its builds and their logs, and from the hosts' lists (nothing is
 * placed on its old copies meanwhile); false when it was gone already.
 */
export async function deleteTemplateRow(tx: Queryable, id: string): Promise<boolean> {
  const { rows } = await tx.query("DELETE FROM templates WHERE id = $1 AND NOT builtin RETURNING id", [id]);
  if (rows.length === 0) return false;
  await forgetTemplateOnHosts(tx, id);
  return true;
}

/** Takes a template off the lists of what hosts hold (all of them, or one). */
export async function forgetTemplateOnHosts(
  db: Queryable,
  templateId: string,
  hostId?: string,
): Promise<void> {
  await db.query(
    "UPDATE hosts SET templates = array_remove(templates, $1) WHERE $1 = ANY(templates) AND ($2::text IS NULL OR id = $2)",
    [templateId, hostId ?? null],
  );
}

/** The hosts that may hold a template: those reporting it, and those that built it. */
export async function templateHosts(
  db: Queryable,
  templateId: string,
): Promise<{ hostId: string; vmmUrl: string }[]> {
  const { rows } = await db.query<{ id: string; vmm_url: string }>(
    `SELECT h.id, h.vmm_url FROM hosts h
     WHERE $1 = ANY(h.templates) OR h.id IN (SELECT host_id FROM template_builds WHERE template_id = $1)
     ORDER BY h.id`,
    [templateId],
  );
  return rows.map((r) => ({ hostId: r.id, vmmUrl: r.vmm_url }));
}

// ---- builds

/** A build, 'building' on its host or 'waiting' (reserved: no host, no steps yet). */
export async function insertBuild(
  tx: Queryable,
  b: { id: string; templateId: string; status: "building" | "waiting"; hostId: string; spec: BuildSpec },
): Promise<BuildRow> {
  const { rows } = await tx.query<RawBuild>(
    `INSERT INTO template_builds (id, template_id, status, host_id, spec)
     VALUES ($1, $2, $3, $4, $5::jsonb) RETURNING ${BUILD_COLUMNS}`,
    [b.id, b.templateId, b.status, b.hostId, JSON.stringify(b.spec)],
  );
  return toBuild(rows[0]!);
}

/** A reserved build starts: its host and steps. Undefined when it is no longer waiting. */
export async function startWaitingBuild(
  tx: Queryable,
  id: string,
  b: { hostId: string; spec: BuildSpec },
): Promise<BuildRow | undefined> {
  const { rows } = await tx.query<RawBuild>(
    `UPDATE template_builds SET status = 'building', host_id = $2, spec = $3::jsonb, heartbeat_at = now()
     WHERE id = $1 AND status = 'waiting' RETURNING ${BUILD_COLUMNS}`,
    [id, b.hostId, JSON.stringify(b.spec)],
  );
  return rows[0] && toBuild(rows[0]);
}

/** Reserved builds of a template that a newer build replaces (all but `keep`) are cancelled. */
export async function supersedeWaitingBuilds(
  tx: Queryable,
  templateId: string,
  keep: string,
  by: string,
): Promise<void> {
  await tx.query(
    `UPDATE template_builds SET status = 'cancelled', reason = $3, finished_at = now()
     WHERE template_id = $1 AND status = 'waiting' AND id <> $2`,
    [templateId, keep, `superseded by build ${by}`],
  );
}

export async function getBuild(
  db: Queryable,
  templateId: string,
  buildId: string,
): Promise<BuildRow | undefined> {
  const { rows } = await db.query<RawBuild>(
    `SELECT ${BUILD_COLUMNS} FROM template_builds WHERE id = $1 AND template_id = $2`,
    [buildId, templateId],
  );
  return rows[0] && toBuild(rows[0]);
}

/** The template's build still running, if any. */
export async function runningBuildOf(db: Queryable, templateId: string): Promise<BuildRow | undefined> {
  const { rows } = await db.query<RawBuild>(
    `SELECT ${BUILD_COLUMNS} FROM template_builds WHERE template_id = $1 AND status = 'building'
     ORDER BY created_at DESC LIMIT 1`,
    [templateId],
  );
  return rows[0] && toBuild(rows[0]);
}

export type BuildOutcome =
  | { status: "ready"; result: BuildResultJson }
  | { status: "error" | "cancelled"; reason: string };

/**
 * Records how a build ended, once (a build no longer 'building' or 'waiting' is left as it is:
 * cancelled or interrupted meanwhile), and what that means for its template: a ready build becomes the
 * template's (its spec, base and size with it); a failed one leaves the last good build, or
 * the template in 'error' when it has none. Undefined when the build had ended already.
 */
export async function finishBuild(
  tx: Queryable,
  buildId: string,
  outcome: BuildOutcome,
): Promise<BuildRow | undefined> {
  const { rows } = await tx.query<RawBuild>(
    `UPDATE template_builds SET status = $2, reason = $3, result = $4::jsonb, finished_at = now()
     WHERE id = $1 AND status IN ('building', 'waiting') RETURNING ${BUILD_COLUMNS}`,
    [
      buildId,
      outcome.status,
      outcome.status === "ready" ? "" : outcome.reason.slice(0, 4000),
      outcome.status === "ready" ? JSON.stringify(outcome.result) : null,
    ],
  );
  const b = rows[0] && toBuild(rows[0]);
  if (b === undefined) return undefined;
  if (b.status === "ready") {
    await tx.query(
      `UPDATE templates SET ready_build_id = $2, status = 'ready', spec = $3::jsonb, base_template_id = $4,
         cpu_count = $5, memory_mib = $6, updated_at = now()
       WHERE id = $1`,
      [
        b.templateId,
        b.id,
        JSON.stringify({ steps: b.spec.steps, start: b.spec.start }),
        b.spec.baseTemplateId,
        b.spec.cpuCount,
        b.spec.memoryMib,
      ],
    );
    // Its host holds it now: sandboxes may start there before its next heartbeat says so.
    await tx.query(
      "UPDATE hosts SET templates = array_append(templates, $1) WHERE id = $2 AND NOT ($1 = ANY(templates))",
      [b.templateId, b.hostId],
    );
  } else {
    await tx.query(
      `UPDATE templates SET status = CASE WHEN ready_build_id IS NULL THEN 'error' ELSE 'ready' END, updated_at = now()
       WHERE id = $1 AND latest_build_id = $2`,
      [b.templateId, b.id],
    );
  }
  return b;
}

/**
 * Keeps the builds this scheduler runs alive (their heartbeat) and says which of them are
 * still 'building': the others were cancelled or deleted elsewhere, and their streams can go.
 */
export async function touchBuilds(db: Queryable, ids: readonly string[]): Promise<Set<string>> {
  if (ids.length === 0) return new Set<string>();
  const { rows } = await db.query<{ id: string }>(
    `UPDATE template_builds SET heartbeat_at = now()
     WHERE id = ANY($1::text[]) AND status = 'building' RETURNING id`,
    [ids],
  );
  return new Set(rows.map((r) => r.id));
}

/**
 * Builds whose scheduler stopped touching them for `staleMs` (it died, or restarted) become
 * 'error' with `reason`, their templates falling back to their last good build. Builds in
 * `running` (this scheduler's) are never taken. Returns the builds marked.
 */
export async function interruptStaleBuilds(
  db: Queryable,
  staleMs: number,
  reason: string,
  running: readonly string[],
): Promise<{ id: string; templateId: string }[]> {
  const { rows } = await db.query<{ id: string; template_id: string }>(
    `WITH b AS (
       UPDATE template_builds SET status = 'error', reason = $2, finished_at = now()
       WHERE status = 'building' AND heartbeat_at < now() - $1 * interval '1 millisecond'
         AND NOT (id = ANY($3::text[]))
       RETURNING id, template_id),
     t AS (
       UPDATE templates t SET status = CASE WHEN t.ready_build_id IS NULL THEN 'error' ELSE 'ready' END,
         updated_at = now()
       FROM b WHERE t.id = b.template_id AND t.latest_build_id = b.id RETURNING t.id)
     SELECT id, template_id FROM b`,
    [staleMs, reason, running],
  );
  return rows.map((r) => ({ id: r.id, templateId: r.template_id }));
}

/**
 * Reserved builds whose steps never came within `olderThanMs` become 'error' with `reason`
 * (their templates falling back to their last good build). Returns the builds marked.
 */
export async function expireWaitingBuilds(
  db: Queryable,
  olderThanMs: number,
  reason: string,
): Promise<{ id: string; templateId: string }[]> {
  const { rows } = await db.query<{ id: string; template_id: string }>(
    `WITH b AS (
       UPDATE template_builds SET status = 'error', reason = $2, finished_at = now()
       WHERE status = 'waiting' AND created_at < now() - $1 * interval '1 millisecond'
       RETURNING id, template_id),
     t AS (
       UPDATE templates t SET status = CASE WHEN t.ready_build_id IS NULL THEN 'error' ELSE 'ready' END,
         updated_at = now()
       FROM b WHERE t.id = b.template_id AND t.latest_build_id = b.id RETURNING t.id)
     SELECT id, template_id FROM b`,
    [olderThanMs, reason],
  );
  return rows.map((r) => ({ id: r.id, templateId: r.template_id }));
}

// ---- build logs

/** Appends lines numbered from `seq` on (one statement for the batch). */
export async function appendBuildLogs(
  db: Queryable,
  buildId: string,
  seq: number,
  lines: readonly LogLine[],
): Promise<void> {
  if (lines.length === 0) return;
  await db.query(
    `INSERT INTO template_build_logs (build_id, seq, at, level, message)
     SELECT $1, $2 + o - 1, a, l, m FROM unnest($3::timestamptz[], $4::text[], $5::text[]) WITH ORDINALITY AS x(a, l, m, o)
     ON CONFLICT (build_id, seq) DO NOTHING`,
    [
      buildId,
      seq,
      lines.map((l) => l.at.toISOString()),
      lines.map((l) => l.level),
      lines.map((l) => l.message),
    ],
  );
}

/** Up to `limit` log lines of a build from `offset` on. */
export async function buildLogs(
  db: Queryable,
  buildId: string,
  offset: number,
  limit: number,
): Promise<LogLine[]> {
  const { rows } = await db.query<{ at: Date; level: string; message: string }>(
    `SELECT at, level, message FROM template_build_logs WHERE build_id = $1 AND seq >= $2::bigint ORDER BY seq LIMIT $3`,
    [buildId, offset, limit],
  );
  return rows;
}

// ---- build contexts

/** Stores a context tar; the same bytes twice are stored once. */
export async function putTemplateFiles(db: Queryable, sha256: string, data: Uint8Array): Promise<void> {
  await db.query(
    `INSERT INTO template_files (sha256, data, size) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING`,
    [sha256, Buffer.from(data.buffer, data.byteOffset, data.byteLength), data.byteLength],
  );
}

/** Names `sha256` (stored already) as `alias` for `owner`; a later put of the alias moves it. */
export async function putTemplateFileAlias(
  db: Queryable,
  owner: string,
  alias: string,
  sha256: string,
): Promise<void> {
  await db.query(
    `INSERT INTO template_file_aliases (owner, alias, sha256) VALUES ($1, $2, $3)
     ON CONFLICT (owner, alias) DO UPDATE SET sha256 = EXCLUDED.sha256, created_at = now()`,
    [owner, alias, sha256],
  );
}

/** The sha256 `owner` named `alias`, if its bytes are stored. */
export async function templateFileAlias(
  db: Queryable,
  owner: string,
  alias: string,
): Promise<string | undefined> {
  const { rows } = await db.query<{ sha256: string }>(
    "SELECT sha256 FROM template_file_aliases WHERE owner = $1 AND alias = $2",
    [owner, alias],
  );
  return rows[0]?.sha256;
}

/** Which of `hashes` are stored. */
export async function storedTemplateFiles(db: Queryable, hashes: readonly string[]): Promise<Set<string>> {
  if (hashes.length === 0) return new Set();
  const { rows } = await db.query<{ sha256: string }>(
    "SELECT sha256 FROM template_files WHERE sha256 = ANY($1::text[])",
    [hashes],
  );
  return new Set(rows.map((r) => r.sha256));
}

/** The bytes of context tars by hash (all of them, or fewer when some were never stored). */
export async function loadTemplateFiles(
  db: Queryable,
  hashes: readonly string[],
): Promise<Map<string, Uint8Array>> {
  const out = new Map<string, Uint8Array>();
  // One at a time: each may be tens of MiB.
  for (const h of hashes) {
    const { rows } = await db.query<{ data: Buffer }>("SELECT data FROM template_files WHERE sha256 = $1", [
      h,
    ]);
    if (rows[0] !== undefined) out.set(h, new Uint8Array(rows[0].data));
  }
  return out;
}
