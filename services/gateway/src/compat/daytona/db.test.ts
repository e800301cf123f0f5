import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { type Db, migrate, openDb } from "@dnah/platform";
import pg from "pg";
import { insertDaytonaSandbox, listDaytonaSandboxes, type NewDaytonaRow, transition } from "./db.js";

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
    preview_token: "t",
    ...over,
  };
}

describe("Daytona table: state moves and list paging (real Postgres)", () => {
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

  test("a state move is a compare-and-set: one of two concurrent moves wins", async () => {
    await insertDaytonaSandbox(db, row("cas"));
    const [a, b] = await Promise.all([
      transition(db, "cas", ["started"], "stopped"),
      transition(db, "cas", ["started"], "archived"),
    ]);
    const won = [a, b].filter((t) => t !== undefined);
    assert.equal(won.length, 1, "exactly one move applies");
    assert.equal(won[0]?.old, "started");
    assert.equal(await transition(db, "cas", ["started"], "paused"), undefined, "from a state it left");
    const err = await transition(db, "cas", [won[0]!.row.state], "error", { errorReason: "why" });
    assert.equal(err?.row.error_reason, "why");
    assert.equal((await transition(db, "cas", ["error"], "started"))?.row.error_reason, null);
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
