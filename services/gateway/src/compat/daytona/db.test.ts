import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type Db, migrate, openDb } from "@dnah/platform";
import pg from "pg";
import {
  claimDueSandboxes,
  insertDaytonaSandbox,
  listDaytonaSandboxes,
  type NewDaytonaRow,
  releaseLease,
} from "./db.js";
import { MAX_AUTO_ARCHIVE_MIN } from "./lifecycle.js";

const DATABASE_URL = process.env.DATABASE_URL ?? "postgres://postgres@127.0.0.1:5432/test";
const MIGRATIONS = fileURLToPath(new URL("../../db/migrations", import.meta.url));
const OWNER = "a".repeat(64);

function row(id: string, over: Partial<NewDaytonaRow> = {}): NewDaytonaRow {
  return {
    sandbox_id: id,
    owner_sha256: OWNER,
    name: id,
    snapshot: "base",
    os_user: "user",
    labels: {},
    env: {},
    cpu: 1,
    memory_gib: 1,
    disk_gib: 10,
    public: false,
    network_block_all: false,
    network_allow_list: null,
    target: "",
    state: "started",
    auto_stop_min: 15,
    auto_archive_min: 10_080,
    auto_delete_min: -1,
    preview_token: "t",
    ...over,
  };
}

describe("Daytona table: sweeper claims and list paging (real Postgres)", () => {
  const schema = `dt_db_${randomBytes(4).toString("hex")}`;
  let db: Db;

  before(async () => {
    db = await openDb({ url: DATABASE_URL, schema });
    await migrate(db, "gateway", MIGRATIONS);
  });
  after(async () => {
    await db?.close();
    const c = new pg.Client({ connectionString: DATABASE_URL });
    await c.connect();
    await c.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
    await c.end();
  });

  test("due rows are claimed once across concurrent sweepers; the lease holds until released", async () => {
    for (const id of ["s1", "s2", "s3"]) await insertDaytonaSandbox(db, row(id, { auto_stop_min: 1 }));
    await insertDaytonaSandbox(db, row("never", { auto_stop_min: 0 }));
    await insertDaytonaSandbox(db, row("eph", { state: "stopped", auto_delete_min: 0 }));
    await insertDaytonaSandbox(db, row("old", { state: "stopped", auto_archive_min: 60 }));
    const now = new Date();
    // Nothing is idle yet (the ephemeral stopped one is due at once).
    const first = await claimDueSandboxes(db, now, MAX_AUTO_ARCHIVE_MIN, 10, 60);
    assert.deepEqual(
      first.map((r) => [r.sandbox_id, r.action]),
      [["eph", "delete"]],
    );

    const later = new Date(now.getTime() + 2 * 60 * 60_000);
    const [a, b] = await Promise.all([
      claimDueSandboxes(db, later, MAX_AUTO_ARCHIVE_MIN, 10, 60),
      claimDueSandboxes(db, later, MAX_AUTO_ARCHIVE_MIN, 10, 60),
    ]);
    const ids = [...a!, ...b!].map((r) => r.sandbox_id).sort();
    // eph's first lease has run out by then: due again.
    assert.deepEqual(ids, ["eph", "old", "s1", "s2", "s3"], "each due row claimed exactly once");
    assert.equal([...a!, ...b!].find((r) => r.sandbox_id === "old")?.action, "archive");
    assert.ok([...a!, ...b!].filter((r) => r.sandbox_id.startsWith("s")).every((r) => r.action === "stop"));
    assert.deepEqual(await claimDueSandboxes(db, later, MAX_AUTO_ARCHIVE_MIN, 10, 60), [], "leased");
    await releaseLease(db, "s1");
    assert.deepEqual(
      (await claimDueSandboxes(db, later, MAX_AUTO_ARCHIVE_MIN, 10, 60)).map((r) => r.sandbox_id),
      ["s1"],
    );
    // The lease runs out on its own.
    const afterLease = new Date(later.getTime() + 61_000);
    assert.equal((await claimDueSandboxes(db, afterLease, MAX_AUTO_ARCHIVE_MIN, 10, 60)).length, 5);
  });

  test("keyset pages are disjoint and complete, with label AND filters", async () => {
    const owner = "b".repeat(64);
    for (let i = 0; i < 5; i++)
      await insertDaytonaSandbox(
        db,
        row(`p${i}`, { owner_sha256: owner, labels: { k: "v", i: String(i % 2) } }),
      );
    const seen: string[] = [];
    let after: { createdAt: Date; id: string } | undefined;
    for (;;) {
      const page = await listDaytonaSandboxes(db, {
        owner,
        ids: undefined,
        names: undefined,
        labels: { k: "v" },
        states: undefined,
        snapshots: undefined,
        isPublic: undefined,
        createdAfter: undefined,
        createdBefore: undefined,
        after,
        order: "desc",
        limit: 2,
      });
      if (page.length === 0) break;
      seen.push(...page.map((r) => r.sandbox_id));
      const last = page[page.length - 1]!;
      after = { createdAt: last.created_at, id: last.sandbox_id };
    }
    assert.deepEqual([...seen].sort(), ["p0", "p1", "p2", "p3", "p4"]);
    const odd = await listDaytonaSandboxes(db, {
      owner,
      ids: undefined,
      names: undefined,
      labels: { k: "v", i: "1" },
      states: ["started"],
      snapshots: undefined,
      isPublic: false,
      createdAfter: undefined,
      createdBefore: undefined,
      after: undefined,
      order: "asc",
      limit: 10,
    });
    assert.deepEqual(odd.map((r) => r.sandbox_id).sort(), ["p1", "p3"]);
  });
});
