import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type Client, Code } from "@connectrpc/connect";
import { createServiceClient, type Db, openDb } from "@dnah/platform";
import {
  ExpireAction,
  LifecycleClock,
  LifecycleType,
  SandboxState,
  SchedulerService,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { SnapshotService } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import type { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { createScheduler, type Scheduler } from "../src/index.js";
import {
  connectError,
  DATABASE_URL,
  logger,
  migratedDb,
  signedVmmClient,
  spawnService,
  stopService as stop,
  testConfig,
  waitFor,
  waitUntil,
} from "./helpers.js";

/**
 * The lifecycle reaper against real parts: Postgres (own schema, shared by two schedulers), a
 * real vmm running jail sandboxes and the real snapshot service, each from its own main.ts in
 * a child process. Time is a fake clock handed to both schedulers; their reaper loops are set
 * to an hour, so only the explicit runOnce calls act.
 */
const VMM_MAIN = fileURLToPath(new URL("../../vmm/src/main.ts", import.meta.url));
const SNAPSHOT_MAIN = fileURLToPath(new URL("../../snapshot/src/main.ts", import.meta.url));

const MIN = 60_000;
const DAY = 24 * 60 * MIN;
const LEASE_MS = 10 * MIN;

describe("scheduler lifecycle reaper", () => {
  const suffix = randomBytes(4).toString("hex");
  const stateDir = `/tmp/dnah-sched-reap-${suffix}`;
  const archiveDir = join(stateDir, "archive");
  const keysDir = mkdtempSync(join(tmpdir(), "dnah-sched-reap-keys-"));
  const hostId = `reap-${suffix}`;
  let db: Db;
  let dbB: Db;
  let schema: string;
  let drop: () => Promise<void>;
  let a: Scheduler;
  let b: Scheduler;
  let vmm: ChildProcess | undefined;
  let snapshotService: ChildProcess | undefined;
  let client: Client<typeof SchedulerService>;
  let vmmClient: Client<typeof VmmService>;
  const made: string[] = [];
  let nowMs = Date.now();
  const clock = { now: () => nowMs };
  const long = { timeoutMs: 180_000 };

  const create = async (
    over: { autoStopMinutes?: number; autoArchiveDays?: number; autoDeleteDays?: number } = {},
  ) => {
    const { sandbox } = await client.createSandbox(
      { templateId: "base", metadata: { suite: suffix }, type: LifecycleType.EPHEMERAL, ...over },
      long,
    );
    made.push(sandbox!.sandboxId);
    return sandbox!;
  };
  const get = async (sandboxId: string) => (await client.getSandbox({ sandboxId })).sandbox!;
  const row = async (id: string) =>
    (
      await db.query<{
        state: string;
        paused_at: Date | null;
        archive_snapshot_id: string | null;
        archive_uri: string | null;
        reaper_op: string | null;
      }>(
        "SELECT state, paused_at, archive_snapshot_id, archive_uri, reaper_op FROM sandboxes WHERE id = $1",
        [id],
      )
    ).rows[0]!;
  const events = async (sandboxId: string) =>
    (await client.listSandboxEvents({ sandboxId })).events.map((e) => ({
      kind: e.kind,
      actor: e.actor,
      detail: e.detail,
    }));
  const kinds = async (sandboxId: string, actor?: string) =>
    (await events(sandboxId)).filter((e) => actor === undefined || e.actor === actor).map((e) => e.kind);
  const vmOf = async (id: string) => (await vmmClient.listVms({})).vms.find((v) => v.sandboxId === id);
  const shareFile = (id: string) => join(stateDir, "sandboxes", id, "sharefs", "share", "kept.txt");
  const snapshotRows = async (sandboxId: string) =>
    (await db.query("SELECT id FROM snapshots WHERE sandbox_id = $1", [sandboxId])).rows.length;
  /** A sandbox's pause time by the database clock (what the rules count from). */
  const pausedAt = async (id: string) => (await row(id)).paused_at!.getTime();

  before(async () => {
    ({ db, drop, schema } = await migratedDb("postgres"));
    dbB = await openDb({ url: DATABASE_URL, schema, maxConnections: 5 });
    const snapshotPort = 20_000 + randomInt(0, 20_000);
    snapshotService = spawnService(SNAPSHOT_MAIN, {
      DNAH_SNAPSHOT_KEYS_DIR: keysDir,
      DNAH_SNAPSHOT_PORT: String(snapshotPort),
    });
    const snapshotUrl = `http://127.0.0.1:${snapshotPort}`;
    const keys = createServiceClient(SnapshotService, snapshotUrl);
    await waitUntil(
      "snapshot service",
      snapshotService,
      async () => (await keys.listKeys({})).keys.length > 0,
    );

    const cfg = testConfig({ snapshotUrl, reaperIntervalMs: 3_600_000, reaperLeaseMs: LEASE_MS });
    a = createScheduler(cfg, { db, logger, clock });
    b = createScheduler(cfg, { db: dbB, logger, clock });
    const schedulerUrl = await a.start();
    await b.start();
    client = createServiceClient(SchedulerService, schedulerUrl);
    const vmmPort = 20_000 + randomInt(0, 20_000);
    vmm = spawnService(VMM_MAIN, {
      DNAH_LOG_LEVEL: "warn",
      DNAH_VMM_PORT: String(vmmPort),
      DNAH_STATE_DIR: stateDir,
      DNAH_CGROUP_PARENT: `dnah-sched-reap-${suffix}`,
      DNAH_VMM_CAPACITY: "6",
      DNAH_HOST_ID: hostId,
      DNAH_SCHEDULER_URL: schedulerUrl,
      ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
    });
    vmmClient = signedVmmClient(db, `http://127.0.0.1:${vmmPort}`);
    await waitUntil(
      "vmm",
      vmm,
      async () =>
        (await vmmClient.listVms({}).then(() => true)) &&
        (await db.query("SELECT 1 FROM hosts WHERE id = $1", [hostId])).rows.length === 1,
    );
  });
  after(async () => {
    for (const sandboxId of made) await client?.deleteSandbox({ sandboxId }, long).catch(() => {});
    await stop(vmm);
    await b?.close();
    await a?.close();
    await dbB?.close();
    await stop(snapshotService);
    await drop?.();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(keysDir, { recursive: true, force: true });
  });

  it("CreateSandbox takes the preset and explicit values win", async () => {
    nowMs = Date.now();
    const eph = await create();
    const l = eph.lifecycle!;
    assert.deepEqual(
      [l.type, l.autoStopMinutes, l.autoArchiveDays, l.autoDeleteDays],
      [LifecycleType.EPHEMERAL, 15, 7, 30],
    );
    const explicit = await create({ autoStopMinutes: 5, autoDeleteDays: 0 });
    assert.equal(explicit.lifecycle?.autoStopMinutes, 5);
    assert.equal(explicit.lifecycle?.autoArchiveDays, 7);
    assert.equal(explicit.lifecycle?.autoDeleteDays, 0);
    const { sandbox: persistent } = await client.createSandbox({ templateId: "base" }, long);
    made.push(persistent!.sandboxId);
    assert.equal(persistent!.lifecycle?.type, LifecycleType.PERSISTENT);
    assert.equal(persistent!.lifecycle?.autoStopMinutes, 0);
    // A persistent sandbox is never touched, whatever the time.
    nowMs += 5 * 365 * DAY;
    for (const s of [eph, explicit]) await client.deleteSandbox({ sandboxId: s.sandboxId }, long);
    const pass = await a.reaper.runOnce();
    assert.deepEqual(pass, { stop: 0, archive: 0, delete: 0, failed: 0 });
    assert.equal((await get(persistent!.sandboxId)).state, SandboxState.RUNNING);
    await client.deleteSandbox({ sandboxId: persistent!.sandboxId }, long);
  });

  it("stops an idle sandbox (RecordActivity postpones it); ResumeSandbox keeps its files", async () => {
    nowMs = Date.now();
    const t0 = nowMs;
    const s = await create();
    const id = s.sandboxId;
    writeFileSync(shareFile(id), "kept through a stop\n");
    nowMs = t0 + 14 * MIN;
    assert.equal((await a.reaper.runOnce()).stop, 0);
    await client.recordActivity({ marks: [{ sandboxId: id, at: timestampFromMs(nowMs) }] });
    nowMs = t0 + 20 * MIN;
    assert.equal((await a.reaper.runOnce()).stop, 0, "activity at 14 min: idle for only 6");
    nowMs = t0 + 30 * MIN;
    assert.equal((await a.reaper.runOnce()).stop, 1);
    assert.equal((await get(id)).state, SandboxState.PAUSED);
    assert.equal((await vmOf(id))?.paused, true, "the host has it paused");
    const last = (await events(id)).at(-1)!;
    assert.equal(last.kind, "stopped");
    assert.equal(last.actor, "reaper");
    assert.match(last.detail, /idle 16 min \(auto-stop 15 min\)/);
    assert.equal((await row(id)).reaper_op, null, "the claim is released");

    const { sandbox } = await client.resumeSandbox({ sandboxId: id });
    assert.equal(sandbox!.state, SandboxState.RUNNING);
    assert.equal((await vmOf(id))?.paused, false);
    assert.equal(readFileSync(shareFile(id), "utf8"), "kept through a stop\n");
    assert.deepEqual(await kinds(id), ["created", "stopped", "resumed"]);
    await client.deleteSandbox({ sandboxId: id }, long);
  });

  it("E2B's deadline: deletes or stops (autoPause) whatever the activity; a pause clears it; UpdateLifecycle moves it", async () => {
    nowMs = Date.now();
    const t0 = nowMs;
    const mk = async (onExpire: ExpireAction) => {
      const { sandbox } = await client.createSandbox(
        { templateId: "base", expiresInSeconds: 300, onExpire },
        long,
      );
      made.push(sandbox!.sandboxId);
      return sandbox!;
    };
    const killed = await mk(ExpireAction.DELETE);
    const paused = await mk(ExpireAction.STOP);
    assert.equal(killed.lifecycle?.expiresAt?.seconds, BigInt(Math.floor((t0 + 300_000) / 1000)));
    assert.equal(paused.lifecycle?.onExpire, ExpireAction.STOP);
    // Busy all along: activity does not move a deadline.
    nowMs = t0 + 299_000;
    await client.recordActivity({
      marks: [killed, paused].map((x) => ({ sandboxId: x.sandboxId, at: timestampFromMs(nowMs) })),
    });
    assert.deepEqual(await a.reaper.runOnce(), { stop: 0, archive: 0, delete: 0, failed: 0 });
    // setTimeout: a new deadline from now.
    const { sandbox: moved } = await client.updateLifecycle({
      sandboxId: killed.sandboxId,
      expiresInSeconds: 60,
    });
    assert.equal(moved!.lifecycle?.expiresAt?.seconds, BigInt(Math.floor((nowMs + 60_000) / 1000)));
    nowMs = t0 + 301_000;
    assert.deepEqual(await a.reaper.runOnce(), { stop: 1, archive: 0, delete: 0, failed: 0 });
    const p = await get(paused.sandboxId);
    assert.equal(p.state, SandboxState.PAUSED);
    assert.equal(p.lifecycle?.expiresAt, undefined, "a pause clears the deadline");
    assert.match((await events(paused.sandboxId)).at(-1)!.detail, /^deadline .* passed$/);
    assert.equal((await get(killed.sandboxId)).state, SandboxState.RUNNING, "moved by UpdateLifecycle");
    nowMs += 60_000;
    assert.deepEqual(await a.reaper.runOnce(), { stop: 0, archive: 0, delete: 1, failed: 0 });
    await assert.rejects(get(killed.sandboxId), connectError(Code.NotFound));
    assert.equal(await vmOf(killed.sandboxId), undefined);
    // 0 removes a deadline.
    await client.resumeSandbox({ sandboxId: paused.sandboxId });
    await client.updateLifecycle({ sandboxId: paused.sandboxId, expiresInSeconds: 1 });
    const { sandbox: cleared } = await client.updateLifecycle({
      sandboxId: paused.sandboxId,
      expiresInSeconds: 0,
    });
    assert.equal(cleared!.lifecycle?.expiresAt, undefined);
    nowMs += DAY;
    assert.deepEqual(await a.reaper.runOnce(), { stop: 0, archive: 0, delete: 0, failed: 0 });
    await client.deleteSandbox({ sandboxId: paused.sandboxId }, long);
  });

  it("Daytona's rules: delete on stop, and archive/delete counted from the last activity", async () => {
    nowMs = Date.now();
    const t0 = nowMs;
    const daytona = {
      type: LifecycleType.PERSISTENT,
      clock: LifecycleClock.LAST_ACTIVITY,
      autoStopMinutes: 15,
    };
    const { sandbox: eph } = await client.createSandbox(
      { templateId: "base", ...daytona, autoArchiveDays: 30, deleteOnStop: true },
      long,
    );
    const { sandbox: kept } = await client.createSandbox(
      { templateId: "base", ...daytona, autoArchiveDays: 120 / 1440, autoDeleteDays: 240 / 1440 },
      long,
    );
    made.push(eph!.sandboxId, kept!.sandboxId);
    assert.equal(kept!.lifecycle?.autoArchiveDays, 120 / 1440);
    assert.equal(kept!.lifecycle?.clock, LifecycleClock.LAST_ACTIVITY);
    nowMs = t0 + 16 * MIN;
    assert.equal((await a.reaper.runOnce()).stop, 2);
    // Delete on stop: the next pass deletes it.
    assert.equal((await a.reaper.runOnce()).delete, 1);
    await assert.rejects(get(eph!.sandboxId), connectError(Code.NotFound));
    assert.equal((await events(eph!.sandboxId)).at(-1)!.detail, "delete on stop");
    // Archive 120 min after the last activity (not after the stop at 16 min).
    nowMs = t0 + 119 * MIN;
    assert.equal((await a.reaper.runOnce()).archive, 0);
    nowMs = t0 + 121 * MIN;
    assert.equal((await a.reaper.runOnce()).archive, 1);
    assert.equal((await get(kept!.sandboxId)).state, SandboxState.ARCHIVED);
    nowMs = t0 + 241 * MIN;
    assert.equal((await a.reaper.runOnce()).delete, 1);
    await assert.rejects(get(kept!.sandboxId), connectError(Code.NotFound));
  });

  it("archives a stopped sandbox; ResumeSandbox brings it back under the same id", async () => {
    nowMs = Date.now();
    const s = await create();
    const id = s.sandboxId;
    writeFileSync(shareFile(id), "kept through an archive\n");
    nowMs += 16 * MIN;
    assert.equal((await a.reaper.runOnce()).stop, 1);
    nowMs = (await pausedAt(id)) + 7 * DAY - MIN;
    assert.equal((await a.reaper.runOnce()).archive, 0, "not yet 7 days");
    nowMs += 2 * MIN;
    assert.equal((await a.reaper.runOnce()).archive, 1);

    const archived = await get(id);
    assert.equal(archived.state, SandboxState.ARCHIVED);
    assert.ok(archived.archivedAt);
    const r = await row(id);
    const snapId = r.archive_snapshot_id!;
    assert.equal(r.archive_uri, `file://${archiveDir}/${snapId}`);
    assert.ok(existsSync(join(archiveDir, snapId, "MANIFEST")));
    assert.equal(existsSync(join(stateDir, "snapshots", snapId)), false, "moved, not copied");
    assert.equal(await vmOf(id), undefined, "the VM is gone: the host slot is free");
    assert.equal(existsSync(join(stateDir, "sandboxes", id)), false);
    assert.deepEqual(await kinds(id, "reaper"), ["stopped", "archiving", "archived"]);

    const { sandbox } = await client.resumeSandbox({ sandboxId: id }, long);
    assert.equal(sandbox!.sandboxId, id);
    assert.equal(sandbox!.state, SandboxState.RUNNING);
    assert.equal(sandbox!.archivedAt, undefined);
    assert.equal((await vmOf(id))?.paused, false);
    assert.equal(readFileSync(shareFile(id), "utf8"), "kept through an archive\n");
    const ev = await events(id);
    const unarchiving = ev.find((e) => e.kind === "unarchiving")!;
    assert.match(unarchiving.detail, /^\d+ bytes from file:\/\//);
    assert.match(ev.at(-1)!.detail, /^\d+ ms$/);
    assert.equal(ev.at(-1)!.kind, "unarchived");
    // The snapshot and its archive are removed once the sandbox runs again.
    await waitFor(
      "archive removal",
      async () => !existsSync(join(archiveDir, snapId)) && (await snapshotRows(id)) === 0,
    );
    assert.equal(existsSync(join(stateDir, "snapshots", snapId)), false);
    assert.equal((await row(id)).archive_uri, null);
    await client.deleteSandbox({ sandboxId: id }, long);
  });

  it("ArchiveSandbox archives a paused sandbox on request (api event); running is refused; resume restores", async () => {
    nowMs = Date.now();
    const { sandbox: s } = await client.createSandbox({ templateId: "base" }, long);
    const id = s!.sandboxId;
    made.push(id);
    writeFileSync(shareFile(id), "archived on request\n");
    await assert.rejects(
      client.archiveSandbox({ sandboxId: id }, long),
      connectError(Code.FailedPrecondition, /pause it before archiving/),
    );
    await assert.rejects(
      client.archiveSandbox({ sandboxId: "nosuchsandbox" }, long),
      connectError(Code.NotFound),
    );
    await client.pauseSandbox({ sandboxId: id });
    const { sandbox: archived } = await client.archiveSandbox({ sandboxId: id }, long);
    assert.equal(archived!.state, SandboxState.ARCHIVED);
    assert.equal(await vmOf(id), undefined, "off its host");
    assert.equal((await row(id)).reaper_op, null, "the lease is released");
    // Archiving an archived sandbox is a no-op answer.
    assert.equal(
      (await client.archiveSandbox({ sandboxId: id }, long)).sandbox!.state,
      SandboxState.ARCHIVED,
    );
    const ev = (await events(id)).filter((e) => e.kind === "archiving" || e.kind === "archived");
    assert.deepEqual(
      ev.map((e) => `${e.kind}:${e.actor}`),
      ["archiving:api", "archived:api"],
    );
    const { sandbox } = await client.resumeSandbox({ sandboxId: id }, long);
    assert.equal(sandbox!.state, SandboxState.RUNNING);
    assert.equal(readFileSync(shareFile(id), "utf8"), "archived on request\n");
    await client.deleteSandbox({ sandboxId: id }, long);
  });

  it("two reapers at once act once on each transition, through to the delete of the archive", async () => {
    nowMs = Date.now();
    const s = await create({ autoArchiveDays: 1, autoDeleteDays: 2 });
    const id = s.sandboxId;
    const both = async () => {
      const [x, y] = await Promise.all([a.reaper.runOnce(), b.reaper.runOnce()]);
      return {
        stop: x.stop + y.stop,
        archive: x.archive + y.archive,
        delete: x.delete + y.delete,
        failed: x.failed + y.failed,
      };
    };
    nowMs += 16 * MIN;
    assert.deepEqual(await both(), { stop: 1, archive: 0, delete: 0, failed: 0 });
    nowMs = (await pausedAt(id)) + DAY + MIN;
    assert.deepEqual(await both(), { stop: 0, archive: 1, delete: 0, failed: 0 });
    const snapId = (await row(id)).archive_snapshot_id!;
    assert.ok(existsSync(join(archiveDir, snapId)));
    nowMs += 2 * DAY + MIN;
    assert.deepEqual(await both(), { stop: 0, archive: 0, delete: 1, failed: 0 });
    assert.deepEqual(await kinds(id, "reaper"), ["stopped", "archiving", "archived", "deleted"]);
    assert.equal((await row(id)).state, "deleted");
    await assert.rejects(client.getSandbox({ sandboxId: id }), connectError(Code.NotFound));
    assert.equal(existsSync(join(archiveDir, snapId)), false, "the archive is deleted with it");
    assert.equal(await snapshotRows(id), 0);
    assert.equal(await vmOf(id), undefined);
  });

  it("a reaper that died mid-archive is taken over once its lease ends and the archive completes", async () => {
    nowMs = Date.now();
    const s4 = await create();
    const s5 = await create();
    nowMs += 16 * MIN;
    assert.equal((await a.reaper.runOnce()).stop, 2);
    // s4: the dead reaper had taken the snapshot and moved it to the archive.
    const { snapshot: snap4 } = await client.snapshotSandbox({ sandboxId: s4.sandboxId }, long);
    const archived4 = await vmmClient.archiveSnapshot({ snapshotId: snap4!.snapshotId });
    // s5: it had only taken the snapshot, and its lease is still live at first.
    const { snapshot: snap5 } = await client.snapshotSandbox({ sandboxId: s5.sandboxId }, long);
    const due = Math.max(await pausedAt(s4.sandboxId), await pausedAt(s5.sandboxId)) + 7 * DAY + MIN;
    await db.query(
      `UPDATE sandboxes SET reaper_op = 'archive', reaper_op_at = $2, archive_snapshot_id = $3, archive_uri = $4
       WHERE id = $1`,
      [s4.sandboxId, new Date(due - LEASE_MS - MIN), snap4!.snapshotId, archived4.archiveUri],
    );
    await db.query(
      "UPDATE sandboxes SET reaper_op = 'archive', reaper_op_at = $2, archive_snapshot_id = $3 WHERE id = $1",
      [s5.sandboxId, new Date(due - MIN), snap5!.snapshotId],
    );
    nowMs = due;
    assert.equal((await b.reaper.runOnce()).archive, 1, "s5's lease is live: only s4 is taken over");
    assert.equal((await get(s4.sandboxId)).state, SandboxState.ARCHIVED);
    assert.equal((await row(s4.sandboxId)).archive_snapshot_id, snap4!.snapshotId, "its snapshot is reused");
    assert.equal(await snapshotRows(s4.sandboxId), 1, "no second snapshot");
    assert.equal((await get(s5.sandboxId)).state, SandboxState.PAUSED);

    nowMs = due + LEASE_MS;
    assert.equal((await b.reaper.runOnce()).archive, 1);
    const r5 = await row(s5.sandboxId);
    assert.equal(r5.state, "archived");
    assert.equal(r5.archive_snapshot_id, snap5!.snapshotId);
    assert.equal(r5.archive_uri, `file://${archiveDir}/${snap5!.snapshotId}`);
    assert.equal(r5.reaper_op, null);
    assert.equal(await snapshotRows(s5.sandboxId), 1);
    assert.ok(existsSync(join(archiveDir, snap5!.snapshotId)));
    assert.match((await events(s5.sandboxId)).find((e) => e.kind === "archiving")!.detail, /^resuming/);

    // Tampered archive: the resume is refused naming the file, nothing starts, it stays archived.
    const disk = join(archiveDir, snap4!.snapshotId, "disk.tar");
    const bytes = readFileSync(disk);
    bytes[bytes.length >> 1]! ^= 0xff;
    writeFileSync(disk, bytes);
    const vms = (await vmmClient.listVms({})).vms.length;
    await assert.rejects(
      client.resumeSandbox({ sandboxId: s4.sandboxId }, long),
      connectError(Code.FailedPrecondition, /disk\.tar: changed/),
    );
    assert.equal((await vmmClient.listVms({})).vms.length, vms);
    assert.equal(await vmOf(s4.sandboxId), undefined);
    assert.equal((await get(s4.sandboxId)).state, SandboxState.ARCHIVED);
    assert.equal((await events(s4.sandboxId)).at(-1)!.kind, "failed");

    // Deleting archived sandboxes through the API removes their archives too.
    for (const s of [s4, s5]) await client.deleteSandbox({ sandboxId: s.sandboxId }, long);
    assert.equal(existsSync(join(archiveDir, snap4!.snapshotId)), false);
    assert.equal(existsSync(join(archiveDir, snap5!.snapshotId)), false);
    assert.equal(await snapshotRows(s4.sandboxId), 0);
    assert.equal(await snapshotRows(s5.sandboxId), 0);
  });
});
