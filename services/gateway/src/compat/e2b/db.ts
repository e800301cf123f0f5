import type { Db } from "@dnah/platform";

type Q = Pick<Db, "query">;

export type OnTimeout = "kill" | "pause";

/**
 * Records a sandbox created through the E2B API, when it should end (now + `timeoutS`) and
 * what happens then. Only recorded sandboxes have an envd access token, so only they are
 * served on the sandbox URL (see SandboxTunnels).
 */
export async function recordE2bSandbox(
  db: Q,
  sandboxId: string,
  timeoutS: number,
  onTimeout: OnTimeout = "kill",
): Promise<void> {
  await db.query(
    `INSERT INTO gateway_e2b_sandboxes (sandbox_id, end_at, on_timeout)
     VALUES ($1, now() + make_interval(secs => $2), $3)
     ON CONFLICT (sandbox_id) DO UPDATE SET end_at = EXCLUDED.end_at, on_timeout = EXCLUDED.on_timeout,
       paused_at = NULL`,
    [sandboxId, timeoutS, onTimeout],
  );
}

export interface E2bSandboxRow {
  sandboxId: string;
  /** When the E2B create answered (a sandbox claimed from the warm pool was booted earlier). */
  startedAt: Date;
  endAt: Date;
  onTimeout: OnTimeout;
  pausedAt: Date | undefined;
}

/** The E2B record of each given sandbox that has one. */
export async function e2bSandboxRows(
  db: Q,
  sandboxIds: readonly string[],
): Promise<Map<string, E2bSandboxRow>> {
  if (sandboxIds.length === 0) return new Map();
  const { rows } = await db.query<{
    sandbox_id: string;
    created_at: Date;
    end_at: Date;
    on_timeout: OnTimeout;
    paused_at: Date | null;
  }>(
    `SELECT sandbox_id, created_at, end_at, on_timeout, paused_at FROM gateway_e2b_sandboxes
     WHERE sandbox_id = ANY($1::text[])`,
    [sandboxIds],
  );
  return new Map(
    rows.map((r) => [
      r.sandbox_id,
      {
        sandboxId: r.sandbox_id,
        startedAt: r.created_at,
        endAt: r.end_at,
        onTimeout: r.on_timeout,
        pausedAt: r.paused_at ?? undefined,
      },
    ]),
  );
}

/** A paused E2B sandbox has no deadline; its `endAt` is the pause time. False if not recorded. */
export async function markE2bPaused(db: Q, sandboxId: string): Promise<boolean> {
  const { rows } = await db.query(
    `UPDATE gateway_e2b_sandboxes SET paused_at = COALESCE(paused_at, now()), end_at = COALESCE(paused_at, now())
     WHERE sandbox_id = $1 RETURNING sandbox_id`,
    [sandboxId],
  );
  return rows.length > 0;
}

/** A resumed E2B sandbox runs again until now + `timeoutS`. False if not recorded. */
export async function markE2bResumed(db: Q, sandboxId: string, timeoutS: number): Promise<boolean> {
  const { rows } = await db.query(
    `UPDATE gateway_e2b_sandboxes SET paused_at = NULL, end_at = now() + make_interval(secs => $2)
     WHERE sandbox_id = $1 RETURNING sandbox_id`,
    [sandboxId, timeoutS],
  );
  return rows.length > 0;
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

/**
 * Moves the end of an E2B sandbox to now + `timeoutS`; `extendOnly` never brings it closer
 * (E2B connect). False when the sandbox was not created through the E2B API or is paused.
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
     WHERE sandbox_id = $1 AND paused_at IS NULL RETURNING sandbox_id`,
    [sandboxId, timeoutS, extendOnly],
  );
  return rows.length > 0;
}

export async function deleteE2bSandbox(db: Q, sandboxId: string): Promise<void> {
  await db.query("DELETE FROM gateway_e2b_sandboxes WHERE sandbox_id = $1", [sandboxId]);
}

/**
 * Claims up to `limit` running E2B sandboxes whose end has passed: pushes their end
 * `retryAfterS` into the future (a lease, so a failed kill or pause is retried) and returns
 * them with what to do. Concurrent gateways skip each other's claims; paused rows have no end.
 */
export async function claimExpiredE2bSandboxes(
  db: Q,
  limit: number,
  retryAfterS: number,
): Promise<{ sandboxId: string; onTimeout: OnTimeout }[]> {
  const { rows } = await db.query<{ sandbox_id: string; on_timeout: OnTimeout }>(
    `UPDATE gateway_e2b_sandboxes SET end_at = now() + make_interval(secs => $2)
     WHERE sandbox_id IN (
       SELECT sandbox_id FROM gateway_e2b_sandboxes WHERE end_at <= now() AND paused_at IS NULL
       ORDER BY end_at LIMIT $1 FOR UPDATE SKIP LOCKED)
     RETURNING sandbox_id, on_timeout`,
    [limit, retryAfterS],
  );
  return rows.map((r) => ({ sandboxId: r.sandbox_id, onTimeout: r.on_timeout }));
}
