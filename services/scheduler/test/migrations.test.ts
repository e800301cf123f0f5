import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { describe, it } from "node:test";
import { migrate } from "@dnah/platform";
import { type DbKind, freshDb, MIGRATIONS_DIR } from "./helpers.js";

for (const kind of ["postgres", "pglite"] as DbKind[]) {
  describe(`migrations (${kind})`, () => {
    it("apply once, then are a no-op, and seed the base template", async () => {
      const { db, drop } = await freshDb(kind);
      try {
        const files = readdirSync(MIGRATIONS_DIR)
          .filter((f) => f.endsWith(".sql"))
          .sort();
        assert.ok(files.length >= 1);
        assert.deepEqual(await migrate(db, "scheduler", MIGRATIONS_DIR), files);
        assert.deepEqual(await migrate(db, "scheduler", MIGRATIONS_DIR), []);
        const { rows } = await db.query<{
          id: string;
          aliases: string[];
          cpu_count: number;
          memory_mib: number;
        }>("SELECT id, aliases, cpu_count, memory_mib FROM templates WHERE id = 'base'");
        assert.deepEqual(rows, [{ id: "base", aliases: ["base"], cpu_count: 1, memory_mib: 512 }]);
        const tables = await db.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM information_schema.tables
           WHERE table_schema = current_schema() AND table_name IN ('templates', 'hosts', 'sandboxes', 'snapshots')`,
        );
        assert.equal(tables.rows[0]!.n, 4);
      } finally {
        await drop();
      }
    });
  });
}
