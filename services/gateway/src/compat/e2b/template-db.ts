import type { Db } from "@dnah/platform";
import type { StepOrigin } from "./template-steps.js";

type Q = Pick<Db, "query">;

/** SQL of the E2B surface's template records (tables of migration 0008). */

export async function recordE2bBuild(
  db: Q,
  b: { buildId: string; templateId: string; owner: string; tags: readonly string[] },
): Promise<void> {
  await db.query(
    `INSERT INTO gateway_e2b_template_builds (build_id, template_id, owner, tags) VALUES ($1, $2, $3, $4)
     ON CONFLICT (build_id) DO NOTHING`,
    [b.buildId, b.templateId, b.owner, b.tags],
  );
}

/** The build's E2B record, if it was requested through E2B. */
export async function e2bBuild(
  db: Q,
  buildId: string,
): Promise<{ templateId: string; owner: string; tags: string[]; origins: StepOrigin[] } | undefined> {
  const { rows } = await db.query<{
    template_id: string;
    owner: string;
    tags: string[];
    step_origins: StepOrigin[];
  }>("SELECT template_id, owner, tags, step_origins FROM gateway_e2b_template_builds WHERE build_id = $1", [
    buildId,
  ]);
  const r = rows[0];
  return r && { templateId: r.template_id, owner: r.owner, tags: r.tags, origins: r.step_origins };
}

export async function setE2bStepOrigins(
  db: Q,
  buildId: string,
  origins: readonly StepOrigin[],
): Promise<void> {
  await db.query("UPDATE gateway_e2b_template_builds SET step_origins = $2 WHERE build_id = $1", [
    buildId,
    JSON.stringify(origins),
  ]);
}

/** Points each tag of the template at `buildId`. */
export async function assignE2bTags(
  db: Q,
  templateId: string,
  tags: readonly string[],
  buildId: string,
): Promise<void> {
  for (const tag of tags)
    await db.query(
      `INSERT INTO gateway_e2b_template_tags (template_id, tag, build_id) VALUES ($1, $2, $3)
       ON CONFLICT (template_id, tag) DO UPDATE SET build_id = EXCLUDED.build_id, created_at = now()`,
      [templateId, tag, buildId],
    );
}

export async function removeE2bTags(db: Q, templateId: string, tags: readonly string[]): Promise<void> {
  await db.query("DELETE FROM gateway_e2b_template_tags WHERE template_id = $1 AND tag = ANY($2::text[])", [
    templateId,
    tags,
  ]);
}

export async function e2bTags(
  db: Q,
  templateId: string,
): Promise<{ tag: string; buildId: string; createdAt: Date }[]> {
  const { rows } = await db.query<{ tag: string; build_id: string; created_at: Date }>(
    "SELECT tag, build_id, created_at FROM gateway_e2b_template_tags WHERE template_id = $1 ORDER BY tag",
    [templateId],
  );
  return rows.map((r) => ({ tag: r.tag, buildId: r.build_id, createdAt: r.created_at }));
}

/** Forgets a deleted template's tags and builds. */
export async function forgetE2bTemplate(db: Q, templateId: string): Promise<void> {
  await db.query("DELETE FROM gateway_e2b_template_tags WHERE template_id = $1", [templateId]);
  await db.query("DELETE FROM gateway_e2b_template_builds WHERE template_id = $1", [templateId]);
}
