import type { Db } from "@dnah/platform";

type Q = Pick<Db, "query">;

/**
 * Records a sandbox created through the E2B API and when it should end (now + `timeoutS`).
 * Only recorded sandboxes have an envd access token, so only they are served on the sandbox
 * URL (see SandboxTunnels).
 */
export async function recordE2bSandbox(db: Q, sandboxId: string, timeoutS: number): Promise<void> {
  await db.query(
    `INSERT INTO gateway_e2b_sandboxes (sandbox_id, end_at) VALUES ($1, now() + make_interval(secs => $2))
     ON CONFLICT (sandbox_id) DO UPDATE SET end_at = EXCLUDED.end_at`,
    [sandboxId, timeoutS],
  );
}

export async function isE2bSandbox(db: Q, sandboxId: string): Promise<boolean> {
  const { rows } = await db.query("SELECT 1 AS ok FROM gateway_e2b_sandboxes WHERE sandbox_id = $1", [
    sandboxId,
  ]);
  return rows.length > 0;
}

/**
 * Moves the end of an E2B sandbox to now + `timeoutS`; `extendOnly` never brings it closer
 * (E2B connect). False when the sandbox was not created through the E2B API.
 */
export async function moveSandboxEnd(
  db: Q,
  sandboxId: string,
  timeoutS: number,
  extendOnly: boolean,
): Promise<boolean> {
  const { rows } = await db.query(
    `UPDATE gateway_e2b_sandboxes
     SET end_at = CASE WHEN $3 THEN GREATEST(end_at, now() + make_interval(secs => $2))
                       ELSE now() + make_interval(secs => $2) END
     WHERE sandbox_id = $1 RETURNING sandbox_id`,
    [sandboxId, timeoutS, extendOnly],
  );
  return rows.length > 0;
}

/** The recorded end of each sandbox that has one. */
export async function sandboxEnds(db: Q, sandboxIds: readonly string[]): Promise<Map<string, Date>> {
  if (sandboxIds.length === 0) return new Map();
  const { rows } = await db.query<{ sandbox_id: string; end_at: Date }>(
    "SELECT sandbox_id, end_at FROM gateway_e2b_sandboxes WHERE sandbox_id = ANY($1::text[])",
    [sandboxIds],
  );
  return new Map(rows.map((r) => [r.sandbox_id, r.end_at]));
}

export async function deleteE2bSandbox(db: Q, sandboxId: string): Promise<void> {
  await db.query("DELETE FROM gateway_e2b_sandboxes WHERE sandbox_id = $1", [sandboxId]);
}

/**
 * Claims up to `limit` E2B sandboxes whose end has passed: pushes their end `retryAfterS`
 * into the future (a lease, so a failed kill is retried) and returns their ids. Concurrent
 * gateways skip each other's claims.
 */
export async function claimExpiredE2bSandboxes(db: Q, limit: number, retryAfterS: number): Promise<string[]> {
  const { rows } = await db.query<{ sandbox_id: string }>(
    `UPDATE gateway_e2b_sandboxes SET end_at = now() + make_interval(secs => $2)
     WHERE sandbox_id IN (
       SELECT sandbox_id FROM gateway_e2b_sandboxes WHERE end_at <= now()
       ORDER BY end_at LIMIT $1 FOR UPDATE SKIP LOCKED)
     RETURNING sandbox_id`,
    [limit, retryAfterS],
  );
  return rows.map((r) => r.sandbox_id);
}
