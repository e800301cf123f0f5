-- E2B compatibility. One secret per installation, shared by every gateway: the seed of the
-- envd access tokens (token = base64url(HMAC-SHA256(secret, sandboxId)), stable for the life
-- of a sandbox). The row is created by the first gateway that starts (ON CONFLICT DO NOTHING).
CREATE TABLE IF NOT EXISTS gateway_e2b_secrets (
  name        text PRIMARY KEY,
  secret      bytea NOT NULL CHECK (octet_length(secret) = 32),
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- Sandboxes created or kept alive through the E2B API: when they should end (E2B `endAt`).
-- Enforcing it is the lifecycle's job; this table only remembers what the caller asked for.
CREATE TABLE IF NOT EXISTS gateway_e2b_sandboxes (
  sandbox_id  text PRIMARY KEY,
  end_at      timestamptz NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
