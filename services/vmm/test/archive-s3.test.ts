import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  DeleteObjectCommand,
  GetObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from "@aws-sdk/client-s3";
import { Code, ConnectError } from "@connectrpc/connect";
import { createServiceClient, silentLogger } from "@dnah/platform";
import { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import S3rver from "s3rver";
import { configFromEnv, createVmm, type Vmm } from "../src/index.js";
import { S3Archive } from "../src/snapshot/archive/s3.js";
import { agentRequest } from "../src/vsock/agent-http.js";
import { unarchive } from "./unarchive.js";

/**
 * Archive storage in an S3-compatible bucket, through the vmm's Connect API with the jail
 * runtime. No real S3 (AWS, MinIO, Ceph) can run on this machine, so the bucket is served by
 * s3rver, an S3 API implementation in Node that stores objects in a folder and speaks the wire
 * protocol the AWS SDK uses (SigV4, ListObjectsV2, multipart, DeleteObjects). What this proves:
 * the backend's protocol and its whole-or-nothing rules; not a given vendor's quirks.
 */
const rejectsWith = (c: Code, message?: RegExp) => (e: unknown) => {
  const ce = ConnectError.from(e);
  assert.equal(Code[ce.code], Code[c], ce.rawMessage);
  if (message) assert.match(ce.rawMessage, message);
  return true;
};

function contents(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of readdirSync(dir).sort()) out[name] = readFileSync(join(dir, name)).toString("base64");
  return out;
}

describe("vmm archive storage in an S3-compatible bucket", () => {
  const suffix = randomBytes(4).toString("hex");
  const stateDir = `/tmp/dnah-vmm-s3-${suffix}`;
  const bucketDir = mkdtempSync(join(tmpdir(), "dnah-s3rver-"));
  const bucket = "dnah-test";
  const prefix = `run-${suffix}/`;
  const src = `s${suffix}`;
  const long = { timeoutMs: 120_000 };
  let server: S3rver;
  let s3: S3Client;
  let vmm: Vmm;
  let client: ReturnType<typeof createServiceClient<typeof VmmService>>;
  const signed = new Map<string, { manifestSha256: string; sizeBytes: bigint }>();
  const snapshot = async (snapshotId: string) => {
    const s = await client.snapshotVm({ sandboxId: src, snapshotId }, long);
    signed.set(snapshotId, { manifestSha256: s.manifestSha256, sizeBytes: s.sizeBytes });
  };
  const keys = async (id: string) =>
    ((await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: `${prefix}${id}/` }))).Contents ?? [])
      .map((o) => o.Key!.slice(`${prefix}${id}/`.length))
      .sort();

  before(async () => {
    server = new S3rver({
      address: "127.0.0.1",
      port: 0,
      silent: true,
      directory: bucketDir,
      configureBuckets: [{ name: bucket, configs: [] }],
    });
    const { port } = (await server.run()) as AddressInfo;
    const endpoint = `http://127.0.0.1:${port}`;
    // s3rver's fixed credentials, through the SDK's default chain as in production.
    process.env.AWS_ACCESS_KEY_ID = "S3RVER";
    process.env.AWS_SECRET_ACCESS_KEY = "S3RVER";
    s3 = new S3Client({ region: "us-east-1", endpoint, forcePathStyle: true });
    vmm = await createVmm(
      configFromEnv({
        DNAH_VMM_PORT: "0",
        DNAH_STATE_DIR: stateDir,
        DNAH_CGROUP_PARENT: `dnah-vmm-s3-${suffix}`,
        DNAH_VMM_CAPACITY: "3",
        DNAH_ARCHIVE_S3_BUCKET: bucket,
        DNAH_ARCHIVE_S3_PREFIX: prefix,
        DNAH_ARCHIVE_S3_ENDPOINT: endpoint,
        DNAH_ARCHIVE_S3_PATH_STYLE: "true",
        ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
      }),
      silentLogger(),
    );
    client = createServiceClient(VmmService, await vmm.start());
    await client.createVm({ sandboxId: src, templateId: "base", cpuCount: 1, memoryMib: 256 });
    // 40 MiB in the share: share.tar goes up in 16 MiB multipart parts.
    writeFileSync(`${stateDir}/sandboxes/${src}/sharefs/share/big.bin`, randomBytes(40 * 1024 * 1024));
    await snapshot("s3a");
    rmSync(`${stateDir}/sandboxes/${src}/sharefs/share/big.bin`);
  });
  after(async () => {
    await vmm?.close();
    s3?.destroy();
    await server?.close();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(bucketDir, { recursive: true, force: true });
  });

  test("config: DNAH_ARCHIVE_S3_* with their defaults; a prefix must end in '/'", () => {
    assert.equal(configFromEnv({}).archiveS3, undefined);
    assert.deepEqual(configFromEnv({ DNAH_ARCHIVE_S3_BUCKET: "b" }).archiveS3, {
      bucket: "b",
      prefix: "dnah-archive/",
      endpoint: undefined,
      region: "us-east-1",
      forcePathStyle: false,
    });
    assert.throws(
      () => new S3Archive({ bucket: "b", prefix: "no-slash", region: "us-east-1", forcePathStyle: true }),
      /must be empty or end in '\/'/,
    );
  });

  test("ArchiveSnapshot uploads every file (MANIFEST too), removes the local folder, and is idempotent", async () => {
    const local = `${stateDir}/snapshots/s3a`;
    const before = contents(local);
    const res = await client.archiveSnapshot({ snapshotId: "s3a" }, long);
    assert.equal(res.archiveUri, `s3://${bucket}/${prefix}s3a`);
    assert.equal(existsSync(local), false);
    assert.deepEqual(await keys("s3a"), Object.keys(before).sort());
    assert.ok(Buffer.from(before["share.tar"]!, "base64").length > 40 * 1024 * 1024, "a multipart upload");
    const manifest = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: `${prefix}s3a/MANIFEST` }));
    assert.equal(
      Buffer.from(await manifest.Body!.transformToByteArray()).toString("base64"),
      before.MANIFEST,
    );
    const again = await client.archiveSnapshot({ snapshotId: "s3a" }, long);
    assert.equal(again.archiveUri, res.archiveUri);
    assert.equal(again.sizeBytes, res.sizeBytes);

    // Back, byte for byte, and RestoreVm verifies and starts it.
    await unarchive(client, { snapshotId: "s3a", archiveUri: res.archiveUri }, long);
    assert.deepEqual(contents(local), before);
    const clone = `c${suffix}`;
    const restored = await client.restoreVm(
      { snapshotId: "s3a", sandboxId: clone, ...signed.get("s3a")! },
      long,
    );
    assert.equal(restored.vm?.sandboxId, clone);
    const envs = JSON.parse(
      (await agentRequest(`${stateDir}/sandboxes/${clone}/vsock/vsock.sock`, "GET", "/envs")).body,
    ) as Record<string, string>;
    assert.equal(envs.DNAH_SANDBOX_ID, clone);
    await client.deleteVm({ sandboxId: clone });
  });

  test("an archive without its MANIFEST is incomplete: not found; URIs outside the bucket prefix are refused", async () => {
    await snapshot("s3b");
    const { archiveUri } = await client.archiveSnapshot({ snapshotId: "s3b" }, long);
    await s3.send(new DeleteObjectCommand({ Bucket: bucket, Key: `${prefix}s3b/MANIFEST` }));
    await assert.rejects(
      unarchive(client, { snapshotId: "s3b", archiveUri }, long),
      rejectsWith(Code.NotFound, /neither on this host nor in its archive/),
    );
    assert.equal(existsSync(`${stateDir}/snapshots/s3b`), false, "nothing half-copied is left");
    for (const uri of [
      `s3://other-bucket/${prefix}s3b`,
      `s3://${bucket}/elsewhere/s3b`,
      `s3://${bucket}/${prefix}../s3b`,
      `file://${stateDir}/archive/s3b`,
    ])
      await assert.rejects(
        unarchive(client, { snapshotId: "s3b", archiveUri: uri }, long),
        rejectsWith(Code.InvalidArgument),
      );
    await client.deleteArchive({ archiveUri });
    assert.deepEqual(await keys("s3b"), []);
  });

  test("a tampered object is refused by RestoreVm naming the file; DeleteArchive removes every object", async () => {
    await snapshot("s3c");
    const { archiveUri } = await client.archiveSnapshot({ snapshotId: "s3c" }, long);
    const key = `${prefix}s3c/disk.tar`;
    const body = Buffer.from(
      await (await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body!.transformToByteArray(),
    );
    body[Math.floor(body.length / 2)]! ^= 0x01;
    await s3.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }));
    await unarchive(client, { snapshotId: "s3c", archiveUri }, long);
    await assert.rejects(
      client.restoreVm({ snapshotId: "s3c", sandboxId: `t${suffix}`, ...signed.get("s3c")! }, long),
      rejectsWith(Code.FailedPrecondition, /disk\.tar: changed \(sha256 differs\)/),
    );
    assert.equal(
      (await client.listVms({})).vms.some((v) => v.sandboxId === `t${suffix}`),
      false,
    );
    await client.deleteArchive({ archiveUri });
    assert.deepEqual(await keys("s3c"), []);
    await client.deleteArchive({ archiveUri });
  });
});
