-- A client's own names for uploaded build contexts (E2B's filesHash, Daytona's context hash),
-- which are not the sha256 of the bytes: per owner (an API key id), so one key's name can never
-- point another key's builds at bytes it did not upload.
CREATE TABLE template_file_aliases (
  owner text NOT NULL,
  alias text NOT NULL CHECK (length(alias) BETWEEN 1 AND 128),
  sha256 text NOT NULL REFERENCES template_files (sha256) ON DELETE CASCADE,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (owner, alias)
);
