import assert from "node:assert/strict";
import type { ChildProcess } from "node:child_process";
import { createHash, createPublicKey, randomBytes, randomInt, verify } from "node:crypto";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { type Client, Code } from "@connectrpc/connect";
import { createServiceClient, type Db } from "@dnah/platform";
import {
  SandboxState,
  SchedulerService,
  type SnapshotRecord,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { SnapshotService } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import type { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { createScheduler, type Scheduler } from "../src/index.js";
import {
  connectError,
  logger,
  migratedDb,
  signedVmmClient,
  spawnService,
  stopService as stop,
  testConfig,
  waitUntil,
} from "./helpers.js";

/**
 * Snapshots, restore and fork through the scheduler against real parts: Postgres (own
 * schema), a real vmm running jail sandboxes and the real snapshot service, each from its own
 * main.ts in a child process and reached only through its Connect API, as in production.
 */
const VMM_MAIN = fileURLToPath(new URL("../../vmm/src/main.ts", import.meta.url));
const SNAPSHOT_MAIN = fileURLToPath(new URL("../../snapshot/src/main.ts", import.meta.url));

/** The signing bytes as common.md and services/snapshot/README.md define them, built here independently. */
function signingBytes(s: SnapshotRecord, createdAtMs: bigint): Buffer {
  const str = (v: string) => {
    const b = Buffer.from(v, "utf8");
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  };
  const u64 = (v: bigint) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(v);
    return b;
  };
  return Buffer.concat([
    Buffer.from("dnah.snapshot.manifest.v1\0", "utf8"),
    str(s.sandboxId),
    str(s.snapshotId),
    str(s.manifestSha256),
    u64(s.sizeBytes),
    u64(createdAtMs),
    str(s.kid),
  ]);
}

function ed25519PublicKey(raw: Uint8Array) {
  return createPublicKey({
    key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(raw).toString("base64url") },
    format: "jwk",
  });
}

describe("scheduler snapshots / restore / fork", () => {
  const suffix = randomBytes(4).toString("hex");
  const stateDir = `/tmp/dnah-sched-snap-${suffix}`;
  const keysDir = mkdtempSync(join(tmpdir(), "dnah-sched-keys-"));
  const hostId = `snap-${suffix}`;
  let db: Db;
  let drop: () => Promise<void>;
  let scheduler: Scheduler;
  let vmm: ChildProcess | undefined;
  let snapshotService: ChildProcess | undefined;
  let client: Client<typeof SchedulerService>;
  let vmmClient: Client<typeof VmmService>;
  let keys: Client<typeof SnapshotService>;
  const made: string[] = [];

  let source = "";
  let first: SnapshotRecord;

  const long = { timeoutMs: 180_000 };
  const folder = (snapshotId: string) => join(stateDir, "snapshots", snapshotId);
  const sandboxCount = async () =>
    (await db.query<{ n: number }>("SELECT count(*)::int AS n FROM sandboxes")).rows[0]!.n;
  const vmCount = async () => (await vmmClient.listVms({})).vms.length;
  const restore = async (snapshotId: string) => {
    const { sandbox } = await client.restoreSnapshot({ snapshotId, metadata: { suite: suffix } }, long);
    made.push(sandbox!.sandboxId);
    return sandbox!;
  };
  const remove = async (sandboxId: string) => {
    await client.deleteSandbox({ sandboxId }, { timeoutMs: 60_000 });
  };
  /** A refused restore starts nothing: no new row, no new VM on the host. */
  const refused = async (snapshotId: string, message: RegExp) => {
    const rows = await sandboxCount();
    const vms = await vmCount();
    await assert.rejects(
      client.restoreSnapshot({ snapshotId }, long),
      connectError(Code.FailedPrecondition, message),
    );
    assert.equal(await sandboxCount(), rows);
    assert.equal(await vmCount(), vms);
  };

  before(async () => {
    ({ db, drop } = await migratedDb("postgres"));
    const snapshotPort = 20_000 + randomInt(0, 20_000);
    snapshotService = spawnService(SNAPSHOT_MAIN, {
      DNAH_SNAPSHOT_KEYS_DIR: keysDir,
      DNAH_SNAPSHOT_PORT: String(snapshotPort),
    });
    const snapshotUrl = `http://127.0.0.1:${snapshotPort}`;
    keys = createServiceClient(SnapshotService, snapshotUrl);
    await waitUntil(
      "snapshot service",
      snapshotService,
      async () => (await keys.listKeys({})).keys.length > 0,
    );

    scheduler = createScheduler(testConfig({ snapshotUrl }), { db, logger });
    const schedulerUrl = await scheduler.start();
    client = createServiceClient(SchedulerService, schedulerUrl);
    const vmmPort = 20_000 + randomInt(0, 20_000);
    vmm = spawnService(VMM_MAIN, {
      DNAH_LOG_LEVEL: "warn",
      DNAH_VMM_PORT: String(vmmPort),
      DNAH_STATE_DIR: stateDir,
      DNAH_CGROUP_PARENT: `dnah-sched-snap-${suffix}`,
      DNAH_VMM_CAPACITY: "4",
      DNAH_HOST_ID: hostId,
      DNAH_SCHEDULER_URL: schedulerUrl,
      ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
    });
    vmmClient = signedVmmClient(db, `http://127.0.0.1:${vmmPort}`);
    // Ready once it answers and has registered with the scheduler.
    await waitUntil(
      "vmm",
      vmm,
      async () =>
        (await vmmClient.listVms({}).then(() => true)) &&
        (await db.query("SELECT 1 FROM hosts WHERE id = $1", [hostId])).rows.length === 1,
    );
    const { sandbox } = await client.createSandbox({ templateId: "base", metadata: { suite: suffix } }, long);
    source = sandbox!.sandboxId;
    made.push(source);
  });
  after(async () => {
    for (const sandboxId of made) await client?.deleteSandbox({ sandboxId }).catch(() => {});
    await stop(vmm);
    await scheduler?.close();
    await stop(snapshotService);
    await drop?.();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(keysDir, { recursive: true, force: true });
  });

  it("refuses unknown sandboxes, bad names and bad counts", async () => {
    await assert.rejects(
      client.snapshotSandbox({ sandboxId: "nosuchsandbox" }),
      connectError(Code.NotFound, /sandbox 'nosuchsandbox' not found/),
    );
    await assert.rejects(client.snapshotSandbox({ sandboxId: "" }), connectError(Code.InvalidArgument));
    await assert.rejects(
      client.snapshotSandbox({ sandboxId: source, name: "snap_abcdefghij0123456789" }),
      connectError(Code.InvalidArgument, /looks like a snapshot id/),
    );
    await assert.rejects(
      client.snapshotSandbox({ sandboxId: source, name: "-bad name" }),
      connectError(Code.InvalidArgument),
    );
    await assert.rejects(
      client.forkSandbox({ sandboxId: source, count: 17 }),
      connectError(Code.InvalidArgument, /count must be between 1 and 16, got 17/),
    );
    await assert.rejects(client.forkSandbox({ sandboxId: "nosuchsandbox" }), connectError(Code.NotFound));
    await assert.rejects(
      client.restoreSnapshot({ snapshotId: "snap_nosuchsnapshot00000" }),
      connectError(Code.NotFound, /snapshot 'snap_nosuchsnapshot00000' not found/),
    );
    await assert.rejects(client.getSnapshot({ snapshotId: "nosuch" }), connectError(Code.NotFound));
    await assert.rejects(client.deleteSnapshot({ snapshotId: "nosuch" }), connectError(Code.NotFound));
    const { rows } = await db.query("SELECT id FROM snapshots");
    assert.deepEqual(rows, []);
  });

  it("takes a signed snapshot whose signature covers exactly what is stored", async () => {
    const { snapshot } = await client.snapshotSandbox(
      { sandboxId: source, name: `first-${suffix}`, metadata: { purpose: "test" } },
      long,
    );
    first = snapshot!;
    assert.match(first.snapshotId, /^snap_[a-z0-9]{20}$/);
    assert.equal(first.sandboxId, source);
    assert.equal(first.templateId, "base");
    assert.equal(first.hostId, hostId);
    assert.equal(first.runtime, "jail");
    assert.equal(first.memory, false, "the jail runtime keeps disk and share, not memory");
    assert.equal(first.name, `first-${suffix}`);
    assert.deepEqual(first.metadata, { purpose: "test" });
    assert.equal(first.cpuCount, 1);
    assert.equal(first.memoryMib, 512);
    assert.equal(first.signature.length, 64);
    assert.match(first.kid, /^[0-9a-f]{16}$/);
    const names = first.files.map((f) => f.name);
    for (const n of ["share.tar", "disk.tar", "jail.json"]) assert.ok(names.includes(n), `${n} in ${names}`);
    assert.equal(
      first.sizeBytes,
      first.files.reduce((sum, f) => sum + f.sizeBytes, 0n),
    );

    // The record is the database row, ready, stamped with the millisecond value that was signed.
    const row = (
      await db.query<{ state: string; created_at_ms: string; signature: Buffer; kid: string }>(
        "SELECT state, created_at_ms::text, signature, kid FROM snapshots WHERE id = $1",
        [first.snapshotId],
      )
    ).rows[0]!;
    assert.equal(row.state, "ready");
    assert.equal(row.kid, first.kid);
    assert.deepEqual(new Uint8Array(row.signature), first.signature);
    const createdAtMs = BigInt(row.created_at_ms);
    const t = first.createdAt!;
    assert.equal(t.seconds * 1000n + BigInt(t.nanos / 1_000_000), createdAtMs);

    // The host's MANIFEST is the listing the record shows, and its digest is the signed one.
    const manifest = readFileSync(join(folder(first.snapshotId), "MANIFEST"));
    const listing = [...first.files]
      .sort((a, b) => Buffer.compare(Buffer.from(a.name), Buffer.from(b.name)))
      .map((f) => `${f.sha256} ${f.sizeBytes} ${f.name}\n`)
      .join("");
    assert.equal(manifest.toString("utf8"), `dnah.snapshot.files.v1\n${listing}`);
    assert.equal(createHash("sha256").update(manifest).digest("hex"), first.manifestSha256);
    for (const f of first.files) {
      const bytes = readFileSync(join(folder(first.snapshotId), f.name));
      assert.equal(BigInt(bytes.length), f.sizeBytes, f.name);
      assert.equal(createHash("sha256").update(bytes).digest("hex"), f.sha256, f.name);
    }

    // The signature verifies with the published public key over bytes built here.
    const key = (await keys.listKeys({})).keys.find((k) => k.kid === first.kid);
    assert.ok(key, "the signing kid is listed");
    assert.ok(key.active);
    const pub = ed25519PublicKey(key.publicKey);
    assert.ok(verify(null, signingBytes(first, createdAtMs), pub, first.signature));
    assert.ok(!verify(null, signingBytes(first, createdAtMs + 1n), pub, first.signature));

    // The sandbox is still running.
    assert.equal((await client.getSandbox({ sandboxId: source })).sandbox?.state, SandboxState.RUNNING);
  });

  it("gets and lists by id and name; names are unique", async () => {
    const byName = (await client.getSnapshot({ snapshotId: `first-${suffix}` })).snapshot!;
    assert.equal(byName.snapshotId, first.snapshotId);
    const byId = (await client.getSnapshot({ snapshotId: first.snapshotId })).snapshot!;
    assert.deepEqual(byId.signature, first.signature);
    const listed = (await client.listSnapshots({ sandboxId: source })).snapshots.map((s) => s.snapshotId);
    assert.deepEqual(listed, [first.snapshotId]);
    assert.deepEqual((await client.listSnapshots({ sandboxId: "othersandbox" })).snapshots, []);
    await assert.rejects(
      client.snapshotSandbox({ sandboxId: source, name: `first-${suffix}` }, long),
      connectError(Code.AlreadyExists, /already exists/),
    );
    const { rows } = await db.query("SELECT id FROM snapshots");
    assert.equal(rows.length, 1, "the refused snapshot left no row");
  });

  it("restores into a new running sandbox that records its source (by id and by name)", async () => {
    const clone = await restore(first.snapshotId);
    assert.notEqual(clone.sandboxId, source);
    assert.equal(clone.state, SandboxState.RUNNING);
    assert.equal(clone.sourceSnapshotId, first.snapshotId);
    assert.equal(clone.templateId, "base");
    assert.equal(clone.hostId, hostId);
    assert.deepEqual(clone.metadata, { suite: suffix });
    const row = (
      await db.query<{ state: string; source_snapshot_id: string }>(
        "SELECT state, source_snapshot_id FROM sandboxes WHERE id = $1",
        [clone.sandboxId],
      )
    ).rows[0];
    assert.deepEqual(row, { state: "running", source_snapshot_id: first.snapshotId });
    assert.ok((await vmmClient.listVms({})).vms.some((v) => v.sandboxId === clone.sandboxId));
    await remove(clone.sandboxId);

    const byName = await restore(`first-${suffix}`);
    assert.equal(byName.sourceSnapshotId, first.snapshotId);
    await remove(byName.sandboxId);
  });

  it("refuses a wrong signature and starts nothing", async () => {
    const bad = Buffer.from(first.signature);
    bad[10]! ^= 0x01;
    await db.query("UPDATE snapshots SET signature = $2 WHERE id = $1", [first.snapshotId, bad]);
    try {
      await refused(
        first.snapshotId,
        new RegExp(
          `snapshot ${first.snapshotId} failed verification: signature mismatch \\(kid ${first.kid}\\)`,
        ),
      );
      // A signature of the wrong length is no better.
      await db.query("UPDATE snapshots SET signature = $2 WHERE id = $1", [
        first.snapshotId,
        Buffer.alloc(7),
      ]);
      await refused(first.snapshotId, /failed verification/);
    } finally {
      await db.query("UPDATE snapshots SET signature = $2 WHERE id = $1", [
        first.snapshotId,
        Buffer.from(first.signature),
      ]);
    }
  });

  it("refuses an unsigned snapshot and starts nothing", async () => {
    await db.query("UPDATE snapshots SET signature = NULL WHERE id = $1", [first.snapshotId]);
    try {
      await refused(
        first.snapshotId,
        new RegExp(`snapshot ${first.snapshotId} is unsigned; refusing to restore`),
      );
    } finally {
      await db.query("UPDATE snapshots SET signature = $2 WHERE id = $1", [
        first.snapshotId,
        Buffer.from(first.signature),
      ]);
    }
  });

  it("after a rotation old snapshots still restore and new ones use the new key", async () => {
    const { kid: newKid } = await keys.rotateKey({});
    assert.notEqual(newKid, first.kid);
    const clone = await restore(first.snapshotId);
    assert.equal(clone.state, SandboxState.RUNNING);
    await remove(clone.sandboxId);

    const { snapshot } = await client.snapshotSandbox({ sandboxId: source }, long);
    assert.equal(snapshot!.kid, newKid);
    assert.equal(snapshot!.name, "");
    await client.deleteSnapshot({ snapshotId: snapshot!.snapshotId }, long);
  });

  it("passes the host's refusal of a changed file through intact; nothing runs", async () => {
    const { snapshot } = await client.snapshotSandbox({ sandboxId: source }, long);
    const id = snapshot!.snapshotId;
    const share = join(folder(id), "share.tar");
    const bytes = readFileSync(share);
    bytes[bytes.length >> 1]! ^= 0xff;
    writeFileSync(share, bytes);
    const listed = async () => (await client.listSandboxes({})).sandboxes.length;
    const [visible, vms] = [await listed(), await vmCount()];
    await assert.rejects(
      client.restoreSnapshot({ snapshotId: id }, long),
      connectError(Code.FailedPrecondition, /share\.tar: changed/),
    );
    assert.equal(await listed(), visible);
    assert.equal(await vmCount(), vms);
    const { rows } = await db.query<{ state: string }>(
      "SELECT state FROM sandboxes WHERE source_snapshot_id = $1",
      [id],
    );
    assert.deepEqual(rows, [{ state: "error" }]);
    await client.deleteSnapshot({ snapshotId: id }, long);
  });

  it("refuses a snapshot signed by a retired key and starts nothing", async () => {
    await keys.retireKey({ kid: first.kid });
    await refused(
      first.snapshotId,
      new RegExp(`snapshot ${first.snapshotId} failed verification: retired key \\(kid ${first.kid}\\)`),
    );
  });

  it("forks: clones run, the source keeps running, the intermediate snapshot is gone", async () => {
    const before = new Set((await client.listSnapshots({})).snapshots.map((s) => s.snapshotId));
    const { results } = await client.forkSandbox({ sandboxId: source, count: 2 }, { timeoutMs: 400_000 });
    assert.equal(results.length, 2);
    const clones = results.map((r) => {
      assert.equal(r.error, "", `clone failed: ${r.errorCode} ${r.error}`);
      made.push(r.sandbox!.sandboxId);
      return r.sandbox!;
    });
    assert.notEqual(clones[0]!.sandboxId, clones[1]!.sandboxId);
    const forkSnapshot = clones[0]!.sourceSnapshotId;
    assert.match(forkSnapshot, /^snap_[a-z0-9]{20}$/);
    for (const c of clones) {
      assert.equal(c.state, SandboxState.RUNNING);
      assert.equal(c.sourceSnapshotId, forkSnapshot);
      assert.notEqual(c.sandboxId, source);
      assert.deepEqual(c.metadata, { suite: suffix }, "clones take the source's metadata");
    }
    const vms = (await vmmClient.listVms({})).vms.map((v) => v.sandboxId);
    for (const id of [source, ...clones.map((c) => c.sandboxId)]) assert.ok(vms.includes(id), id);
    assert.equal((await client.getSandbox({ sandboxId: source })).sandbox?.state, SandboxState.RUNNING);

    assert.equal(before.has(forkSnapshot), false);
    const { rows } = await db.query("SELECT id FROM snapshots WHERE id = $1", [forkSnapshot]);
    assert.deepEqual(rows, []);
    assert.equal(existsSync(folder(forkSnapshot)), false);
    for (const c of clones) await remove(c.sandboxId);
  });

  it("deletes a snapshot: its row and its folder on the host", async () => {
    assert.ok(existsSync(folder(first.snapshotId)));
    await client.deleteSnapshot({ snapshotId: first.snapshotId }, long);
    assert.equal(existsSync(folder(first.snapshotId)), false);
    const { rows } = await db.query("SELECT id FROM snapshots WHERE id = $1", [first.snapshotId]);
    assert.deepEqual(rows, []);
    await assert.rejects(client.getSnapshot({ snapshotId: first.snapshotId }), connectError(Code.NotFound));
    await assert.rejects(
      client.deleteSnapshot({ snapshotId: first.snapshotId }),
      connectError(Code.NotFound),
    );
    await assert.rejects(
      client.restoreSnapshot({ snapshotId: `first-${suffix}` }),
      connectError(Code.NotFound),
    );
  });

  it("snapshots a paused sandbox, which stays paused", async () => {
    await client.pauseSandbox({ sandboxId: source });
    const { snapshot } = await client.snapshotSandbox({ sandboxId: source }, long);
    assert.equal((await client.getSandbox({ sandboxId: source })).sandbox?.state, SandboxState.PAUSED);
    assert.equal((await vmmClient.listVms({})).vms.find((v) => v.sandboxId === source)?.paused, true);
    await client.deleteSnapshot({ snapshotId: snapshot!.snapshotId }, long);
    await client.resumeSandbox({ sandboxId: source });
  });
});
