import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { Db } from "@dnah/platform";
import {
  claimReaperOps,
  insertSandbox,
  releaseReaperOp,
  type SandboxRowState,
  upsertHost,
} from "../src/db/queries.js";
import { InvalidArgumentError } from "../src/domain/errors.js";
import {
  dueOp,
  type LifecycleSettings,
  PRESETS,
  type ReaperOp,
  resolveLifecycle,
} from "../src/domain/lifecycle.js";
import { migratedDb } from "./helpers.js";

const MIN = 60_000;
const DAY = 24 * 60 * MIN;

describe("lifecycle presets", () => {
  it("has the documented preset table", () => {
    assert.deepEqual(PRESETS.persistent, {
      type: "persistent",
      autoStopMinutes: 0,
      autoArchiveDays: 0,
      autoDeleteDays: 0,
    });
    assert.deepEqual(PRESETS.ephemeral, {
      type: "ephemeral",
      autoStopMinutes: 15,
      autoArchiveDays: 7,
      autoDeleteDays: 30,
    });
  });

  it("lets explicit values win over the preset, 0 included", () => {
    const cases: [Parameters<typeof resolveLifecycle>, Omit<LifecycleSettings, "type">][] = [
      [["ephemeral", {}], { autoStopMinutes: 15, autoArchiveDays: 7, autoDeleteDays: 30 }],
      [["ephemeral", { autoStopMinutes: 5 }], { autoStopMinutes: 5, autoArchiveDays: 7, autoDeleteDays: 30 }],
      [["ephemeral", { autoDeleteDays: 0 }], { autoStopMinutes: 15, autoArchiveDays: 7, autoDeleteDays: 0 }],
      [
        ["ephemeral", { autoStopMinutes: 0, autoArchiveDays: 0 }],
        { autoStopMinutes: 0, autoArchiveDays: 0, autoDeleteDays: 30 },
      ],
      [["persistent", {}], { autoStopMinutes: 0, autoArchiveDays: 0, autoDeleteDays: 0 }],
      [["persistent", { autoArchiveDays: 3 }], { autoStopMinutes: 0, autoArchiveDays: 3, autoDeleteDays: 0 }],
    ];
    for (const [args, want] of cases)
      assert.deepEqual(resolveLifecycle(...args), { type: args[0], ...want }, JSON.stringify(args));
    assert.throws(() => resolveLifecycle("ephemeral", { autoStopMinutes: -1 }), InvalidArgumentError);
    assert.throws(() => resolveLifecycle("ephemeral", { autoArchiveDays: 1.5 }), InvalidArgumentError);
    assert.throws(() => resolveLifecycle("persistent", { autoDeleteDays: 3651 }), InvalidArgumentError);
  });
});

/** [what, state, (stop min, archive d, delete d), idle ms, paused ms ago, archived ms ago, due] */
type DueCase = [
  string,
  SandboxRowState,
  [number, number, number],
  number,
  number | null,
  number | null,
  ReaperOp | undefined,
];

const NOW = Date.parse("2026-03-29T12:00:00Z"); // a DST change in Europe: days are 24 h here
const CASES: DueCase[] = [
  ["persistent, idle a year", "running", [0, 0, 0], 365 * DAY, null, null, undefined],
  ["idle just under auto-stop", "running", [15, 7, 30], 15 * MIN - 1, null, null, undefined],
  ["idle exactly auto-stop", "running", [15, 7, 30], 15 * MIN, null, null, "stop"],
  ["idle past auto-stop", "running", [15, 7, 30], 16 * MIN, null, null, "stop"],
  ["no auto-stop, archive set", "running", [0, 7, 30], 30 * DAY, null, null, undefined],
  ["paused just under auto-archive", "paused", [15, 7, 30], 8 * DAY, 7 * DAY - 1, null, undefined],
  ["paused exactly auto-archive", "paused", [15, 7, 30], 8 * DAY, 7 * DAY, null, "archive"],
  ["paused, no archive, under auto-delete", "paused", [15, 0, 30], 40 * DAY, 30 * DAY - 1, null, undefined],
  ["paused, no archive, past auto-delete", "paused", [15, 0, 30], 40 * DAY, 30 * DAY, null, "delete"],
  ["paused, nothing automatic", "paused", [0, 0, 0], 900 * DAY, 900 * DAY, null, undefined],
  ["paused, only auto-stop", "paused", [15, 0, 0], 900 * DAY, 900 * DAY, null, undefined],
  ["archived under auto-delete", "archived", [15, 7, 30], 60 * DAY, 40 * DAY, 30 * DAY - 1, undefined],
  ["archived past auto-delete", "archived", [15, 7, 30], 60 * DAY, 40 * DAY, 30 * DAY, "delete"],
  ["archived, no auto-delete", "archived", [15, 7, 0], 900 * DAY, 900 * DAY, 800 * DAY, undefined],
  ["starting", "starting", [15, 7, 30], 900 * DAY, null, null, undefined],
  ["deleting", "deleting", [15, 7, 30], 900 * DAY, 900 * DAY, null, undefined],
  ["error", "error", [15, 7, 30], 900 * DAY, null, null, undefined],
];

const at = (ago: number | null) => (ago === null ? null : new Date(NOW - ago));

function viewOf([, state, [s, a, d], idle, paused, archived]: DueCase) {
  return {
    type: "ephemeral" as const,
    autoStopMinutes: s,
    autoArchiveDays: a,
    autoDeleteDays: d,
    state,
    lastActivityAt: at(idle)!,
    pausedAt: at(paused),
    archivedAt: at(archived),
  };
}

describe("dueOp", () => {
  it("follows the due / not-due table", () => {
    for (const c of CASES) {
      const [what, , , , , , want] = c;
      const view = viewOf(c);
      assert.equal(dueOp(view, NOW), want, what);
    }
  });
});

describe("the reaper's claim SQL and dueOp agree (Postgres)", () => {
  let db: Db;
  let drop: () => Promise<void>;
  const ids = new Map<string, DueCase>();

  before(async () => {
    ({ db, drop } = await migratedDb("postgres"));
    await upsertHost(db, { hostId: "h1", vmmUrl: "http://127.0.0.1:1", runtime: "jail", capacity: 100 });
    let n = 0;
    for (const c of CASES) {
      const [, state, [s, a, d], idle, paused, archived] = c;
      const id = `due${n++}`;
      ids.set(id, c);
      await insertSandbox(db, {
        id,
        templateId: "base",
        hostId: "h1",
        pooled: false,
        metadata: {},
        envVars: {},
        cpuCount: 1,
        memoryMib: 256,
        runtime: "jail",
        lifecycle: { type: "ephemeral", autoStopMinutes: s, autoArchiveDays: a, autoDeleteDays: d },
      });
      await db.query(
        `UPDATE sandboxes SET state = $2, last_activity_at = $3, paused_at = $4, archived_at = $5,
           archive_snapshot_id = CASE WHEN $2 = 'archived' THEN 'snap_x' END,
           archive_uri = CASE WHEN $2 = 'archived' THEN 'file:///x/snap_x' END
         WHERE id = $1`,
        [id, state, at(idle), at(paused), at(archived)],
      );
    }
  });
  after(async () => {
    await drop?.();
  });

  it("claims exactly the rows dueOp names, once", async () => {
    const claimed = new Map<string, ReaperOp>();
    const opts = { leaseMs: 60_000, batch: 1000, hostDeadAfterMs: 15_000 };
    for (const op of ["stop", "archive", "delete"] as const) {
      for (const c of await claimReaperOps(db, op, new Date(NOW), opts)) {
        assert.equal(claimed.has(c.id), false, `${c.id} claimed twice`);
        claimed.set(c.id, op);
        assert.equal(c.reaperOp, op);
        assert.equal(c.claimAt.getTime(), NOW);
      }
    }
    for (const [id, [what, , , , , , want]] of ids) assert.equal(claimed.get(id), want, what);

    // Claimed rows are not claimed again while the lease lasts, and are once it ran out.
    const again = await claimReaperOps(db, "stop", new Date(NOW), opts);
    assert.deepEqual(again, []);
    const laterMs = NOW + 61_000;
    const later = await claimReaperOps(db, "stop", new Date(laterMs), opts);
    const dueLater = [...ids].filter(([, c]) => dueOp(viewOf(c), laterMs) === "stop").map(([id]) => id);
    assert.deepEqual(later.map((c) => c.id).sort(), dueLater.sort());
    assert.ok(dueLater.length > [...claimed.values()].filter((op) => op === "stop").length, "one became due");
    // A released claim leaves the row free.
    for (const c of later) await releaseReaperOp(db, c);
    const { rows } = await db.query("SELECT id FROM sandboxes WHERE reaper_op = 'stop'");
    assert.deepEqual(rows, []);
  });
});
