import type { Db } from "@dnah/platform";

type Q = Pick<Db, "query">;

/**
 * Records a sandbox created through the E2B API. Only recorded sandboxes have an envd access
 * token, so only they are served on the sandbox URL (see SandboxTunnels). When it ends, and
 * what happens then, is the native lifecycle's deadline (see lifecycle.ts).
 */
export async function recordE2bSandbox(db: Q, sandboxId: string): Promise<void> {
  await db.query(
    "INSERT INTO gateway_e2b_sandboxes (sandbox_id) VALUES ($1) ON CONFLICT (sandbox_id) DO NOTHING",
    [sandboxId],
  );
}

export interface E2bSandboxRow {
  sandboxId: string;
  /** When the E2B create answered (a sandbox claimed from the warm pool was booted earlier). */
  startedAt: Date;
}

/** The E2B record of each given sandbox that has one. */
export async function e2bSandboxRows(
  db: Q,
  sandboxIds: readonly string[],
): Promise<Map<string, E2bSandboxRow>> {
  if (sandboxIds.length === 0) return new Map();
  const { rows } = await db.query<{ sandbox_id: string; created_at: Date }>(
    "SELECT sandbox_id, created_at FROM gateway_e2b_sandboxes WHERE sandbox_id = ANY($1::text[])",
    [sandboxIds],
  );
  return new Map(rows.map((r) => [r.sandbox_id, { sandboxId: r.sandbox_id, startedAt: r.created_at }]));
}

/** Recorded sandbox ids, newest first (candidates for signed `/files` URLs). */
export async function e2bSandboxIds(db: Q, limit: number): Promise<string[]> {
  const { rows } = await db.query<{ sandbox_id: string }>(
    "SELECT sandbox_id FROM gateway_e2b_sandboxes ORDER BY created_at DESC LIMIT $1",
    [limit],
  );
  return rows.map((r) => r.sandbox_id);
}

export async function isE2bSandbox(db: Q, sandboxId: string): Promise<boolean> {
  const { rows } = await db.query("SELECT 1 AS ok FROM gateway_e2b_sandboxes WHERE sandbox_id = $1", [
    sandboxId,
  ]);
  return rows.length > 0;
}

export async function deleteE2bSandbox(db: Q, sandboxId: string): Promise<void> {
  await db.query("DELETE FROM gateway_e2b_sandboxes WHERE sandbox_id = $1", [sandboxId]);
}

/**
 * Forgets E2B records of sandboxes that no longer exist (the scheduler's reaper deleted them
 * at their deadline, or they were deleted through another API): records older than
 * `minAgeS` whose id is not in `liveIds`. Returns the ids forgotten.
 */
export async function pruneE2bSandboxes(
  db: Q,
  liveIds: readonly string[],
  minAgeS: number,
): Promise<string[]> {
  const { rows } = await db.query<{ sandbox_id: string }>(
    `DELETE FROM gateway_e2b_sandboxes
     WHERE created_at < now() - make_interval(secs => $2) AND NOT (sandbox_id = ANY($1::text[]))
     RETURNING sandbox_id`,
    [liveIds, minAgeS],
  );
  return rows.map((r) => r.sandbox_id);
}
