import assert from "node:assert/strict";
import { createHash, createPublicKey, randomBytes, verify } from "node:crypto";
import { existsSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { SandboxState } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SnapshotService } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import { sandboxClient, startTestStack, type TestStack } from "./harness.js";

interface SandboxJson {
  sandboxId: string;
  state: string;
  metadata: Record<string, string>;
  sourceSnapshotId: string | null;
}
interface SnapshotJson {
  snapshotId: string;
  sandboxId: string;
  templateId: string;
  name: string | null;
  runtime: string;
  memory: boolean;
  restoreSemantics: string;
  sizeBytes: number;
  manifestSha256: string;
  kid: string;
  signature: string;
  createdAt: string;
  files: { name: string; sizeBytes: number; sha256: string }[];
  metadata: Record<string, string>;
}
interface KeyJson {
  kid: string;
  publicKey: string;
  status: string;
  createdAt: string | null;
  retiredAt?: string;
}
interface ErrorJson {
  code: string;
  message: string;
}

const tag = randomBytes(4).toString("hex");
const HOME_FILE = "/home/user/keep.txt";
const SHARE_FILE = "/mnt/dnah-share/keep.txt";

/** The signing bytes of the snapshot service (services/snapshot README), rebuilt here. */
function signingBytes(s: SnapshotJson): Buffer {
  const str = (v: string) => {
    const b = Buffer.from(v, "utf8");
    const len = Buffer.alloc(4);
    len.writeUInt32BE(b.length);
    return Buffer.concat([len, b]);
  };
  const u64 = (n: number) => {
    const b = Buffer.alloc(8);
    b.writeBigUInt64BE(BigInt(n));
    return b;
  };
  return Buffer.concat([
    Buffer.from("dnah.snapshot.manifest.v1\0", "utf8"),
    str(s.sandboxId),
    str(s.snapshotId),
    str(s.manifestSha256),
    u64(s.sizeBytes),
    u64(Date.parse(s.createdAt)),
    str(s.kid),
  ]);
}

/**
 * Signed snapshots, restore and fork through the native REST API and Connect, on the jail
 * runtime of a real stack (gateway + scheduler + vmm + snapshot service, real Postgres).
 */
describe("snapshots, restore and fork (native API, jail runtime)", () => {
  let s: TestStack;
  let source: SandboxJson;
  let snap: SnapshotJson;
  const sourceKid = { kid: "" };

  async function exec(id: string, command: string): Promise<{ exitCode: number; stdout: string }> {
    const r = await s.json<{ exitCode: number; stdout: string; stderr: string }>(`/v1/sandboxes/${id}/exec`, {
      method: "POST",
      body: JSON.stringify({ command }),
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  }
  async function out(id: string, command: string): Promise<string> {
    const r = await exec(id, command);
    assert.equal(r.exitCode, 0, `${command}: ${JSON.stringify(r)}`);
    return r.stdout.trim();
  }
  async function sandboxIds(): Promise<string[]> {
    const r = await s.json<{ sandboxes: SandboxJson[] }>("/v1/sandboxes");
    assert.equal(r.status, 200);
    return r.body.sandboxes.map((x) => x.sandboxId).sort();
  }
  async function restore(idOrName: string, body: Record<string, unknown> = {}) {
    return s.json<{ sandbox: SandboxJson } & ErrorJson>(
      `/v1/snapshots/${encodeURIComponent(idOrName)}/restore`,
      {
        method: "POST",
        body: JSON.stringify(body),
      },
    );
  }
  async function takeSnapshot(sandboxId: string, body: Record<string, unknown> = {}): Promise<SnapshotJson> {
    const r = await s.json<{ snapshot: SnapshotJson }>(`/v1/sandboxes/${sandboxId}/snapshot`, {
      method: "POST",
      body: JSON.stringify(body),
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body.snapshot;
  }
  async function remove(sandboxId: string): Promise<void> {
    const r = await s.api(`/v1/sandboxes/${sandboxId}`, { method: "DELETE" });
    assert.equal(r.status, 204);
  }
  const folder = (snapshotId: string) => `${s.stateDir}/snapshots/${snapshotId}`;
  const snapshotService = () =>
    createClient(SnapshotService, createConnectTransport({ baseUrl: s.snapshotUrl, httpVersion: "1.1" }));

  /**
   * A restore that must be refused: 409 failed_precondition whose message matches, and no
   * sandbox appears (the list is the same before and after).
   */
  async function assertRefused(idOrName: string, message: RegExp): Promise<string> {
    const before = await sandboxIds();
    const r = await restore(idOrName);
    assert.equal(r.status, 409, JSON.stringify(r.body));
    assert.equal(r.body.code, "failed_precondition");
    assert.match(r.body.message, message);
    assert.deepEqual(await sandboxIds(), before, "a refused restore must start nothing");
    return r.body.message;
  }

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    const r = await s.json<SandboxJson>("/v1/sandboxes", {
      method: "POST",
      body: JSON.stringify({ metadata: { suite: `snap-${tag}` } }),
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    source = r.body;
    assert.equal(source.sourceSnapshotId, null);
    await out(source.sandboxId, `echo home-data > ${HOME_FILE} && echo share-data > ${SHARE_FILE}`);
  });
  after(async () => {
    await s?.close();
  });

  test("a snapshot is signed, and its signature checks out against the listed public key", async () => {
    snap = await takeSnapshot(source.sandboxId, { name: `named-${tag}`, metadata: { purpose: "test" } });
    assert.match(snap.snapshotId, /^snap_[a-z0-9]{20}$/);
    assert.equal(snap.sandboxId, source.sandboxId);
    assert.equal(snap.name, `named-${tag}`);
    assert.deepEqual(snap.metadata, { purpose: "test" });
    assert.equal(snap.runtime, "jail");
    // The jail keeps no memory, and the API says so.
    assert.equal(snap.memory, false);
    assert.equal(snap.restoreSemantics, "disk and share only: processes start again, as after a reboot");
    const names = snap.files.map((f) => f.name);
    for (const f of ["disk.tar", "share.tar", "jail.json"]) assert.ok(names.includes(f), names.join(","));
    assert.equal(
      snap.sizeBytes,
      snap.files.reduce((n, f) => n + f.sizeBytes, 0),
    );
    // The signed digest is the MANIFEST's, on the host.
    const manifest = readFileSync(`${folder(snap.snapshotId)}/MANIFEST`);
    assert.equal(createHash("sha256").update(manifest).digest("hex"), snap.manifestSha256);
    for (const f of snap.files) {
      const bytes = readFileSync(`${folder(snap.snapshotId)}/${f.name}`);
      assert.equal(createHash("sha256").update(bytes).digest("hex"), f.sha256, f.name);
    }

    const keys = await s.json<{ keys: KeyJson[] }>("/v1/snapshot-keys");
    assert.equal(keys.status, 200);
    const key = keys.body.keys.find((k) => k.kid === snap.kid);
    assert.ok(key, `kid ${snap.kid} listed`);
    assert.equal(key.status, "active");
    const publicKey = createPublicKey({
      key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(key.publicKey, "base64").toString("base64url") },
      format: "jwk",
    });
    const signature = Buffer.from(snap.signature, "base64");
    assert.equal(signature.length, 64);
    assert.ok(verify(null, signingBytes(snap), publicKey, signature), "signature verifies");
    sourceKid.kid = snap.kid;

    // The source keeps running.
    assert.equal(await out(source.sandboxId, `cat ${HOME_FILE}`), "home-data");
  });

  test("get by id and by name, list by sandbox, 404 for unknown", async () => {
    const byId = await s.json<{ snapshot: SnapshotJson }>(`/v1/snapshots/${snap.snapshotId}`);
    assert.equal(byId.status, 200);
    assert.deepEqual(byId.body.snapshot, snap);
    const byName = await s.json<{ snapshot: SnapshotJson }>(`/v1/snapshots/named-${tag}`);
    assert.equal(byName.status, 200);
    assert.equal(byName.body.snapshot.snapshotId, snap.snapshotId);
    const list = await s.json<{ snapshots: SnapshotJson[] }>(`/v1/snapshots?sandboxId=${source.sandboxId}`);
    assert.equal(list.status, 200);
    assert.deepEqual(
      list.body.snapshots.map((x) => x.snapshotId),
      [snap.snapshotId],
    );
    const all = await s.json<{ snapshots: SnapshotJson[] }>("/v1/snapshots");
    assert.ok(all.body.snapshots.some((x) => x.snapshotId === snap.snapshotId));
    const none = await s.json<ErrorJson>("/v1/snapshots/snap_00000000000000000000");
    assert.equal(none.status, 404);
    assert.deepEqual(none.body, {
      code: "not_found",
      message: "snapshot 'snap_00000000000000000000' not found",
    });
    const noSandbox = await s.json<ErrorJson>("/v1/sandboxes/nosuchsandbox/snapshot", {
      method: "POST",
      body: "{}",
    });
    assert.equal(noSandbox.status, 404);
    const taken = await s.json<ErrorJson>(`/v1/sandboxes/${source.sandboxId}/snapshot`, {
      method: "POST",
      body: JSON.stringify({ name: `named-${tag}` }),
    });
    assert.equal(taken.status, 409, JSON.stringify(taken.body));
    assert.equal(taken.body.code, "already_exists");
  });

  test("restore: files survive, the clone has its own id and diverges from the source", async () => {
    await out(source.sandboxId, "echo after > /home/user/after.txt");
    const r = await restore(`named-${tag}`, { metadata: { role: "clone" }, envVars: { CLONE_VAR: "yes" } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const clone = r.body.sandbox;
    assert.notEqual(clone.sandboxId, source.sandboxId);
    assert.equal(clone.state, "running");
    assert.equal(clone.sourceSnapshotId, snap.snapshotId);
    assert.deepEqual(clone.metadata, { role: "clone" });
    const got = await s.json<SandboxJson>(`/v1/sandboxes/${clone.sandboxId}`);
    assert.equal(got.body.sourceSnapshotId, snap.snapshotId);

    assert.equal(await out(clone.sandboxId, `cat ${HOME_FILE}`), "home-data");
    assert.equal(await out(clone.sandboxId, `cat ${SHARE_FILE}`), "share-data");
    assert.equal(
      await out(clone.sandboxId, 'echo "$DNAH_SANDBOX_ID $E2B_SANDBOX_ID $CLONE_VAR"'),
      `${clone.sandboxId} ${clone.sandboxId} yes`,
    );
    // Written in the source after the snapshot: not in the clone.
    assert.equal((await exec(clone.sandboxId, "test -e /home/user/after.txt")).exitCode, 1);

    await out(clone.sandboxId, `echo clone-data > ${HOME_FILE} && echo clone-share > ${SHARE_FILE}`);
    assert.equal(await out(source.sandboxId, `cat ${HOME_FILE}`), "home-data");
    assert.equal(await out(source.sandboxId, `cat ${SHARE_FILE}`), "share-data");
    assert.equal(await out(clone.sandboxId, `cat ${HOME_FILE} ${SHARE_FILE}`), "clone-data\nclone-share");
    await remove(clone.sandboxId);
  });

  test("fork: two clones diverge independently, with their own random state; the source keeps running", async () => {
    const before = await s.json<{ snapshots: SnapshotJson[] }>(`/v1/snapshots?sandboxId=${source.sandboxId}`);
    const r = await s.json<{ results: { sandbox?: SandboxJson; error?: string; code?: string }[] }>(
      `/v1/sandboxes/${source.sandboxId}/fork`,
      { method: "POST", body: JSON.stringify({ count: 2, metadata: { role: "fork" } }) },
    );
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.equal(r.body.results.length, 2);
    const clones = r.body.results.map((x) => {
      assert.ok(x.sandbox, JSON.stringify(x));
      return x.sandbox;
    });
    const [a, b] = clones as [SandboxJson, SandboxJson];
    assert.notEqual(a.sandboxId, b.sandboxId);
    for (const c of clones) {
      assert.notEqual(c.sandboxId, source.sandboxId);
      assert.equal(c.state, "running");
      assert.deepEqual(c.metadata, { role: "fork" });
      assert.match(c.sourceSnapshotId ?? "", /^snap_/);
      assert.equal(await out(c.sandboxId, `cat ${HOME_FILE}`), "home-data");
      assert.equal(await out(c.sandboxId, `cat ${SHARE_FILE}`), "share-data");
      assert.equal(await out(c.sandboxId, "echo $DNAH_SANDBOX_ID"), c.sandboxId);
    }
    const source1 = await s.json<SandboxJson>(`/v1/sandboxes/${source.sandboxId}`);
    assert.equal(source1.body.state, "running");
    assert.equal(await out(source.sandboxId, `cat ${HOME_FILE}`), "home-data");

    await out(a.sandboxId, `echo from-a > ${HOME_FILE}`);
    await out(b.sandboxId, `echo from-b > ${HOME_FILE} && echo b-share > ${SHARE_FILE}`);
    assert.equal(await out(a.sandboxId, `cat ${HOME_FILE} ${SHARE_FILE}`), "from-a\nshare-data");
    assert.equal(await out(b.sandboxId, `cat ${HOME_FILE} ${SHARE_FILE}`), "from-b\nb-share");
    assert.equal(await out(source.sandboxId, `cat ${HOME_FILE} ${SHARE_FILE}`), "home-data\nshare-data");

    const random = "head -c16 /dev/urandom | od -An -tx1";
    const ra = await out(a.sandboxId, random);
    const rb = await out(b.sandboxId, random);
    assert.match(ra, /^[0-9a-f ]+$/);
    assert.notEqual(ra, rb);

    // The fork's own snapshot is gone once the clones are up.
    const after = await s.json<{ snapshots: SnapshotJson[] }>(`/v1/snapshots?sandboxId=${source.sandboxId}`);
    assert.deepEqual(
      after.body.snapshots.map((x) => x.snapshotId),
      before.body.snapshots.map((x) => x.snapshotId),
    );
    for (const c of clones) await remove(c.sandboxId);

    const tooMany = await s.json<ErrorJson>(`/v1/sandboxes/${source.sandboxId}/fork`, {
      method: "POST",
      body: JSON.stringify({ count: 17 }),
    });
    assert.equal(tooMany.status, 400);
    assert.match(tooMany.body.message, /from 1 to 16/);
    const unknown = await s.json<ErrorJson>("/v1/sandboxes/nosuchsandbox/fork", {
      method: "POST",
      body: "{}",
    });
    assert.equal(unknown.status, 404);
  });

  /** Changes one file of the snapshot folder for the length of `fn`, then puts it back. */
  async function tampered(name: string, change: (path: string) => void, fn: () => Promise<void>) {
    const path = `${folder(snap.snapshotId)}/${name}`;
    const original = readFileSync(path);
    change(path);
    try {
      await fn();
    } finally {
      writeFileSync(path, original);
    }
  }
  const flipMiddleByte = (path: string) => {
    const b = readFileSync(path);
    const i = Math.floor(b.length / 2);
    b[i] = (b[i] ?? 0) ^ 0x01;
    writeFileSync(path, b);
  };

  test("restore refuses a flipped byte in disk.tar or share.tar, a removed file and a truncated one; nothing starts", async () => {
    await tampered("disk.tar", flipMiddleByte, async () => {
      await assertRefused(snap.snapshotId, /disk\.tar/);
    });
    await tampered("share.tar", flipMiddleByte, async () => {
      await assertRefused(snap.snapshotId, /share\.tar/);
    });
    await tampered(
      "jail.json",
      (p) => rmSync(p),
      async () => {
        await assertRefused(snap.snapshotId, /jail\.json/);
      },
    );
    await tampered(
      "disk.tar",
      (p) => truncateSync(p, Math.floor(readFileSync(p).length / 2)),
      async () => {
        await assertRefused(snap.snapshotId, /disk\.tar/);
      },
    );
    // Put back: the snapshot restores again.
    const r = await restore(snap.snapshotId);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    await remove(r.body.sandbox.sandboxId);
  });

  test("restore refuses a wrong signature and a missing one; nothing starts", async () => {
    const original = Buffer.from(snap.signature, "base64");
    const wrong = Buffer.from(original);
    wrong[0] = (wrong[0] ?? 0) ^ 0x80;
    try {
      await s.db.query("UPDATE snapshots SET signature = $2 WHERE id = $1", [snap.snapshotId, wrong]);
      await assertRefused(snap.snapshotId, /failed verification: signature mismatch/);
      await s.db.query("UPDATE snapshots SET signature = NULL WHERE id = $1", [snap.snapshotId]);
      await assertRefused(snap.snapshotId, /unsigned/);
    } finally {
      await s.db.query("UPDATE snapshots SET signature = $2 WHERE id = $1", [snap.snapshotId, original]);
    }
  });

  test("rotation keeps old snapshots restorable; a retired key's snapshots are refused", async () => {
    const keys = snapshotService();
    const { kid: newKid } = await keys.rotateKey({});
    assert.notEqual(newKid, sourceKid.kid);
    // Rotated, not retired: the old snapshot still restores.
    const r = await restore(snap.snapshotId);
    assert.equal(r.status, 201, JSON.stringify(r.body));
    await remove(r.body.sandbox.sandboxId);
    // New snapshots are signed by the new key.
    const fresh = await takeSnapshot(source.sandboxId);
    assert.equal(fresh.kid, newKid);

    const listed1 = await s.json<{ keys: KeyJson[] }>("/v1/snapshot-keys");
    const status1 = Object.fromEntries(listed1.body.keys.map((k) => [k.kid, k.status]));
    assert.equal(status1[sourceKid.kid], "verifying");
    assert.equal(status1[newKid], "active");

    await keys.retireKey({ kid: sourceKid.kid });
    const message = await assertRefused(snap.snapshotId, /failed verification: retired key/);
    assert.match(message, new RegExp(`kid ${sourceKid.kid}`));
    // The new key's snapshot is unaffected.
    const ok = await restore(fresh.snapshotId);
    assert.equal(ok.status, 201, JSON.stringify(ok.body));
    await remove(ok.body.sandbox.sandboxId);

    const listed2 = await s.json<{ keys: KeyJson[] }>("/v1/snapshot-keys");
    const old = listed2.body.keys.find((k) => k.kid === sourceKid.kid);
    assert.equal(old?.status, "retired");
    assert.ok(old?.retiredAt !== undefined && !Number.isNaN(Date.parse(old.retiredAt)));
    assert.equal(listed2.body.keys.find((k) => k.kid === newKid)?.status, "active");
    for (const k of listed2.body.keys) assert.equal(Buffer.from(k.publicKey, "base64").length, 32);

    const noKey = await fetch(`${s.url}/v1/snapshot-keys`);
    assert.equal(noKey.status, 401);
    assert.equal(((await noKey.json()) as ErrorJson).code, "unauthenticated");
  });

  test("delete removes the record and the folder; afterwards it is 404 everywhere", async () => {
    const doomed = await takeSnapshot(source.sandboxId);
    assert.ok(existsSync(folder(doomed.snapshotId)));
    const del = await s.api(`/v1/snapshots/${doomed.snapshotId}`, { method: "DELETE" });
    assert.equal(del.status, 204);
    assert.equal(existsSync(folder(doomed.snapshotId)), false);
    assert.equal((await s.json(`/v1/snapshots/${doomed.snapshotId}`)).status, 404);
    assert.equal((await restore(doomed.snapshotId)).status, 404);
    assert.equal((await s.api(`/v1/snapshots/${doomed.snapshotId}`, { method: "DELETE" })).status, 404);
  });

  test("the same over Connect", async () => {
    const c = sandboxClient(s);
    const { snapshot } = await c.snapshotSandbox({
      sandboxId: source.sandboxId,
      metadata: { via: "connect" },
    });
    assert.ok(snapshot);
    assert.equal(snapshot.memory, false);
    assert.match(snapshot.restoreSemantics, /processes start again/);
    assert.equal(snapshot.signature.length, 64);
    assert.equal((await c.getSnapshot({ snapshotId: snapshot.snapshotId })).snapshot?.kid, snapshot.kid);
    const listed = await c.listSnapshots({ sandboxId: source.sandboxId });
    assert.ok(listed.snapshots.some((x) => x.snapshotId === snapshot.snapshotId));
    const { sandbox } = await c.restoreSnapshot({ snapshotId: snapshot.snapshotId });
    assert.equal(sandbox?.state, SandboxState.RUNNING);
    assert.equal(sandbox?.sourceSnapshotId, snapshot.snapshotId);
    await c.deleteSandbox({ sandboxId: sandbox!.sandboxId });
    const fork = await c.forkSandbox({ sandboxId: source.sandboxId });
    assert.equal(fork.results.length, 1);
    assert.ok(fork.results[0]?.sandbox);
    await c.deleteSandbox({ sandboxId: fork.results[0].sandbox.sandboxId });
    const keys = await c.listSnapshotKeys({});
    assert.ok(keys.keys.some((k) => k.kid === snapshot.kid && k.status === "active"));
    await c.deleteSnapshot({ snapshotId: snapshot.snapshotId });
    await assert.rejects(c.getSnapshot({ snapshotId: snapshot.snapshotId }), (err) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.NotFound);
      return true;
    });
    // A refusal is FAILED_PRECONDITION with the reason intact.
    await assert.rejects(c.restoreSnapshot({ snapshotId: snap.snapshotId }), (err) => {
      assert.ok(err instanceof ConnectError);
      assert.equal(err.code, Code.FailedPrecondition);
      assert.match(err.rawMessage, /retired key/);
      return true;
    });
  });
});
