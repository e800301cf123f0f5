-- Pause / resume: a paused sandbox keeps its memory, disk and host slot; paused_at says since when.
ALTER TABLE sandboxes ADD COLUMN paused_at timestamptz;

-- A paused row always says when it was paused (a paused sandbox being deleted may keep it).
ALTER TABLE sandboxes ADD CONSTRAINT sandboxes_paused_at_check CHECK (state <> 'paused' OR paused_at IS NOT NULL);

-- Placement: paused sandboxes occupy their host's slot like running ones.
DROP INDEX sandboxes_host_idx;
CREATE INDEX sandboxes_host_idx ON sandboxes (host_id) WHERE state IN ('starting', 'running', 'paused', 'deleting');

-- List by state (e.g. every paused sandbox) without scanning the running ones.
CREATE INDEX sandboxes_state_idx ON sandboxes (state, created_at DESC)
  WHERE NOT pooled AND state IN ('starting', 'running', 'paused', 'stopped');
