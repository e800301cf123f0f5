-- Many hosts: what each offers (vCPUs, memory, free disk; 0 = not reported), its placement
-- labels, the templates it holds ready, and maintenance (draining: nothing new is placed).
ALTER TABLE hosts
  ADD COLUMN vcpus integer NOT NULL DEFAULT 0 CHECK (vcpus >= 0),
  ADD COLUMN memory_mib bigint NOT NULL DEFAULT 0 CHECK (memory_mib >= 0),
  ADD COLUMN disk_free_mib bigint NOT NULL DEFAULT 0 CHECK (disk_free_mib >= 0),
  ADD COLUMN labels jsonb NOT NULL DEFAULT '{}'::jsonb,
  ADD COLUMN templates text[] NOT NULL DEFAULT '{}',
  ADD COLUMN draining boolean NOT NULL DEFAULT false;

-- 'lost': its host stopped answering. Never silently "running": it is running again only when
-- its host reports it back.
ALTER TABLE sandboxes DROP CONSTRAINT sandboxes_state_check;
ALTER TABLE sandboxes ADD CONSTRAINT sandboxes_state_check
  CHECK (state IN ('starting', 'running', 'paused', 'stopped', 'archived', 'lost', 'deleting', 'deleted', 'error'));
ALTER TABLE sandboxes ADD COLUMN lost_from text CHECK (lost_from IN ('starting', 'running', 'paused'));

DROP INDEX sandboxes_listed_idx;
CREATE INDEX sandboxes_listed_idx ON sandboxes (created_at DESC)
  WHERE NOT pooled AND state IN ('starting', 'running', 'paused', 'stopped', 'archived', 'lost');
DROP INDEX sandboxes_metadata_idx;
CREATE INDEX sandboxes_metadata_idx ON sandboxes USING gin (metadata jsonb_path_ops)
  WHERE NOT pooled AND state IN ('starting', 'running', 'paused', 'stopped', 'archived', 'lost');
