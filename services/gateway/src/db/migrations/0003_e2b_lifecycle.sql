-- E2B lifecycle: what happens when a sandbox's `endAt` passes (`kill`, or `pause` for
-- `autoPause` / `lifecycle.onTimeout: "pause"`), and since when an E2B sandbox is paused.
-- A paused sandbox has no deadline: the timeout enforcer skips rows with paused_at set, and
-- connect (resume) clears it and sets a fresh end_at.
ALTER TABLE gateway_e2b_sandboxes
  ADD COLUMN IF NOT EXISTS on_timeout text NOT NULL DEFAULT 'kill' CHECK (on_timeout IN ('kill', 'pause')),
  ADD COLUMN IF NOT EXISTS paused_at timestamptz;

-- The enforcer's scan: running rows by deadline.
CREATE INDEX IF NOT EXISTS gateway_e2b_sandboxes_due_idx ON gateway_e2b_sandboxes (end_at)
  WHERE paused_at IS NULL;
