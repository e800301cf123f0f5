import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Db } from "@dnah/platform";
import {
  claimPooledSandbox,
  countPool,
  getSandbox,
  insertSandbox,
  listSandboxes,
  markRunning,
  upsertHost,
} from "../src/db/queries.js";
import { newSandboxId } from "../src/domain/ids.js";
import { PRESETS } from "../src/domain/lifecycle.js";
import { type DbKind, migratedDb } from "./helpers.js";

const DEAD_MS = 15_000;

async function addHost(db: Db, hostId: string): Promise<void> {
  await upsertHost(db, { hostId, vmmUrl: `http://${hostId}.test:7002`, runtime: "jail", capacity: 1000 });
}

async function addPooled(db: Db, hostId: string, n: number, templateId = "base"): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const row = await insertSandbox(db, {
      id: newSandboxId(),
      templateId,
      hostId,
      pooled: true,
      metadata: {},
      envVars: {},
      cpuCount: 1,
      memoryMib: 512,
      runtime: "jail",
    });
    await markRunning(db, row.id, "");
    ids.push(row.id);
  }
  return ids;
}

const claim = (db: Db, i: number) =>
  claimPooledSandbox(db, "base", {
    metadata: { n: String(i) },
    envVars: { I: String(i) },
    lifecycle: PRESETS.persistent,
    hostDeadAfterMs: DEAD_MS,
  });

for (const kind of ["postgres", "pglite"] as DbKind[]) {
  describe(`claimPooledSandbox (${kind})`, () => {
    let db: Db;
    let drop: () => Promise<void>;

    before(async () => {
      // Enough connections that the 20 claims really run at once on Postgres.
      ({ db, drop } = await migratedDb(kind, 25));
      await addHost(db, "h1");
      await addHost(db, "dead");
      await db.query("UPDATE hosts SET last_heartbeat = now() - interval '1 hour' WHERE id = 'dead'");
      await db.query("INSERT INTO templates (id, cpu_count, memory_mib) VALUES ('other', 2, 1024)");
    });
    after(() => drop());

    it("20 concurrent claims of 20 warm sandboxes get 20 distinct ones", async () => {
      const pooled = await addPooled(db, "h1", 20);
      const got = await Promise.all(Array.from({ length: 20 }, (_, i) => claim(db, i)));
      const ids = got.map((r) => r?.id);
      assert.ok(ids.every((id) => id !== undefined));
      assert.equal(new Set(ids).size, 20);
      assert.deepEqual([...ids].sort(), [...pooled].sort());
      // Each claimer's metadata landed on the sandbox it got, and it is now the user's.
      for (const [i, row] of got.entries()) {
        assert.deepEqual(row!.metadata, { n: String(i) });
        assert.deepEqual(row!.envVars, { I: String(i) });
        assert.equal(row!.pooled, false);
        assert.equal(row!.vmmUrl, "http://h1.test:7002");
        assert.deepEqual((await getSandbox(db, row!.id))?.metadata, { n: String(i) });
      }
      assert.equal(await countPool(db, "base", DEAD_MS), 0);
    });

    it("20 concurrent claims of 10 warm sandboxes: 10 distinct hits, 10 misses", async () => {
      const pooled = await addPooled(db, "h1", 10);
      const got = await Promise.all(Array.from({ length: 20 }, (_, i) => claim(db, i)));
      const hits = got.filter((r) => r !== undefined).map((r) => r.id);
      assert.equal(hits.length, 10);
      assert.equal(new Set(hits).size, 10);
      assert.deepEqual([...hits].sort(), [...pooled].sort());
      assert.equal(got.filter((r) => r === undefined).length, 10);
    });

    it("takes the oldest, and never one on a dead host, of another template, or still booting", async () => {
      await addPooled(db, "dead", 2);
      await addPooled(db, "h1", 1, "other");
      await insertSandbox(db, {
        id: newSandboxId(),
        templateId: "base",
        hostId: "h1",
        pooled: true,
        metadata: {},
        envVars: {},
        cpuCount: 1,
        memoryMib: 512,
        runtime: "jail",
      });
      assert.equal(await claim(db, 0), undefined);
      // Booting ones count towards the pool; those on dead hosts do not.
      assert.equal(await countPool(db, "base", DEAD_MS), 1);

      const [first, second] = await addPooled(db, "h1", 2);
      assert.equal((await claim(db, 1))?.id, first);
      assert.equal((await claim(db, 2))?.id, second);
    });

    it("pooled sandboxes are never listed", async () => {
      const [id] = await addPooled(db, "h1", 1);
      assert.equal(await getSandbox(db, id!), undefined);
      assert.ok(!(await listSandboxes(db, {})).some((r) => r.id === id));
    });
  });
}
