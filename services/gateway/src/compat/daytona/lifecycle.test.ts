import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { LifecycleClock, LifecycleSchema, SandboxState } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import {
  type DaytonaState,
  intervalsOf,
  MAX_AUTO_ARCHIVE_MIN,
  nativeLifecycleValues,
  normalizeAutoArchive,
  normalizeAutoDelete,
  observedState,
} from "./lifecycle.js";

/** Daytona minutes → native values → the record the scheduler keeps → Daytona minutes. */
function roundTrip(autoStop: number, autoArchive: number, autoDelete: number) {
  const v = nativeLifecycleValues({ autoStop, autoArchive, autoDelete });
  return intervalsOf(
    create(LifecycleSchema, {
      autoStopMinutes: v.autoStopMinutes ?? 0,
      autoArchiveDays: v.autoArchiveDays ?? 0,
      autoDeleteDays: v.autoDeleteDays ?? 0,
      deleteOnStop: v.deleteOnStop ?? false,
      clock: v.clock,
    }),
  );
}

describe("Daytona intervals on the native lifecycle (pure)", () => {
  test("each interval maps to native values and reads back the same minutes", () => {
    assert.deepEqual(nativeLifecycleValues({ autoStop: 15, autoArchive: 1440, autoDelete: -1 }), {
      clock: LifecycleClock.LAST_ACTIVITY,
      autoStopMinutes: 15,
      autoArchiveDays: 1,
      autoDeleteDays: 0,
      deleteOnStop: false,
    });
    assert.deepEqual(nativeLifecycleValues({ autoDelete: 0 }), {
      clock: LifecycleClock.LAST_ACTIVITY,
      autoDeleteDays: 0,
      deleteOnStop: true,
    });
    assert.deepEqual(nativeLifecycleValues({ autoStop: 0 }), {
      clock: LifecycleClock.LAST_ACTIVITY,
      autoStopMinutes: 0,
    });
    for (const [s, a, d] of [
      [15, 10_080, -1],
      [0, 60, 0],
      [1, 1, 5],
      [7, 43_200, 1439],
      [30, 120, 12_345],
    ] as const)
      assert.deepEqual(roundTrip(s, a, d), { autoStop: s, autoArchive: a, autoDelete: d }, `${s}/${a}/${d}`);
  });

  test("autoArchive 0 is the maximum and larger values are clamped; any negative autoDelete is -1", () => {
    assert.equal(normalizeAutoArchive(0), MAX_AUTO_ARCHIVE_MIN);
    assert.equal(normalizeAutoArchive(MAX_AUTO_ARCHIVE_MIN + 1), MAX_AUTO_ARCHIVE_MIN);
    assert.equal(normalizeAutoArchive(60), 60);
    assert.equal(normalizeAutoDelete(-7), -1);
    assert.equal(normalizeAutoDelete(0), 0);
  });

  test("values set through the native API read back rounded to minutes", () => {
    const l = create(LifecycleSchema, { autoStopMinutes: 42, autoArchiveDays: 0.5, autoDeleteDays: 1 / 3 });
    assert.deepEqual(intervalsOf(l), { autoStop: 42, autoArchive: 720, autoDelete: 480 });
    // deleteOnStop wins over any autoDeleteDays.
    assert.equal(
      intervalsOf(create(LifecycleSchema, { autoDeleteDays: 2, deleteOnStop: true })).autoDelete,
      0,
    );
  });

  test("settled states follow the native state; transitional ones and error do not", () => {
    const cases: [DaytonaState, SandboxState | "gone", DaytonaState | "gone" | undefined][] = [
      ["started", SandboxState.PAUSED, "stopped"],
      ["started", SandboxState.ARCHIVED, "archived"],
      ["stopped", SandboxState.ARCHIVED, "archived"],
      ["paused", SandboxState.ARCHIVED, "archived"],
      ["paused", SandboxState.PAUSED, undefined],
      ["stopped", SandboxState.PAUSED, undefined],
      ["archived", SandboxState.PAUSED, "stopped"],
      ["stopped", SandboxState.RUNNING, "started"],
      ["started", SandboxState.RUNNING, undefined],
      ["started", "gone", "gone"],
      ["archived", SandboxState.DELETED, "gone"],
      ["error", "gone", "gone"],
      ["destroying", "gone", undefined],
      ["stopping", SandboxState.PAUSED, undefined],
      ["starting", SandboxState.RUNNING, undefined],
      ["archiving", SandboxState.ARCHIVED, undefined],
      ["pausing", SandboxState.PAUSED, undefined],
      ["error", SandboxState.RUNNING, undefined],
      ["started", SandboxState.LOST, undefined],
      ["stopped", SandboxState.STARTING, undefined],
    ];
    for (const [from, native, to] of cases)
      assert.equal(observedState(from, native), to, `${from} with native ${String(native)}`);
  });
});
