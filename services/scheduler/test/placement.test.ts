import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { NoCapacityError } from "../src/domain/errors.js";
import { chooseHost, type HostLoad, isLive, placeMany } from "../src/domain/placement.js";

const now = new Date("2025-01-01T00:00:00Z");
const DEAD_MS = 15_000;
const ago = (ms: number) => new Date(now.getTime() - ms);
const host = (hostId: string, running: number, capacity: number, silentMs = 0): HostLoad => ({
  hostId,
  running,
  capacity,
  lastHeartbeat: ago(silentMs),
});

describe("placement", () => {
  it("picks the least loaded live host", () => {
    const hosts = [host("a", 5, 10), host("b", 2, 10), host("c", 7, 10)];
    assert.equal(chooseHost(hosts, now, DEAD_MS).hostId, "b");
  });

  it("compares load relative to capacity", () => {
    // a is 50% full, b is 25% full even though it runs more.
    assert.equal(chooseHost([host("a", 2, 4), host("b", 10, 40)], now, DEAD_MS).hostId, "b");
  });

  it("breaks ties by free slots, then by host id", () => {
    assert.equal(chooseHost([host("a", 1, 2), host("b", 2, 4)], now, DEAD_MS).hostId, "b");
    assert.equal(chooseHost([host("b", 1, 4), host("a", 1, 4)], now, DEAD_MS).hostId, "a");
  });

  it("skips hosts that missed their heartbeats", () => {
    const hosts = [host("idle-but-dead", 0, 10, DEAD_MS), host("busy", 9, 10, DEAD_MS - 1)];
    assert.equal(chooseHost(hosts, now, DEAD_MS).hostId, "busy");
    assert.equal(isLive(host("x", 0, 1, DEAD_MS), now, DEAD_MS), false);
    assert.equal(isLive(host("x", 0, 1, DEAD_MS - 1), now, DEAD_MS), true);
  });

  it("skips full hosts and hosts with no capacity", () => {
    assert.equal(
      chooseHost([host("full", 4, 4), host("zero", 0, 0), host("ok", 3, 4)], now, DEAD_MS).hostId,
      "ok",
    );
  });

  it("throws NoCapacityError saying why", () => {
    assert.throws(
      () => chooseHost([], now, DEAD_MS),
      (e) => e instanceof NoCapacityError && /no host/.test(e.message),
    );
    assert.throws(
      () => chooseHost([host("a", 0, 4, 60_000)], now, DEAD_MS),
      (e) => e instanceof NoCapacityError && /no live host/.test(e.message),
    );
    assert.throws(
      () => chooseHost([host("a", 4, 4), host("b", 2, 2)], now, DEAD_MS),
      (e) => e instanceof NoCapacityError && /all 2 live hosts are full/.test(e.message),
    );
  });

  it("places many one after another and stops at capacity", () => {
    const hosts = [host("a", 0, 2), host("b", 1, 2)];
    const { placed, shortfall } = placeMany(hosts, 5, now, DEAD_MS);
    assert.deepEqual(
      placed.map((h) => h.hostId),
      ["a", "a", "b"],
    );
    assert.ok(shortfall instanceof NoCapacityError);
    // The input is not modified.
    assert.deepEqual(
      hosts.map((h) => h.running),
      [0, 1],
    );
    assert.equal(placeMany(hosts, 2, now, DEAD_MS).shortfall, undefined);
  });
});
