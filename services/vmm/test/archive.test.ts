import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { after, before, describe, test } from "node:test";
import { pathToFileURL } from "node:url";
import { Code, ConnectError } from "@connectrpc/connect";
import { createServiceClient, silentLogger } from "@dnah/platform";
import { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { configFromEnv, createVmm, type Vmm } from "../src/index.js";
import { agentRequest } from "../src/vsock/agent-http.js";
import { unarchive } from "./unarchive.js";

const code = (e: unknown) => ConnectError.from(e).code;
const rejectsWith = (c: Code, message?: RegExp) => (e: unknown) => {
  const ce = ConnectError.from(e);
  assert.equal(Code[ce.code], Code[c], ce.rawMessage);
  if (message) assert.match(ce.rawMessage, message);
  return true;
};

/** Bytes a folder holds: the signed size plus MANIFEST itself. */
function stored(dir: string): bigint {
  return readdirSync(dir).reduce((n, f) => n + BigInt(statSync(`${dir}/${f}`).size), 0n);
}

/** Every file of a folder with its bytes, to compare two copies. */
function contents(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) out[name] = readFileSync(`${dir}/${name}`).toString("base64");
  return out;
}

describe("vmm archive storage (folder) with the jail runtime", () => {
  const suffix = randomBytes(4).toString("hex");
  const stateDir = `/tmp/dnah-vmm-arch-${suffix}`;
  const archiveDir = `/tmp/dnah-vmm-arch-${suffix}-store`;
  const snapshots = `${stateDir}/snapshots`;
  const src = `a${suffix}`;
  const vsockOf = (id: string) => `${stateDir}/sandboxes/${id}/vsock/vsock.sock`;
  let vmm: Vmm;
  let client: ReturnType<typeof createServiceClient<typeof VmmService>>;
  const signed = new Map<string, { manifestSha256: string; sizeBytes: bigint }>();
  const long = { timeoutMs: 120_000 };

  const snapshot = async (snapshotId: string) => {
    const s = await client.snapshotVm({ sandboxId: src, snapshotId }, long);
    signed.set(snapshotId, { manifestSha256: s.manifestSha256, sizeBytes: s.sizeBytes });
    return s;
  };

  before(async () => {
    vmm = await createVmm(
      configFromEnv({
        DNAH_VMM_PORT: "0",
        DNAH_STATE_DIR: stateDir,
        DNAH_ARCHIVE_DIR: archiveDir,
        DNAH_CGROUP_PARENT: `dnah-vmm-arch-${suffix}`,
        DNAH_VMM_CAPACITY: "4",
        ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
      }),
      silentLogger(),
    );
    client = createServiceClient(VmmService, await vmm.start());
    await client.createVm({ sandboxId: src, templateId: "base", cpuCount: 1, memoryMib: 256 });
  });
  after(async () => {
    await vmm?.close();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(archiveDir, { recursive: true, force: true });
  });

  test("DNAH_ARCHIVE_DIR defaults to <state>/archive", () => {
    assert.equal(configFromEnv({ DNAH_STATE_DIR: "/srv/dnah" }).archiveDir, "/srv/dnah/archive");
  });

  test("ArchiveSnapshot moves the folder whole, answers a file:// URI, and is idempotent", async () => {
    await snapshot("arch1");
    const before = contents(`${snapshots}/arch1`);
    const res = await client.archiveSnapshot({ snapshotId: "arch1" }, long);
    assert.equal(res.archiveUri, pathToFileURL(`${archiveDir}/arch1`).href);
    assert.equal(res.archiveUri, `file://${archiveDir}/arch1`);
    assert.equal(res.sizeBytes, stored(`${archiveDir}/arch1`));
    assert.ok(res.sizeBytes > signed.get("arch1")!.sizeBytes, "the signed files plus MANIFEST");
    assert.equal(existsSync(`${snapshots}/arch1`), false, "the local folder is gone");
    assert.deepEqual(contents(`${archiveDir}/arch1`), before);
    assert.deepEqual(readdirSync(archiveDir), ["arch1"], "no .partial left");

    const again = await client.archiveSnapshot({ snapshotId: "arch1" });
    assert.equal(again.archiveUri, res.archiveUri);
    assert.equal(again.sizeBytes, res.sizeBytes);

    await assert.rejects(client.archiveSnapshot({ snapshotId: "nosuchsnap" }), rejectsWith(Code.NotFound));
    await assert.rejects(client.archiveSnapshot({ snapshotId: "../x" }), rejectsWith(Code.InvalidArgument));
  });

  test("a retry removes a stale .partial, and a crash after the rename is finished", async () => {
    await snapshot("arch2");
    const before = contents(`${snapshots}/arch2`);
    mkdirSync(`${archiveDir}/arch2.partial`, { recursive: true });
    writeFileSync(`${archiveDir}/arch2.partial/junk`, "left by a crash");
    await client.archiveSnapshot({ snapshotId: "arch2" }, long);
    assert.deepEqual(contents(`${archiveDir}/arch2`), before);
    assert.equal(existsSync(`${archiveDir}/arch2.partial`), false);

    // Renamed into the archive but the local folder not yet removed: the next call removes it.
    await snapshot("arch3");
    cpSync(`${snapshots}/arch3`, `${archiveDir}/arch3`, { recursive: true });
    const res = await client.archiveSnapshot({ snapshotId: "arch3" });
    assert.equal(res.sizeBytes, stored(`${archiveDir}/arch3`));
    assert.equal(existsSync(`${snapshots}/arch3`), false);
  });

  test("UnarchiveSnapshot and DeleteArchive take only URIs inside the archive folder", async () => {
    const bad = [
      "http://example.com/arch1",
      "s3://bucket/arch1",
      `file://${snapshots}/arch1`,
      `file://${archiveDir}/../snapshots/arch1`,
      `file://${archiveDir}/arch1/../../etc`,
      `file://${archiveDir}/arch1/MANIFEST`,
      `file://${archiveDir}-store2/arch1`,
      `file://${archiveDir}/arch1%2F..`,
      `file://otherhost${archiveDir}/arch1`,
      `file://${archiveDir}/arch1?x=1`,
      "arch1",
      "",
    ];
    for (const uri of bad) {
      await assert.rejects(
        unarchive(client, { snapshotId: "arch1", archiveUri: uri }),
        rejectsWith(Code.InvalidArgument),
        uri,
      );
      await assert.rejects(client.deleteArchive({ archiveUri: uri }), rejectsWith(Code.InvalidArgument), uri);
    }
    // The URI must hold the snapshot it is asked for.
    await assert.rejects(
      unarchive(client, { snapshotId: "arch2", archiveUri: `file://${archiveDir}/arch1` }),
      rejectsWith(Code.InvalidArgument, /does not hold snapshot 'arch2'/),
    );
    await assert.rejects(
      unarchive(client, { snapshotId: "gone", archiveUri: `file://${archiveDir}/gone` }),
      rejectsWith(Code.NotFound),
    );
    assert.ok(existsSync(`${archiveDir}/arch1`), "nothing was removed");
  });

  test("UnarchiveSnapshot brings the files back and RestoreVm verifies and starts them", async () => {
    const uri = `file://${archiveDir}/arch1`;
    const archived = contents(`${archiveDir}/arch1`);
    const messages = await unarchive(client, { snapshotId: "arch1", archiveUri: uri }, long);
    const size = stored(`${archiveDir}/arch1`);
    const res = messages.at(-1)!;
    assert.equal(res.done, true);
    assert.equal(res.sizeBytes, size);
    // Progress first: from 0 of the total, never backwards, then the totals.
    assert.deepEqual(
      [messages[0]!.copiedBytes, messages[0]!.totalBytes, messages[0]!.done],
      [0n, size, false],
    );
    const copied = messages.map((m) => m.copiedBytes);
    assert.deepEqual(
      copied,
      [...copied].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)),
    );
    assert.equal(res.copiedBytes, size);
    assert.deepEqual(contents(`${snapshots}/arch1`), archived);
    assert.equal(existsSync(`${snapshots}/arch1.partial`), false);
    await assert.rejects(
      unarchive(client, { snapshotId: "arch1", archiveUri: uri }),
      rejectsWith(Code.AlreadyExists),
    );
    const clone = `r${suffix}`;
    const restored = await client.restoreVm(
      { snapshotId: "arch1", sandboxId: clone, ...signed.get("arch1")! },
      long,
    );
    assert.equal(restored.vm?.sandboxId, clone);
    const r = await agentRequest(vsockOf(clone), "GET", `/files?path=${encodeURIComponent("/etc/hostname")}`);
    assert.equal(r.status, 200, r.body);
    await client.deleteVm({ sandboxId: clone });
  });

  test("a tampered archive is refused by RestoreVm, naming the file, and starts nothing", async () => {
    const uri = `file://${archiveDir}/arch2`;
    const f = `${archiveDir}/arch2/disk.tar`;
    const bytes = readFileSync(f);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1]! + 1) % 256;
    writeFileSync(f, bytes);
    await unarchive(client, { snapshotId: "arch2", archiveUri: uri }, long);
    const victim = `t${suffix}`;
    await assert.rejects(
      client.restoreVm({ snapshotId: "arch2", sandboxId: victim, ...signed.get("arch2")! }, long),
      rejectsWith(Code.FailedPrecondition, /disk\.tar: changed \(sha256 differs\)/),
    );
    assert.equal(
      (await client.listVms({})).vms.some((v) => v.sandboxId === victim),
      false,
    );
    assert.equal(existsSync(`${stateDir}/sandboxes/${victim}`), false);
  });

  test("DeleteArchive removes the archived folder and is idempotent", async () => {
    const uri = `file://${archiveDir}/arch1`;
    await client.deleteArchive({ archiveUri: uri });
    assert.equal(existsSync(`${archiveDir}/arch1`), false);
    await client.deleteArchive({ archiveUri: uri });
    assert.equal(code(await client.archiveSnapshot({ snapshotId: "arch9" }).catch((e) => e)), Code.NotFound);
  });
});
