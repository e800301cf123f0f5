-- One lifecycle record for every API surface: fractional days (Daytona's intervals are
-- minutes), the clock the archive/delete rules count from, delete-on-stop (Daytona's
-- autoDeleteInterval 0) and a running sandbox's deadline (E2B's timeout / autoPause).
DROP INDEX sandboxes_reaper_idx;
ALTER TABLE sandboxes
  ALTER COLUMN auto_archive_days TYPE double precision,
  ALTER COLUMN auto_delete_days TYPE double precision,
  ADD COLUMN lifecycle_clock text NOT NULL DEFAULT 'state_change'
    CHECK (lifecycle_clock IN ('state_change', 'last_activity')),
  ADD COLUMN delete_on_stop boolean NOT NULL DEFAULT false,
  -- A running sandbox's deadline, whatever its activity; a pause clears it.
  ADD COLUMN expires_at timestamptz,
  ADD COLUMN on_expire text NOT NULL DEFAULT 'delete' CHECK (on_expire IN ('delete', 'stop'));

CREATE INDEX sandboxes_reaper_idx ON sandboxes (state)
  WHERE NOT pooled AND state IN ('running', 'paused', 'archived')
    AND (auto_stop_minutes > 0 OR auto_archive_days > 0 OR auto_delete_days > 0 OR delete_on_stop
      OR expires_at IS NOT NULL OR reaper_op IS NOT NULL);
