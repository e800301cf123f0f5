-- Daytona compatibility. One row per sandbox created through the Daytona API: what the caller
-- asked for (name, labels, env, lifecycle intervals, public) and the Daytona state, which is
-- finer than the native one (stopped and archived are both "paused" underneath). Owned by the
-- API key that created it (by the key's SHA-256, as gateway_api_keys stores it). A deleted
-- sandbox's row is removed.
CREATE TABLE IF NOT EXISTS gateway_daytona_sandboxes (
  sandbox_id              text PRIMARY KEY,
  owner_sha256            text NOT NULL CHECK (owner_sha256 ~ '^[0-9a-f]{64}$'),
  name                    text NOT NULL,
  snapshot                text NOT NULL,
  os_user                 text NOT NULL,
  labels                  jsonb NOT NULL DEFAULT '{}'::jsonb,
  env                     jsonb NOT NULL DEFAULT '{}'::jsonb,
  cpu                     integer NOT NULL,
  memory_gib              integer NOT NULL,
  disk_gib                integer NOT NULL,
  public                  boolean NOT NULL DEFAULT false,
  network_block_all       boolean NOT NULL DEFAULT false,
  network_allow_list      text,
  target                  text NOT NULL DEFAULT '',
  state                   text NOT NULL,
  error_reason            text,
  auto_stop_min           integer NOT NULL,
  auto_archive_min        integer NOT NULL,
  auto_delete_min         integer NOT NULL,
  preview_token           text NOT NULL,
  -- Milliseconds, as JavaScript dates carry them: list cursors are (created_at, sandbox_id).
  created_at              timestamptz NOT NULL DEFAULT date_trunc('milliseconds', now()),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  last_activity_at        timestamptz NOT NULL DEFAULT now(),
  -- Lifecycle sweeper lease: a gateway that claims a row pushes this forward, so another
  -- gateway skips it until the lease runs out (or the action is done).
  sweep_lease_until       timestamptz NOT NULL DEFAULT '-infinity',
  UNIQUE (owner_sha256, name)
);

CREATE INDEX IF NOT EXISTS gateway_daytona_sandboxes_list
  ON gateway_daytona_sandboxes (owner_sha256, created_at DESC, sandbox_id DESC);
CREATE INDEX IF NOT EXISTS gateway_daytona_sandboxes_sweep
  ON gateway_daytona_sandboxes (state, last_activity_at);
