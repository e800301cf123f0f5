-- Templates built through E2B's builder: what the E2B surface adds to the scheduler's
-- templates. Per build: the tags it was requested with and where each dnah step came from (a
-- failure's `reason.step`). Tags name a template's builds (`name:tag`); a template is
-- identified by its name, which is unique in the installation.
CREATE TABLE gateway_e2b_template_builds (
  build_id text PRIMARY KEY,
  template_id text NOT NULL,
  owner text NOT NULL,
  tags text[] NOT NULL,
  -- One entry per dnah step: the E2B step number (1-based) or "base".
  step_origins jsonb NOT NULL DEFAULT '[]',
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX gateway_e2b_template_builds_template_idx ON gateway_e2b_template_builds (template_id);

CREATE TABLE gateway_e2b_template_tags (
  template_id text NOT NULL,
  tag text NOT NULL,
  build_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (template_id, tag)
);
