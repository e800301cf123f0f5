-- E2B's timeout is the native lifecycle's deadline now (the scheduler's expires_at and
-- on_expire, enforced by its reaper): the gateway keeps only which sandboxes are E2B's and
-- since when. Deadlines of E2B sandboxes running during the upgrade are not carried over.
DROP INDEX IF EXISTS gateway_e2b_sandboxes_due_idx;
ALTER TABLE gateway_e2b_sandboxes
  DROP COLUMN IF EXISTS end_at,
  DROP COLUMN IF EXISTS on_timeout,
  DROP COLUMN IF EXISTS paused_at;
