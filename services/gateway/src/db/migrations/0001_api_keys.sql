-- API keys of the native API. Only the SHA-256 of a key is stored: a leaked table does not
-- leak usable keys, and a lost key cannot be recovered (make a new one).
CREATE TABLE IF NOT EXISTS gateway_api_keys (
  id          uuid PRIMARY KEY,
  name        text NOT NULL,
  key_sha256  text NOT NULL UNIQUE CHECK (key_sha256 ~ '^[0-9a-f]{64}$'),
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);
