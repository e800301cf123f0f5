-- User templates: built from a base template and steps (BuildTemplate) on a host, owned by the
-- API key that built them, private unless public. Every template so far was installed, not
-- built: built-in and public. A template without an owner ('') belongs to the installation and
-- is visible to every key.
ALTER TABLE templates
  ADD COLUMN owner text NOT NULL DEFAULT '',
  ADD COLUMN public boolean NOT NULL DEFAULT false,
  ADD COLUMN builtin boolean NOT NULL DEFAULT false,
  ADD COLUMN base_template_id text,
  -- What its ready build was built from: {steps, start} (the vmm's TemplateStep/TemplateStart).
  ADD COLUMN spec jsonb NOT NULL DEFAULT '{}',
  -- ready: sandboxes can start from it; building: no good build yet; error: none succeeded.
  ADD COLUMN status text NOT NULL DEFAULT 'ready' CHECK (status IN ('building', 'ready', 'error')),
  ADD COLUMN latest_build_id text,
  ADD COLUMN ready_build_id text,
  ADD COLUMN updated_at timestamptz NOT NULL DEFAULT now();

UPDATE templates SET builtin = true, public = true;

-- A deleted template leaves its sandboxes and snapshots running and restorable: they keep its
-- id, not a reference to its row.
ALTER TABLE sandboxes DROP CONSTRAINT IF EXISTS sandboxes_template_id_fkey;
ALTER TABLE snapshots DROP CONSTRAINT IF EXISTS snapshots_template_id_fkey;

CREATE INDEX templates_owner_idx ON templates (owner);

-- One build of a template on one host. heartbeat_at is touched by the scheduler that runs it
-- (its vmm stream); a build whose heartbeat stopped lost that scheduler and is marked error.
-- 'waiting': reserved (E2B's builder takes a build id first), its steps and host to come.
CREATE TABLE template_builds (
  id text PRIMARY KEY CHECK (id ~ '^bld_[a-z0-9]{20}$'),
  template_id text NOT NULL REFERENCES templates (id) ON DELETE CASCADE,
  status text NOT NULL CHECK (status IN ('waiting', 'building', 'ready', 'error', 'cancelled')),
  reason text NOT NULL DEFAULT '',
  -- '' while waiting.
  host_id text NOT NULL,
  -- The request: base, steps, start, cpu, memory, force (applied to the template once ready).
  spec jsonb NOT NULL,
  -- The vmm's TemplateBuildResult, once ready.
  result jsonb,
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  created_at timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz
);

CREATE INDEX template_builds_template_idx ON template_builds (template_id, created_at DESC);
CREATE INDEX template_builds_building_idx ON template_builds (heartbeat_at) WHERE status = 'building';
CREATE INDEX template_builds_waiting_idx ON template_builds (created_at) WHERE status = 'waiting';

-- A build's log, one row per line, bounded per build by the scheduler.
CREATE TABLE template_build_logs (
  build_id text NOT NULL REFERENCES template_builds (id) ON DELETE CASCADE,
  seq integer NOT NULL,
  at timestamptz NOT NULL,
  level text NOT NULL,
  message text NOT NULL,
  PRIMARY KEY (build_id, seq)
);

-- Build contexts: tars uploaded once, named by the sha256 of their bytes.
CREATE TABLE template_files (
  sha256 text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  data bytea NOT NULL,
  size bigint NOT NULL CHECK (size >= 0),
  created_at timestamptz NOT NULL DEFAULT now()
);
