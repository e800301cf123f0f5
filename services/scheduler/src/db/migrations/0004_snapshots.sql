-- Signed snapshots. The files live on the host that wrote them (<vmm state dir>/snapshots/<id>/);
-- this row is their record: the signed manifest fields (sandbox_id, id, manifest_sha256,
-- size_bytes, created_at_ms: exactly the values that were signed), the key id and signature
-- (NULL signature = unsigned: restore refuses it), and what a restore needs (template, cpu,
-- memory). state: creating (the host is writing it) -> ready -> deleting (its files are being
-- removed; a failed delete leaves it here, hidden, for DeleteSnapshot to retry).
CREATE TABLE snapshots (
  id text PRIMARY KEY CHECK (id ~ '^snap_[a-z0-9]{20}$'),
  -- Unique when set; several unnamed snapshots are fine (NULLs never collide).
  name text UNIQUE,
  -- The sandbox it was taken from; that sandbox may be deleted since.
  sandbox_id text NOT NULL,
  template_id text NOT NULL REFERENCES templates (id),
  host_id text NOT NULL REFERENCES hosts (id),
  runtime text NOT NULL DEFAULT '',
  memory boolean NOT NULL DEFAULT false,
  manifest_sha256 text NOT NULL DEFAULT '',
  size_bytes bigint NOT NULL DEFAULT 0 CHECK (size_bytes >= 0),
  created_at_ms bigint NOT NULL,
  kid text,
  signature bytea,
  files jsonb NOT NULL DEFAULT '[]',
  cpu_count integer NOT NULL,
  memory_mib integer NOT NULL,
  metadata jsonb NOT NULL DEFAULT '{}',
  state text NOT NULL CHECK (state IN ('creating', 'ready', 'deleting')),
  created_at timestamptz NOT NULL DEFAULT now()
);

-- List by sandbox, newest first.
CREATE INDEX snapshots_sandbox_idx ON snapshots (sandbox_id, created_at DESC) WHERE state = 'ready';

-- List all, newest first.
CREATE INDEX snapshots_listed_idx ON snapshots (created_at DESC) WHERE state = 'ready';

-- A sandbox restored or forked from a snapshot says which (the snapshot may be deleted since).
ALTER TABLE sandboxes ADD COLUMN source_snapshot_id text;
