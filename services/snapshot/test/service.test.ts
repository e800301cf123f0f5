import assert from "node:assert/strict";
import { openSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient, createRouterTransport } from "@connectrpc/connect";
import { createLogger, createServiceClient, type Logger, silentLogger } from "@dnah/platform";
import { type Manifest, ManifestSchema, SnapshotService } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import {
  createSnapshotService,
  kidForPublicKey,
  manifestSigningBytes,
  type SnapshotServiceHandle,
  verify,
} from "../src/index.js";

const manifest = (over: Partial<Omit<Manifest, "$typeName">> = {}): Manifest =>
  create(ManifestSchema, {
    sandboxId: "sb-123",
    snapshotId: "snap-456",
    manifestSha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    sizeBytes: 123_456_789n,
    createdAtMs: 1_735_689_600_000n,
    ...over,
  });

async function startService(keysDir: string, logger: Logger = silentLogger()) {
  const svc = createSnapshotService({ keysDir, host: "127.0.0.1", port: 0 }, { logger });
  const url = await svc.start();
  return { svc, client: createServiceClient(SnapshotService, url) };
}

/** pino writes asynchronously; waits (bounded) until the log file shows what the test needs. */
async function waitForLog(path: string, ready: (text: string) => boolean): Promise<string> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const text = await readFile(path, "utf8");
    if (ready(text)) return text;
    if (Date.now() > deadline) assert.fail(`log never became ready:\n${text}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function expectCode(p: Promise<unknown>, code: Code): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ConnectError, `expected a ConnectError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    return err;
  }
  assert.fail(`expected ${Code[code]}`);
}

describe("snapshot service over HTTP", () => {
  let root: string;
  let keysDir: string;
  let logFile: string;
  let logger: Logger;
  let svc: SnapshotServiceHandle;
  let client: ReturnType<typeof createServiceClient<typeof SnapshotService>>;

  before(async () => {
    root = await mkdtemp(join(tmpdir(), "dnah-snapshot-"));
    keysDir = join(root, "state", "keys");
    // A real logger at the most verbose level, to check that private keys never reach it.
    logFile = join(root, "service.log");
    logger = createLogger("snapshot", { level: "trace", destination: openSync(logFile, "a") });
    ({ svc, client } = await startService(keysDir, logger));
  });

  after(async () => {
    await svc.close();
    // The log fd stays open until the process exits: pino writes asynchronously and its flush does
    // not wait for a write in progress, so closing the fd here could fail a pending write.
    await rm(root, { recursive: true, force: true });
  });

  let firstKid: string;
  let firstSig: Uint8Array;

  it("signs a manifest with the active key, and the signature verifies", async () => {
    const m = manifest();
    const signed = await client.signManifest({ manifest: m });
    assert.equal(signed.signature.length, 64);
    assert.match(signed.kid, /^[0-9a-f]{16}$/);
    const res = await client.verifyManifest({ manifest: m, signature: signed.signature, kid: signed.kid });
    assert.deepEqual({ valid: res.valid, reason: res.reason }, { valid: true, reason: "" });
    firstKid = signed.kid;
    firstSig = signed.signature;
  });

  it("signs deterministically", async () => {
    const again = await client.signManifest({ manifest: manifest() });
    assert.deepEqual(again.signature, firstSig);
  });

  const tampered: [string, Partial<Omit<Manifest, "$typeName">>][] = [
    ["sandbox_id", { sandboxId: "sb-124" }],
    ["snapshot_id", { snapshotId: "snap-457" }],
    [
      "manifest_sha256",
      { manifestSha256: "0f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08" },
    ],
    ["size_bytes", { sizeBytes: 123_456_790n }],
    ["created_at_ms", { createdAtMs: 1_735_689_600_001n }],
  ];
  for (const [field, change] of tampered) {
    it(`reports a tampered ${field} as a signature mismatch`, async () => {
      const res = await client.verifyManifest({
        manifest: manifest(change),
        signature: firstSig,
        kid: firstKid,
      });
      assert.deepEqual(
        { valid: res.valid, reason: res.reason },
        { valid: false, reason: "signature mismatch" },
      );
    });
  }

  it("reports a tampered signature as a signature mismatch", async () => {
    for (const i of [0, 31, 32, 63]) {
      const sig = Uint8Array.from(firstSig);
      sig[i]! ^= 0x01;
      const res = await client.verifyManifest({ manifest: manifest(), signature: sig, kid: firstKid });
      assert.deepEqual(
        { valid: res.valid, reason: res.reason },
        { valid: false, reason: "signature mismatch" },
      );
    }
  });

  it("reports an unknown kid as unknown key", async () => {
    for (const kid of ["0000000000000000", "not-a-kid"]) {
      const res = await client.verifyManifest({ manifest: manifest(), signature: firstSig, kid });
      assert.deepEqual({ valid: res.valid, reason: res.reason }, { valid: false, reason: "unknown key" });
    }
  });

  it("rejects malformed requests with InvalidArgument", async () => {
    await expectCode(client.signManifest({}), Code.InvalidArgument);
    await expectCode(client.signManifest({ manifest: manifest({ sandboxId: "" }) }), Code.InvalidArgument);
    await expectCode(
      client.signManifest({ manifest: manifest({ manifestSha256: "9F86D081884C7D659A2FEAA0C55AD015" }) }),
      Code.InvalidArgument,
    );
    await expectCode(client.verifyManifest({ signature: firstSig, kid: firstKid }), Code.InvalidArgument);
    const short = await expectCode(
      client.verifyManifest({ manifest: manifest(), signature: firstSig.subarray(0, 63), kid: firstKid }),
      Code.InvalidArgument,
    );
    assert.match(short.rawMessage, /signature must be 64 bytes/);
    await expectCode(
      client.verifyManifest({ manifest: manifest(), signature: new Uint8Array(65), kid: firstKid }),
      Code.InvalidArgument,
    );
    await expectCode(
      client.verifyManifest({ manifest: manifest(), signature: firstSig, kid: "" }),
      Code.InvalidArgument,
    );
    // Every problem in one answer.
    const many = await expectCode(
      client.verifyManifest({
        manifest: manifest({ snapshotId: "" }),
        signature: new Uint8Array(1),
        kid: "",
      }),
      Code.InvalidArgument,
    );
    assert.match(many.rawMessage, /snapshot_id.*signature.*kid/);
  });

  let secondKid: string;

  it("rotates: the new kid signs, old signatures still verify, ListKeys shows both", async () => {
    const rotated = await client.rotateKey({});
    secondKid = rotated.kid;
    assert.notEqual(secondKid, firstKid);

    const signed = await client.signManifest({ manifest: manifest() });
    assert.equal(signed.kid, secondKid);
    assert.notDeepEqual(signed.signature, firstSig);
    assert.equal(
      (await client.verifyManifest({ manifest: manifest(), signature: signed.signature, kid: secondKid }))
        .valid,
      true,
    );
    assert.equal(
      (await client.verifyManifest({ manifest: manifest(), signature: firstSig, kid: firstKid })).valid,
      true,
    );

    // A signature is bound to its key: the kid is part of the signed bytes.
    const crossed = await client.verifyManifest({
      manifest: manifest(),
      signature: firstSig,
      kid: secondKid,
    });
    assert.deepEqual(
      { valid: crossed.valid, reason: crossed.reason },
      { valid: false, reason: "signature mismatch" },
    );

    const { keys } = await client.listKeys({});
    assert.deepEqual(
      keys.map((k) => [k.kid, k.active]).sort(),
      [
        [firstKid, false],
        [secondKid, true],
      ].sort(),
    );
    for (const k of keys) {
      assert.equal(k.publicKey.length, 32);
      assert.equal(kidForPublicKey(k.publicKey), k.kid);
    }
  });

  it("serialises concurrent rotations", async () => {
    const kids = await Promise.all([1, 2, 3].map(() => client.rotateKey({})));
    const { keys } = await client.listKeys({});
    assert.equal(keys.length, 5);
    assert.equal(keys.filter((k) => k.active).length, 1);
    const active = keys.find((k) => k.active)!.kid;
    assert.ok(kids.some((k) => k.kid === active));
    assert.equal((await readFile(join(keysDir, "active"), "utf8")).trim(), active);
    assert.equal((await client.signManifest({ manifest: manifest() })).kid, active);
  });

  it("stores keys in 0600 files inside a 0700 directory", async () => {
    assert.equal((await stat(keysDir)).mode & 0o777, 0o700);
    const files = await readdir(keysDir);
    assert.deepEqual(files.filter((f) => f.endsWith(".json")).length, 5);
    assert.ok(files.includes("active"));
    for (const f of files) assert.equal((await stat(join(keysDir, f))).mode & 0o777, 0o600, f);
    const file = JSON.parse(await readFile(join(keysDir, `${firstKid}.json`), "utf8"));
    assert.deepEqual(Object.keys(file).sort(), ["createdAt", "kid", "privateKey", "publicKey"]);
    assert.equal(file.kid, firstKid);
    assert.equal(Buffer.from(file.privateKey, "base64").length, 32);
  });

  it("keeps keys across a restart with the same directory", async () => {
    const before = await client.listKeys({});
    await svc.close();
    ({ svc, client } = await startService(keysDir, logger));
    const afterRestart = await client.listKeys({});
    assert.deepEqual(
      afterRestart.keys.map((k) => [k.kid, Buffer.from(k.publicKey).toString("hex"), k.active]),
      before.keys.map((k) => [k.kid, Buffer.from(k.publicKey).toString("hex"), k.active]),
    );
    assert.equal(
      (await client.verifyManifest({ manifest: manifest(), signature: firstSig, kid: firstKid })).valid,
      true,
    );
    const active = afterRestart.keys.find((k) => k.active)!.kid;
    assert.equal((await client.signManifest({ manifest: manifest() })).kid, active);
  });

  it("never logs or returns a private key", async () => {
    // Both starts have reached the file: the log is really being written.
    const log = await waitForLog(
      logFile,
      (text) => text.split("snapshot service listening").length - 1 === 2,
    );
    const { keys } = await client.listKeys({});
    for (const f of (await readdir(keysDir)).filter((n) => n.endsWith(".json"))) {
      const { privateKey } = JSON.parse(await readFile(join(keysDir, f), "utf8")) as { privateKey: string };
      const raw = Buffer.from(privateKey, "base64");
      for (const form of [privateKey, raw.toString("hex"), raw.toString("base64url")]) {
        assert.ok(!log.includes(form), `log contains the private key of ${f}`);
      }
      for (const k of keys) assert.notDeepEqual(Buffer.from(k.publicKey), raw);
    }
  });

  it("signs bytes that name the kid, checkable with the public key from ListKeys", async () => {
    const m = manifest({ snapshotId: "snap-kid" });
    const signed = await client.signManifest({ manifest: m });
    const { keys } = await client.listKeys({});
    const pub = keys.find((k) => k.kid === signed.kid)!.publicKey;
    assert.ok(verify(signed.signature, manifestSigningBytes(m, signed.kid), pub));
    // Same key, same manifest, another kid in the bytes: not what was signed.
    const other = keys.find((k) => k.kid !== signed.kid)!.kid;
    assert.ok(!verify(signed.signature, manifestSigningBytes(m, other), pub));
  });

  it("lists created_at for every key and no retired_at before a retirement", async () => {
    const { keys } = await client.listKeys({});
    for (const k of keys) {
      assert.ok(k.createdAt !== undefined && k.createdAt.seconds > 0n, k.kid);
      assert.equal(k.retiredAt, undefined, k.kid);
    }
    // Oldest first.
    const seconds = keys.map((k) => Number(k.createdAt!.seconds) * 1e3 + k.createdAt!.nanos / 1e6);
    assert.deepEqual(
      seconds,
      [...seconds].sort((a, b) => a - b),
    );
  });

  it("refuses to retire the active key, an unknown kid, or a malformed one", async () => {
    const { keys } = await client.listKeys({});
    const active = keys.find((k) => k.active)!.kid;
    const err = await expectCode(client.retireKey({ kid: active }), Code.FailedPrecondition);
    assert.match(err.rawMessage, /rotate first/);
    await expectCode(client.retireKey({ kid: "0000000000000000" }), Code.NotFound);
    await expectCode(client.retireKey({ kid: "not-a-kid" }), Code.InvalidArgument);
    await expectCode(client.retireKey({ kid: "" }), Code.InvalidArgument);
    assert.ok((await client.listKeys({})).keys.every((k) => k.retiredAt === undefined));
  });

  it("retires a key: its signatures read 'retired key', it stays listed, across a restart", async () => {
    await client.retireKey({ kid: firstKid });
    await client.retireKey({ kid: firstKid }); // idempotent
    const refused = await client.verifyManifest({ manifest: manifest(), signature: firstSig, kid: firstKid });
    assert.deepEqual(
      { valid: refused.valid, reason: refused.reason },
      { valid: false, reason: "retired key" },
    );
    const listed = (await client.listKeys({})).keys;
    const retired = listed.find((k) => k.kid === firstKid)!;
    assert.ok(retired.retiredAt !== undefined);
    assert.equal(retired.active, false);
    assert.deepEqual(
      listed.filter((k) => k.retiredAt !== undefined).map((k) => k.kid),
      [firstKid],
    );

    // Signatures of the other, older keys still verify.
    const bySecond = await client.verifyManifest({
      manifest: manifest(),
      signature: (await client.signManifest({ manifest: manifest() })).signature,
      kid: (await client.listKeys({})).keys.find((k) => k.active)!.kid,
    });
    assert.equal(bySecond.valid, true);

    await svc.close();
    ({ svc, client } = await startService(keysDir, logger));
    const again = (await client.listKeys({})).keys.find((k) => k.kid === firstKid)!;
    assert.deepEqual(again.retiredAt, retired.retiredAt);
    assert.equal(
      (await client.verifyManifest({ manifest: manifest(), signature: firstSig, kid: firstKid })).reason,
      "retired key",
    );
    await client.retireKey({ kid: firstKid }); // still idempotent after a restart

    const log = await waitForLog(logFile, (text) => text.includes("retired a key"));
    const line = log.split("\n").find((l) => l.includes("retired a key"))!;
    assert.equal(JSON.parse(line).kid, firstKid);
  });
});

describe("snapshot service lifecycle", () => {
  it("answers Unavailable before start and after close, in process", async () => {
    const root = await mkdtemp(join(tmpdir(), "dnah-snapshot-"));
    try {
      const svc = createSnapshotService(
        { keysDir: join(root, "keys"), host: "127.0.0.1", port: 0 },
        { logger: silentLogger() },
      );
      const local = createClient(
        SnapshotService,
        createRouterTransport(({ service }) => service(SnapshotService, svc.impl)),
      );
      await expectCode(local.listKeys({}), Code.Unavailable);
      assert.equal(svc.url, undefined);
      const url = await svc.start();
      assert.equal(svc.url, url);
      assert.equal((await local.listKeys({})).keys.length, 1);
      await assert.rejects(svc.start(), /cannot start/);
      await svc.close();
      await expectCode(local.listKeys({}), Code.Unavailable);
      await svc.close(); // idempotent
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it("closes cleanly when close() is called while starting", async () => {
    const root = await mkdtemp(join(tmpdir(), "dnah-snapshot-"));
    try {
      const svc = createSnapshotService(
        { keysDir: root, host: "127.0.0.1", port: 0 },
        { logger: silentLogger() },
      );
      const started = svc.start();
      const closed = svc.close();
      const url = await started;
      await closed;
      await assert.rejects(fetch(url), /fetch failed/);
      await svc.close();
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it("fails to start on a corrupt key directory, without leaking key material", async () => {
    const root = await mkdtemp(join(tmpdir(), "dnah-snapshot-"));
    try {
      const svc = createSnapshotService(
        { keysDir: root, host: "127.0.0.1", port: 0 },
        { logger: silentLogger() },
      );
      await writeFile(join(root, "0123456789abcdef.json"), '{"privateKey": "SECRETSECRET", oops', {
        mode: 0o600,
      });
      const err = await svc.start().then(
        () => assert.fail("started"),
        (e: unknown) => e as Error,
      );
      assert.match(err.message, /0123456789abcdef\.json: not valid JSON/);
      assert.ok(!err.message.includes("SECRET"));
      assert.equal(err.cause, undefined);
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });
});
