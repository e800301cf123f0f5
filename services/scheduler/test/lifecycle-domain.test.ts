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
/** The lifecycle fields the compatibility surfaces use, unset. */
const NONE = { clock: "state_change", deleteOnStop: false, expiresAt: null, onExpire: "delete" } as const;
const DAY = 24 * 60 * MIN;

describe("lifecycle presets", () => {
  it("has the documented preset table", () => {
    assert.deepEqual(PRESETS.persistent, {
      type: "persistent",
      autoStopMinutes: 0,
      autoArchiveDays: 0,
      autoDeleteDays: 0,
      ...NONE,
    });
    assert.deepEqual(PRESETS.ephemeral, {
      type: "ephemeral",
      autoStopMinutes: 15,
      autoArchiveDays: 7,
      autoDeleteDays: 30,
      ...NONE,
    });
  });

  it("lets explicit values win over the preset, 0 included", () => {
    const cases: [Parameters<typeof resolveLifecycle>, Partial<LifecycleSettings>][] = [
      [["ephemeral", {}], { autoStopMinutes: 15, autoArchiveDays: 7, autoDeleteDays: 30 }],
      [["ephemeral", { autoStopMinutes: 5 }], { autoStopMinutes: 5, autoArchiveDays: 7, autoDeleteDays: 30 }],
      [["ephemeral", { autoDeleteDays: 0 }], { autoStopMinutes: 15, autoArchiveDays: 7, autoDeleteDays: 0 }],
      [
        ["ephemeral", { autoStopMinutes: 0, autoArchiveDays: 0 }],
        { autoStopMinutes: 0, autoArchiveDays: 0, autoDeleteDays: 30 },
      ],
      [["persistent", {}], { autoStopMinutes: 0, autoArchiveDays: 0, autoDeleteDays: 0 }],
      [["persistent", { autoArchiveDays: 3 }], { autoStopMinutes: 0, autoArchiveDays: 3, autoDeleteDays: 0 }],
      // Daytona's minutes are fractions of days; E2B's timeout is a deadline from now.
      [
        ["persistent", { autoArchiveDays: 120 / 1440, clock: "last_activity", deleteOnStop: true }],
        {
          autoStopMinutes: 0,
          autoArchiveDays: 120 / 1440,
          autoDeleteDays: 0,
          clock: "last_activity",
          deleteOnStop: true,
        },
      ],
      [
        ["persistent", { expiresInSeconds: 300, onExpire: "stop" }, NOW],
        {
          autoStopMinutes: 0,
          autoArchiveDays: 0,
          autoDeleteDays: 0,
          expiresAt: new Date(NOW + 300_000),
          onExpire: "stop",
        },
      ],
    ];
    for (const [args, want] of cases)
      assert.deepEqual(resolveLifecycle(...args), { type: args[0], ...NONE, ...want }, JSON.stringify(args));
    assert.throws(() => resolveLifecycle("ephemeral", { autoStopMinutes: -1 }), InvalidArgumentError);
    assert.throws(() => resolveLifecycle("ephemeral", { autoStopMinutes: 1.5 }), InvalidArgumentError);
    assert.throws(() => resolveLifecycle("ephemeral", { autoArchiveDays: Number.NaN }), InvalidArgumentError);
    assert.throws(() => resolveLifecycle("ephemeral", { autoArchiveDays: -0.5 }), InvalidArgumentError);
    assert.throws(() => resolveLifecycle("ephemeral", { expiresInSeconds: -1 }), InvalidArgumentError);
    assert.throws(() => resolveLifecycle("persistent", { autoDeleteDays: 3651 }), InvalidArgumentError);
  });
});

/** The compatibility fields of a case; expiresIn is ms from NOW (negative: passed). */
interface Extras {
  clock?: "state_change" | "last_activity";
  deleteOnStop?: boolean;
  expiresIn?: number;
  onExpire?: "delete" | "stop";
}

/** [what, state, (stop min, archive d, delete d), idle ms, paused ms ago, archived ms ago, due, extras] */
type DueCase = [
  string,
  SandboxRowState,
  [number, number, number],
  number,
  number | null,
  number | null,
  ReaperOp | undefined,
  Extras?,
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
  // Fractions of days (Daytona's minutes).
  ["paused half a day, archive 0.5 d", "paused", [15, 0.5, 30], 2 * DAY, DAY / 2, null, "archive"],
  ["paused 2 h, archive 180 min", "paused", [15, 180 / 1440, 30], 2 * DAY, 2 * 60 * MIN, null, undefined],
  // E2B's timeout: a deadline whatever the activity; a pause clears it (tested in reaper.test.ts).
  ["busy, past its deadline", "running", [0, 0, 0], 0, null, null, "delete", { expiresIn: -1 }],
  ["busy, exactly its deadline", "running", [0, 0, 0], 0, null, null, "delete", { expiresIn: 0 }],
  ["busy, before its deadline", "running", [0, 0, 0], 0, null, null, undefined, { expiresIn: 1 }],
  [
    "past its deadline, autoPause",
    "running",
    [0, 0, 0],
    0,
    null,
    null,
    "stop",
    { expiresIn: -MIN, onExpire: "stop" },
  ],
  ["idle and past its deadline", "running", [15, 0, 0], DAY, null, null, "delete", { expiresIn: -MIN }],
  ["idle, deadline ahead", "running", [15, 0, 0], DAY, null, null, "stop", { expiresIn: DAY }],
  ["paused, a deadline left over", "paused", [0, 0, 0], DAY, DAY, null, undefined, { expiresIn: -DAY }],
  // Daytona: autoDeleteInterval 0 deletes on stop; both clocks count from the last activity.
  [
    "stopped, delete on stop",
    "paused",
    [15, 30, 0],
    20 * MIN,
    5 * MIN,
    null,
    "delete",
    { deleteOnStop: true },
  ],
  ["running, delete on stop", "running", [15, 30, 0], MIN, null, null, undefined, { deleteOnStop: true }],
  [
    "stopped, delete 60 min after activity",
    "paused",
    [15, 7, 60 / 1440],
    60 * MIN,
    45 * MIN,
    null,
    "delete",
    { clock: "last_activity" },
  ],
  [
    "stopped, archive 120 min after activity",
    "paused",
    [15, 120 / 1440, 0],
    120 * MIN,
    105 * MIN,
    null,
    "archive",
    { clock: "last_activity" },
  ],
  [
    "stopped, archive 120 min after activity, not yet",
    "paused",
    [15, 120 / 1440, 0],
    120 * MIN - 1,
    105 * MIN,
    null,
    undefined,
    { clock: "last_activity" },
  ],
  [
    "archived, delete 3 d after activity",
    "archived",
    [15, 1, 3],
    3 * DAY,
    2 * DAY,
    DAY,
    "delete",
    { clock: "last_activity" },
  ],
];

const at = (ago: number | null) => (ago === null ? null : new Date(NOW - ago));

function lifecycleOf([, , [s, a, d], , , , , x = {}]: DueCase): LifecycleSettings {
  return {
    type: "ephemeral",
    autoStopMinutes: s,
    autoArchiveDays: a,
    autoDeleteDays: d,
    clock: x.clock ?? "state_change",
    deleteOnStop: x.deleteOnStop ?? false,
    expiresAt: x.expiresIn === undefined ? null : new Date(NOW + x.expiresIn),
    onExpire: x.onExpire ?? "delete",
  };
}

function viewOf(c: DueCase) {
  const [, state, , idle, paused, archived] = c;
  return {
    ...lifecycleOf(c),
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
      const [, state, , idle, paused, archived] = c;
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
        lifecycle: lifecycleOf(c),
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
