import type { Db } from "@dnah/platform";

type Q = Pick<Db, "query">;

export async function insertApiKey(
  db: Q,
  row: { id: string; name: string; keySha256: string },
): Promise<void> {
  await db.query("INSERT INTO gateway_api_keys (id, name, key_sha256) VALUES ($1, $2, $3)", [
    row.id,
    row.name,
    row.keySha256,
  ]);
}

/** Stores a key hash, or makes an existing (possibly revoked) row with that hash live again. */
export async function upsertLiveApiKey(
  db: Q,
  row: { id: string; name: string; keySha256: string },
): Promise<void> {
  await db.query(
    `INSERT INTO gateway_api_keys (id, name, key_sha256) VALUES ($1, $2, $3)
     ON CONFLICT (key_sha256) DO UPDATE SET revoked_at = NULL`,
    [row.id, row.name, row.keySha256],
  );
}

/** The id of the live key with this hash, or undefined (unknown or revoked). */
export async function liveApiKeyIdByHash(db: Q, keySha256: string): Promise<string | undefined> {
  const { rows } = await db.query<{ id: string }>(
    "SELECT id FROM gateway_api_keys WHERE key_sha256 = $1 AND revoked_at IS NULL",
    [keySha256],
  );
  return rows[0]?.id;
}

export async function countLiveApiKeys(db: Q): Promise<number> {
  const { rows } = await db.query<{ n: number | string }>(
    "SELECT count(*)::int AS n FROM gateway_api_keys WHERE revoked_at IS NULL",
  );
  return Number(rows[0]?.n ?? 0);
}

/** Returns false when no live key has that id. */
export async function revokeApiKeyById(db: Q, id: string): Promise<boolean> {
  const { rows } = await db.query(
    "UPDATE gateway_api_keys SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL RETURNING id",
    [id],
  );
  return rows.length > 0;
}

/** Serialises concurrent gateways creating the first key (held until the transaction ends). */
export async function lockApiKeys(db: Q): Promise<void> {
  await db.query("SELECT pg_advisory_xact_lock(hashtext('gateway_api_keys'))");
}

export interface ApiKeyRow {
  id: string;
  name: string;
  createdAt: Date;
  revokedAt: Date | null;
}

/** Every key, live and revoked, oldest first (never the hash: it identifies the key). */
export async function listApiKeyRows(db: Q): Promise<ApiKeyRow[]> {
  const { rows } = await db.query<{ id: string; name: string; created_at: Date; revoked_at: Date | null }>(
    "SELECT id, name, created_at, revoked_at FROM gateway_api_keys ORDER BY created_at, id",
  );
  return rows.map((r) => ({
    id: r.id,
    name: r.name,
    createdAt: new Date(r.created_at),
    revokedAt: r.revoked_at === null ? null : new Date(r.revoked_at),
  }));
}
