import type { Db } from "@dnah/platform";

type Q = Pick<Db, "query">;

/** A row of gateway_daytona_snapshots (0009_daytona_snapshots.sql). */
export interface SnapshotRow {
  id: string;
  owner_sha256: string;
  name: string;
  template_id: string;
  build_id: string | null;
  image_name: string | null;
  entrypoint: string[] | null;
  build_info: { dockerfileContent: string; contextHashes: string[] } | null;
  cpu: number;
  mem_gib: number;
  disk_gib: number;
  state: string;
  error_reason: string | null;
  created_at: Date;
  updated_at: Date;
  last_used_at: Date | null;
}

const COLUMNS = `id, owner_sha256, name, template_id, build_id, image_name, entrypoint, build_info, cpu,
  mem_gib, disk_gib, state, error_reason, created_at, updated_at, last_used_at`;

export type NewSnapshotRow = Omit<SnapshotRow, "created_at" | "updated_at" | "last_used_at" | "error_reason">;

/** Records a snapshot; undefined when the owner has one of that name already. */
export async function insertSnapshot(db: Q, r: NewSnapshotRow): Promise<SnapshotRow | undefined> {
  const { rows } = await db.query<SnapshotRow>(
    `INSERT INTO gateway_daytona_snapshots (id, owner_sha256, name, template_id, build_id, image_name,
       entrypoint, build_info, cpu, mem_gib, disk_gib, state)
     VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8::jsonb, $9, $10, $11, $12)
     ON CONFLICT (owner_sha256, name) DO NOTHING
     RETURNING ${COLUMNS}`,
    [
      r.id,
      r.owner_sha256,
      r.name,
      r.template_id,
      r.build_id,
      r.image_name,
      JSON.stringify(r.entrypoint),
      JSON.stringify(r.build_info),
      r.cpu,
      r.mem_gib,
      r.disk_gib,
      r.state,
    ],
  );
  return rows[0];
}

/** Sets the build of a snapshot recorded before its build started. */
export async function setSnapshotBuild(db: Q, id: string, buildId: string): Promise<void> {
  await db.query("UPDATE gateway_daytona_snapshots SET build_id = $2, updated_at = now() WHERE id = $1", [
    id,
    buildId,
  ]);
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The owner's snapshot by id or name. */
export async function findSnapshot(db: Q, owner: string, idOrName: string): Promise<SnapshotRow | undefined> {
  // Postgres text cannot hold NUL: such a name is no snapshot (asking would fail the query).
  if (idOrName.includes("\0")) return undefined;
  const { rows } = await db.query<SnapshotRow>(
    UUID_RE.test(idOrName)
      ? `SELECT ${COLUMNS} FROM gateway_daytona_snapshots WHERE owner_sha256 = $1 AND (id::text = lower($2) OR name = $2)
         ORDER BY (id::text = lower($2)) DESC LIMIT 1`
      : `SELECT ${COLUMNS} FROM gateway_daytona_snapshots WHERE owner_sha256 = $1 AND name = $2`,
    [owner, idOrName],
  );
  return rows[0];
}

export async function listSnapshots(
  db: Q,
  owner: string,
  limit: number,
  offset: number,
): Promise<{ rows: SnapshotRow[]; total: number }> {
  const [page, count] = await Promise.all([
    db.query<SnapshotRow>(
      `SELECT ${COLUMNS} FROM gateway_daytona_snapshots WHERE owner_sha256 = $1
       ORDER BY created_at DESC, id LIMIT $2 OFFSET $3`,
      [owner, limit, offset],
    ),
    db.query<{ n: string }>(
      "SELECT count(*)::text AS n FROM gateway_daytona_snapshots WHERE owner_sha256 = $1",
      [owner],
    ),
  ]);
  return { rows: page.rows, total: Number(count.rows[0]?.n ?? 0) };
}

/** Stores a build's end (compare-and-set from a non-terminal state). */
export async function settleSnapshot(
  db: Q,
  id: string,
  state: string,
  errorReason: string | null,
): Promise<SnapshotRow | undefined> {
  const { rows } = await db.query<SnapshotRow>(
    `UPDATE gateway_daytona_snapshots SET state = $2, error_reason = $3, updated_at = now()
     WHERE id = $1 AND state IN ('pending', 'building') RETURNING ${COLUMNS}`,
    [id, state, errorReason],
  );
  return rows[0];
}

export async function touchSnapshot(db: Q, id: string): Promise<void> {
  await db.query("UPDATE gateway_daytona_snapshots SET last_used_at = now() WHERE id = $1", [id]);
}

export async function deleteSnapshotRow(db: Q, id: string): Promise<void> {
  await db.query("DELETE FROM gateway_daytona_snapshots WHERE id = $1", [id]);
}

// Context tars.

export async function contextEtag(
  db: Q,
  owner: string,
  hash: string,
): Promise<{ etag: string; size: number; created_at: Date } | undefined> {
  const { rows } = await db.query<{ etag: string; size: number; created_at: Date }>(
    `SELECT etag, octet_length(data) AS size, created_at FROM gateway_daytona_contexts
     WHERE owner_sha256 = $1 AND hash = $2`,
    [owner, hash],
  );
  return rows[0];
}

export async function putContext(
  db: Q,
  owner: string,
  hash: string,
  data: Buffer,
  etag: string,
): Promise<void> {
  await db.query(
    `INSERT INTO gateway_daytona_contexts (owner_sha256, hash, data, etag) VALUES ($1, $2, $3, $4)
     ON CONFLICT (owner_sha256, hash) DO UPDATE SET data = EXCLUDED.data, etag = EXCLUDED.etag, created_at = now()`,
    [owner, hash, data, etag],
  );
}

/** The owner's context tars by hash (missing ones are absent from the map). */
export async function contexts(
  db: Q,
  owner: string,
  hashes: readonly string[],
): Promise<Map<string, Buffer>> {
  const { rows } = await db.query<{ hash: string; data: Uint8Array }>(
    "SELECT hash, data FROM gateway_daytona_contexts WHERE owner_sha256 = $1 AND hash = ANY($2::text[])",
    [owner, [...new Set(hashes)]],
  );
  return new Map(rows.map((r) => [r.hash, Buffer.from(r.data)]));
}

// Temporary storage credentials.

export async function insertStorageKey(
  db: Q,
  k: { accessKey: string; secret: string; owner: string; expiresAt: Date },
): Promise<void> {
  await db.query("DELETE FROM gateway_daytona_storage_keys WHERE expires_at < now()");
  await db.query(
    "INSERT INTO gateway_daytona_storage_keys (access_key, secret, owner_sha256, expires_at) VALUES ($1, $2, $3, $4)",
    [k.accessKey, k.secret, k.owner, k.expiresAt],
  );
}

/** A live key's secret and owner. */
export async function storageKey(
  db: Q,
  accessKey: string,
): Promise<{ secret: string; owner_sha256: string } | undefined> {
  const { rows } = await db.query<{ secret: string; owner_sha256: string }>(
    "SELECT secret, owner_sha256 FROM gateway_daytona_storage_keys WHERE access_key = $1 AND expires_at > now()",
    [accessKey],
  );
  return rows[0];
}

// Multipart uploads.

export async function putPart(
  db: Q,
  p: { uploadId: string; owner: string; hash: string; partNumber: number; data: Buffer },
): Promise<void> {
  await db.query(
    `INSERT INTO gateway_daytona_upload_parts (upload_id, owner_sha256, hash, part_number, data)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (upload_id, part_number) DO UPDATE SET data = EXCLUDED.data`,
    [p.uploadId, p.owner, p.hash, p.partNumber, p.data],
  );
}

export async function uploadParts(
  db: Q,
  uploadId: string,
  owner: string,
  hash: string,
): Promise<{ part_number: number; data: Buffer }[]> {
  const { rows } = await db.query<{ part_number: number; data: Uint8Array }>(
    `SELECT part_number, data FROM gateway_daytona_upload_parts
     WHERE upload_id = $1 AND owner_sha256 = $2 AND hash = $3 ORDER BY part_number`,
    [uploadId, owner, hash],
  );
  return rows.map((r) => ({ part_number: r.part_number, data: Buffer.from(r.data) }));
}

export async function dropUpload(db: Q, uploadId: string, owner: string): Promise<void> {
  await db.query("DELETE FROM gateway_daytona_upload_parts WHERE upload_id = $1 AND owner_sha256 = $2", [
    uploadId,
    owner,
  ]);
}
