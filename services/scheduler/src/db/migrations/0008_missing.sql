-- A live host's heartbeat that no longer lists a running or paused sandbox marks it missing;
-- missing again at the next heartbeat, it is 'lost' (its host restarted, or the VM died). Two
-- beats, not one: a heartbeat assembled just before a create, restore or move finished must
-- not lose a sandbox that is there.
ALTER TABLE sandboxes ADD COLUMN missing_since timestamptz;
