-- Daytona snapshots (compat/daytona/snapshots): each is a dnah template (template_id) built
-- from the snapshot's Dockerfile, or an existing template named by imageName (build_id NULL).
-- The state is the build's; it is stored once the build has ended.
CREATE TABLE gateway_daytona_snapshots (
  id uuid PRIMARY KEY,
  owner_sha256 text NOT NULL,
  name text NOT NULL,
  template_id text NOT NULL,
  build_id text,
  image_name text,
  entrypoint jsonb,
  build_info jsonb,
  cpu integer NOT NULL,
  mem_gib integer NOT NULL,
  disk_gib integer NOT NULL,
  state text NOT NULL,
  error_reason text,
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz,
  UNIQUE (owner_sha256, name)
);

-- Context tars the SDK uploads through the gateway's S3-compatible store, by the SDK's own
-- (MD5) hash, per owner. A build joins the ones it names into one context tar.
CREATE TABLE gateway_daytona_contexts (
  owner_sha256 text NOT NULL,
  hash text NOT NULL,
  data bytea NOT NULL,
  etag text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (owner_sha256, hash)
);

-- Temporary S3 credentials handed out by GET /api/object-storage/push-access.
CREATE TABLE gateway_daytona_storage_keys (
  access_key text PRIMARY KEY,
  secret text NOT NULL,
  owner_sha256 text NOT NULL,
  expires_at timestamptz NOT NULL
);
CREATE INDEX gateway_daytona_storage_keys_expiry ON gateway_daytona_storage_keys (expires_at);

-- Multipart uploads in progress (contexts over 5 MiB): parts until completed or aborted.
CREATE TABLE gateway_daytona_upload_parts (
  upload_id text NOT NULL,
  owner_sha256 text NOT NULL,
  hash text NOT NULL,
  part_number integer NOT NULL,
  data bytea NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (upload_id, part_number)
);
