-- Daytona's intervals are the native lifecycle now (the scheduler's auto_stop_minutes,
-- auto_archive_days, auto_delete_days with the last_activity clock and delete_on_stop,
-- enforced by its reaper; the idle clock is the scheduler's last_activity_at): the gateway
-- keeps only the Daytona view (name, labels, state, …). Intervals of Daytona sandboxes
-- created before the upgrade are not carried over (they keep the native defaults).
DROP INDEX IF EXISTS gateway_daytona_sandboxes_sweep;
ALTER TABLE gateway_daytona_sandboxes
  DROP COLUMN IF EXISTS auto_stop_min,
  DROP COLUMN IF EXISTS auto_archive_min,
  DROP COLUMN IF EXISTS auto_delete_min,
  DROP COLUMN IF EXISTS last_activity_at,
  DROP COLUMN IF EXISTS sweep_lease_until;
