-- Templates: what a sandbox boots from. pool_target is the warm pool size kept per template.
CREATE TABLE templates (
  id text PRIMARY KEY,
  aliases text[] NOT NULL DEFAULT '{}',
  cpu_count integer NOT NULL CHECK (cpu_count > 0),
  memory_mib integer NOT NULL CHECK (memory_mib > 0),
  pool_target integer NOT NULL DEFAULT 0 CHECK (pool_target >= 0),
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX templates_aliases_idx ON templates USING gin (aliases);

INSERT INTO templates (id, aliases, cpu_count, memory_mib) VALUES ('base', '{base}', 1, 512);

-- Hosts: one row per vmm. running is what the host last reported in its heartbeat.
CREATE TABLE hosts (
  id text PRIMARY KEY,
  vmm_url text NOT NULL,
  runtime text NOT NULL,
  capacity integer NOT NULL CHECK (capacity >= 0),
  running integer NOT NULL DEFAULT 0 CHECK (running >= 0),
  last_heartbeat timestamptz NOT NULL DEFAULT now(),
  registered_at timestamptz NOT NULL DEFAULT now()
);

-- Sandboxes. state: starting -> running -> (paused | stopped) -> deleting -> deleted, or error
-- when the boot failed. pooled rows are warm spares nobody owns yet: never listed, never
-- returned, claimed by flipping pooled to false.
CREATE TABLE sandboxes (
  id text PRIMARY KEY CHECK (id ~ '^[a-z0-9]+$'),
  template_id text NOT NULL REFERENCES templates (id),
  host_id text NOT NULL REFERENCES hosts (id),
  state text NOT NULL CHECK (state IN ('starting', 'running', 'paused', 'stopped', 'deleting', 'deleted', 'error')),
  pooled boolean NOT NULL DEFAULT false,
  metadata jsonb NOT NULL DEFAULT '{}',
  env_vars jsonb NOT NULL DEFAULT '{}',
  cpu_count integer NOT NULL,
  memory_mib integer NOT NULL,
  runtime text NOT NULL,
  error text,
  created_at timestamptz NOT NULL DEFAULT now(),
  claimed_at timestamptz,
  deleted_at timestamptz
);

-- The warm-pool claim: the oldest running pooled sandbox of a template.
CREATE INDEX sandboxes_pool_idx ON sandboxes (template_id, created_at) WHERE pooled AND state = 'running';

-- Pool accounting: pooled sandboxes still booting.
CREATE INDEX sandboxes_starting_idx ON sandboxes (template_id) WHERE state = 'starting';

-- Get and List: sandboxes handed to users, newest first, filtered by metadata containment.
CREATE INDEX sandboxes_listed_idx ON sandboxes (created_at DESC)
  WHERE NOT pooled AND state IN ('starting', 'running', 'paused', 'stopped');

CREATE INDEX sandboxes_metadata_idx ON sandboxes USING gin (metadata jsonb_path_ops)
  WHERE NOT pooled AND state IN ('starting', 'running', 'paused', 'stopped');

-- Placement: what each host runs or is booting.
CREATE INDEX sandboxes_host_idx ON sandboxes (host_id) WHERE state IN ('starting', 'running', 'deleting');
