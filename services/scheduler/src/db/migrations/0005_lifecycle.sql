-- Lifecycle: what the reaper does to a sandbox on its own (0 = never), the idle clock, the
-- archived state, and every transition as an event.
ALTER TABLE sandboxes
  ADD COLUMN lifecycle_type text NOT NULL DEFAULT 'persistent' CHECK (lifecycle_type IN ('persistent', 'ephemeral')),
  ADD COLUMN auto_stop_minutes integer NOT NULL DEFAULT 0 CHECK (auto_stop_minutes BETWEEN 0 AND 5256000),
  ADD COLUMN auto_archive_days integer NOT NULL DEFAULT 0 CHECK (auto_archive_days BETWEEN 0 AND 3650),
  ADD COLUMN auto_delete_days integer NOT NULL DEFAULT 0 CHECK (auto_delete_days BETWEEN 0 AND 3650),
  -- The last working call (coalesced by the gateways); the reaper stops a sandbox idle since.
  ADD COLUMN last_activity_at timestamptz NOT NULL DEFAULT now(),
  ADD COLUMN archived_at timestamptz,
  -- While archived: the signed snapshot holding its state, and where that snapshot is stored.
  ADD COLUMN archive_snapshot_id text,
  ADD COLUMN archive_uri text,
  -- A reaper's claim on a transition in flight ('stop', 'archive', 'delete') and since when:
  -- another reaper takes it over once the lease ran out (the first one died).
  ADD COLUMN reaper_op text CHECK (reaper_op IN ('stop', 'archive', 'delete')),
  ADD COLUMN reaper_op_at timestamptz;

ALTER TABLE sandboxes DROP CONSTRAINT sandboxes_state_check;
ALTER TABLE sandboxes ADD CONSTRAINT sandboxes_state_check
  CHECK (state IN ('starting', 'running', 'paused', 'stopped', 'archived', 'deleting', 'deleted', 'error'));
ALTER TABLE sandboxes ADD CONSTRAINT sandboxes_archived_check
  CHECK (state <> 'archived' OR (archived_at IS NOT NULL AND archive_snapshot_id IS NOT NULL AND archive_uri IS NOT NULL));

-- Get and List show archived sandboxes too.
DROP INDEX sandboxes_listed_idx;
CREATE INDEX sandboxes_listed_idx ON sandboxes (created_at DESC)
  WHERE NOT pooled AND state IN ('starting', 'running', 'paused', 'stopped', 'archived');
DROP INDEX sandboxes_metadata_idx;
CREATE INDEX sandboxes_metadata_idx ON sandboxes USING gin (metadata jsonb_path_ops)
  WHERE NOT pooled AND state IN ('starting', 'running', 'paused', 'stopped', 'archived');

-- The reaper's scan: users' sandboxes with something to do some day.
CREATE INDEX sandboxes_reaper_idx ON sandboxes (state)
  WHERE NOT pooled AND state IN ('running', 'paused', 'archived')
    AND (auto_stop_minutes > 0 OR auto_archive_days > 0 OR auto_delete_days > 0 OR reaper_op IS NOT NULL);

CREATE TABLE sandbox_events (
  id bigserial PRIMARY KEY,
  sandbox_id text NOT NULL,
  at timestamptz NOT NULL DEFAULT now(),
  kind text NOT NULL,
  from_state text NOT NULL DEFAULT '',
  to_state text NOT NULL DEFAULT '',
  actor text NOT NULL CHECK (actor IN ('api', 'reaper')),
  detail text NOT NULL DEFAULT ''
);
CREATE INDEX sandbox_events_sandbox_idx ON sandbox_events (sandbox_id, id);
