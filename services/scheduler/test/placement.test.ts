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

  it("fits vCPUs and memory when hosts report them; spread or pack", () => {
    const big = { ...host("big", 2, 10), vcpus: 8, usedVcpus: 2, memoryMib: 16_384, usedMemoryMib: 1_024 };
    const small = { ...host("small", 0, 10), vcpus: 2, usedVcpus: 0, memoryMib: 2_048, usedMemoryMib: 0 };
    // Spread: small is emptier (0 %) than big (25 % of its vCPUs).
    assert.equal(chooseHost([big, small], now, DEAD_MS, { cpuCount: 1, memoryMib: 512 }).hostId, "small");
    // Pack: the busiest that still fits.
    assert.equal(
      chooseHost([big, small], now, DEAD_MS, { cpuCount: 1, memoryMib: 512, policy: "pack" }).hostId,
      "big",
    );
    // Too much memory for small: only big fits.
    assert.equal(chooseHost([big, small], now, DEAD_MS, { memoryMib: 4_096 }).hostId, "big");
    assert.throws(
      () => chooseHost([big, small], now, DEAD_MS, { cpuCount: 7 }),
      (e) => e instanceof NoCapacityError && /all 2 live hosts are full/.test(e.message),
    );
    const { placed } = placeMany([small], 5, now, DEAD_MS, { cpuCount: 1 });
    assert.equal(placed.length, 2, "two vCPUs: two sandboxes of one vCPU");
    const lowDisk = { ...host("lowdisk", 0, 10), diskFreeMib: 100 };
    assert.equal(chooseHost([lowDisk, big], now, DEAD_MS).hostId, "big");
    assert.throws(
      () => chooseHost([lowDisk], now, DEAD_MS),
      (e) => e instanceof NoCapacityError && /\(1 low on free disk\)/.test(e.message),
    );
    assert.equal(chooseHost([lowDisk], now, DEAD_MS, { minFreeDiskMib: 64 }).hostId, "lowdisk");
  });

  it("honours labels, skips draining hosts and prefers hosts holding the template", () => {
    const gpu = { ...host("gpu", 5, 10), labels: { gpu: "a100", zone: "eu" } };
    const plain = { ...host("plain", 0, 10), labels: { zone: "eu" }, templates: ["base"] };
    const drained = { ...host("drained", 0, 10), draining: true, labels: { gpu: "a100", zone: "eu" } };
    assert.equal(chooseHost([gpu, plain, drained], now, DEAD_MS, { labels: { gpu: "a100" } }).hostId, "gpu");
    assert.equal(chooseHost([gpu, plain, drained], now, DEAD_MS, { labels: { zone: "eu" } }).hostId, "plain");
    assert.throws(
      () => chooseHost([plain, drained], now, DEAD_MS, { labels: { gpu: "a100" } }),
      (e) =>
        e instanceof NoCapacityError &&
        /no live host can take it \(1 without the labels asked for, 1 draining\)/.test(e.message),
    );
    // Locality first: gpu is busier but holds the template.
    const gpuWithTemplate = { ...gpu, templates: ["custom"] };
    assert.equal(chooseHost([gpuWithTemplate, plain], now, DEAD_MS, { templateId: "custom" }).hostId, "gpu");
    assert.equal(chooseHost([gpuWithTemplate, plain], now, DEAD_MS, { templateId: "base" }).hostId, "plain");
  });
});
