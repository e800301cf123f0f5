import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import {
  cpSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { request } from "node:http";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { createServiceClient, silentLogger } from "@dnah/platform";
import { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { configFromEnv, createVmm, type Vmm } from "../src/index.js";
import { cgroupVersion } from "../src/runtime/jail/cgroup.js";
import { sha256Hex } from "../src/snapshot/manifest.js";
import { AGENT_PORT, agentRequest } from "../src/vsock/agent-http.js";
import { dialVsock } from "../src/vsock/dialer.js";

const code = (e: unknown) => ConnectError.from(e).code;

/**
 * Runs a shell script in the sandbox through the agent and waits for it to end; as root when
 * asked (the agent takes the user from basic auth, as envd does; sudo cannot work under
 * bubblewrap's no_new_privs).
 */
async function sh(vsock: string, script: string, user = "user"): Promise<void> {
  const start = Buffer.from(
    JSON.stringify({ process: { cmd: "/bin/sh", args: ["-c", script] }, stdin: false }),
  );
  const envelope = Buffer.alloc(5 + start.length);
  envelope.writeUInt32BE(start.length, 1);
  start.copy(envelope, 5);
  const sock = await dialVsock(vsock, AGENT_PORT);
  const { status, body } = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const req = request(
      {
        createConnection: () => sock,
        host: "agent",
        method: "POST",
        path: "/process.Process/Start",
        headers: {
          "content-type": "application/connect+json",
          "content-length": envelope.length,
          "connect-protocol-version": "1",
          authorization: `Basic ${Buffer.from(`${user}:`).toString("base64")}`,
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
        );
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end(envelope);
    // dialVsock hands the socket over paused (after its handshake).
    sock.resume();
  });
  sock.destroy();
  assert.equal(status, 200, body);
  // The stream's end event carries the exit status: a failed script fails the test here.
  assert.match(body, /"exitCode":\s*0\b|"exited":\s*true(?![^}]*"exitCode")/, body);
}

/** A file's bytes as the sandbox sees them, or undefined when it has none. */
async function readInSandbox(vsock: string, path: string): Promise<string | undefined> {
  const r = await agentRequest(vsock, "GET", `/files?path=${encodeURIComponent(path)}`, undefined, 10_000);
  if (r.status === 404) return undefined;
  assert.equal(r.status, 200, r.body);
  return r.body;
}

describe("vmm snapshot / restore / delete with the jail runtime", () => {
  const suffix = randomBytes(4).toString("hex");
  const stateDir = `/tmp/dnah-vmm-snap-${suffix}`;
  const cgroupParent = `dnah-vmm-snap-${suffix}`;
  const snapshots = `${stateDir}/snapshots`;
  let vmm: Vmm;
  let client: ReturnType<typeof createServiceClient<typeof VmmService>>;
  const src = `s${suffix}`;
  const vsockOf = (id: string) => `${stateDir}/sandboxes/${id}/vsock/vsock.sock`;
  let signed: { manifestSha256: string; sizeBytes: bigint };

  before(async () => {
    vmm = await createVmm(
      configFromEnv({
        DNAH_VMM_PORT: "0",
        DNAH_STATE_DIR: stateDir,
        DNAH_CGROUP_PARENT: cgroupParent,
        DNAH_VMM_CAPACITY: "6",
        ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
      }),
      silentLogger(),
    );
    client = createServiceClient(VmmService, await vmm.start());
    await client.createVm({ sandboxId: src, templateId: "base", cpuCount: 1, memoryMib: 256 });
    await sh(
      vsockOf(src),
      "mkdir -p /home/user/work && echo home-before > /home/user/work/a.txt && echo share-before > /mnt/dnah-share/s.txt",
    );
    await sh(
      vsockOf(src),
      "rm /etc/motd && rm -r /etc/skel && mkdir /etc/skel && echo only > /etc/skel/only",
      "root",
    );
    const snap = await client.snapshotVm({ sandboxId: src, snapshotId: "golden" }, { timeoutMs: 120_000 });
    signed = { manifestSha256: snap.manifestSha256, sizeBytes: snap.sizeBytes };
  });
  after(async () => {
    await vmm?.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  test("the snapshot folder holds plain files, listed in MANIFEST whose digest is returned", async () => {
    const manifest = readFileSync(`${snapshots}/golden/MANIFEST`);
    assert.equal(sha256Hex(manifest), signed.manifestSha256);
    const names = manifest
      .toString()
      .trim()
      .split("\n")
      .slice(1)
      .map((l) => l.split(" ")[2]);
    assert.deepEqual(names, ["disk.tar", "jail.json", "share.tar", "snapshot.json"]);
    const sum = names.reduce((n, f) => n + statSync(`${snapshots}/golden/${f}`).size, 0);
    assert.equal(BigInt(sum), signed.sizeBytes);
    assert.equal(statSync(`${snapshots}/golden`).mode & 0o777, 0o700);
    // The source carries on running.
    assert.equal((await client.listVms({})).vms.find((v) => v.sandboxId === src)?.paused, false);
    assert.equal(await readInSandbox(vsockOf(src), "/home/user/work/a.txt"), "home-before\n");
    assert.equal(await readInSandbox(vsockOf(src), "/etc/motd"), undefined);
    assert.equal(await readInSandbox(vsockOf(src), "/etc/skel/.bashrc"), undefined);
  });

  test("a restore has the source's files, its own id, and diverges from the source", async () => {
    const clone = `c${suffix}`;
    const res = await client.restoreVm(
      { snapshotId: "golden", sandboxId: clone, ...signed, envVars: { CLONE: "yes" } },
      { timeoutMs: 120_000 },
    );
    assert.equal(res.vm?.sandboxId, clone);
    assert.equal(res.vm?.templateId, "base");
    assert.equal(res.vm?.runtime, "jail");
    const v = vsockOf(clone);
    assert.equal(await readInSandbox(v, "/home/user/work/a.txt"), "home-before\n");
    assert.equal(await readInSandbox(v, "/mnt/dnah-share/s.txt"), "share-before\n");
    // A deletion in the source (an overlay whiteout) is a deletion in the clone.
    assert.equal(await readInSandbox(v, "/etc/motd"), undefined);
    // A folder removed and made again (an opaque overlay dir) hides the template's files.
    assert.equal(await readInSandbox(v, "/etc/skel/.bashrc"), undefined);
    assert.equal(await readInSandbox(v, "/etc/skel/only"), "only\n");
    const envs = JSON.parse((await agentRequest(v, "GET", "/envs")).body) as Record<string, string>;
    assert.equal(envs.E2B_SANDBOX_ID, clone);
    assert.equal(envs.CLONE, "yes");

    await sh(v, "echo clone > /home/user/work/a.txt && echo clone > /mnt/dnah-share/s.txt");
    assert.equal(await readInSandbox(v, "/home/user/work/a.txt"), "clone\n");
    assert.equal(await readInSandbox(vsockOf(src), "/home/user/work/a.txt"), "home-before\n");
    assert.equal(await readInSandbox(vsockOf(src), "/mnt/dnah-share/s.txt"), "share-before\n");
    await sh(vsockOf(src), "echo source > /home/user/work/b.txt");
    assert.equal(await readInSandbox(v, "/home/user/work/b.txt"), undefined);
    await client.deleteVm({ sandboxId: clone });
  });

  test("a paused sandbox stays paused through a snapshot; ids are checked", async () => {
    await client.pauseVm({ sandboxId: src });
    await client.snapshotVm({ sandboxId: src, snapshotId: "paused" }, { timeoutMs: 120_000 });
    assert.equal((await client.listVms({})).vms.find((v) => v.sandboxId === src)?.paused, true);
    await client.resumeVm({ sandboxId: src });
    await assert.rejects(
      client.snapshotVm({ sandboxId: src, snapshotId: "paused" }),
      (e) => code(e) === Code.AlreadyExists,
    );
    await assert.rejects(
      client.snapshotVm({ sandboxId: "nosuchvm", snapshotId: "x1" }),
      (e) => code(e) === Code.NotFound,
    );
    assert.equal(existsSync(`${snapshots}/x1`), false);
    await assert.rejects(
      client.snapshotVm({ sandboxId: src, snapshotId: "Bad/Id" }),
      (e) => code(e) === Code.InvalidArgument,
    );
    await assert.rejects(
      client.restoreVm({ snapshotId: "nosuchsnap", sandboxId: `n${suffix}`, ...signed }),
      (e) => code(e) === Code.NotFound,
    );
  });

  /** Copies the golden snapshot, spoils the copy, and expects a refusal naming the fault. */
  const tamperCases: Array<
    [string, (dir: string) => void, RegExp, { manifestSha256?: string; sizeBytes?: bigint }?]
  > = [
    ["one flipped byte in disk.tar", (d) => flip(`${d}/disk.tar`), /disk\.tar: changed \(sha256 differs\)/],
    [
      "one flipped byte in share.tar",
      (d) => flip(`${d}/share.tar`),
      /share\.tar: changed \(sha256 differs\)/,
    ],
    ["a removed file", (d) => unlinkSync(`${d}/jail.json`), /jail\.json: missing/],
    ["an extra file", (d) => writeFileSync(`${d}/extra.bin`, "x"), /extra\.bin: not in the signed listing/],
    ["a subfolder", (d) => mkdirSync(`${d}/sub`), /sub: not a plain file/],
    [
      "a truncated file",
      (d) => truncateSync(`${d}/disk.tar`, statSync(`${d}/disk.tar`).size - 512),
      /disk\.tar: truncated \(\d+ bytes, signed \d+\)/,
    ],
    [
      "an edited MANIFEST (valid format, matching the edited file)",
      (d) => {
        const j = readFileSync(`${d}/jail.json`, "utf8").replace('"memoryMib": 256', '"memoryMib": 999');
        const old = sha256Hex(readFileSync(`${d}/jail.json`));
        writeFileSync(`${d}/jail.json`, j);
        const m = readFileSync(`${d}/MANIFEST`, "utf8").replace(old, sha256Hex(Buffer.from(j)));
        writeFileSync(`${d}/MANIFEST`, m);
      },
      /MANIFEST does not match the signed digest/,
    ],
    [
      "a wrong expected digest",
      () => {},
      /MANIFEST does not match the signed digest/,
      { manifestSha256: "0".repeat(64) },
    ],
    ["a wrong expected size", () => {}, /MANIFEST lists \d+ bytes, signed 1/, { sizeBytes: 1n }],
  ];

  for (const [i, [what, spoil, expected, override]] of tamperCases.entries()) {
    test(`restore refuses ${what} and starts nothing`, async () => {
      const snapId = `t${i}`;
      cpSync(`${snapshots}/golden`, `${snapshots}/${snapId}`, { recursive: true, preserveTimestamps: true });
      spoil(`${snapshots}/${snapId}`);
      const clone = `t${i}${suffix}`;
      await assert.rejects(
        client.restoreVm(
          { snapshotId: snapId, sandboxId: clone, ...signed, ...override },
          { timeoutMs: 120_000 },
        ),
        (e) => {
          assert.equal(code(e), Code.FailedPrecondition, String(e));
          assert.match(ConnectError.from(e).rawMessage, expected);
          return true;
        },
      );
      assert.equal(existsSync(`${stateDir}/sandboxes/${clone}`), false);
      const cgroupDirs =
        cgroupVersion() === 2
          ? [`/sys/fs/cgroup/${cgroupParent}/${clone}`]
          : ["memory", "cpu", "pids", "freezer"].map((c) => `/sys/fs/cgroup/${c}/${cgroupParent}/${clone}`);
      for (const d of cgroupDirs) assert.equal(existsSync(d), false, d);
      assert.equal(
        (await client.listVms({})).vms.some((v) => v.sandboxId === clone),
        false,
      );
      await client.deleteSnapshot({ snapshotId: snapId });
    });
  }

  test("DeleteSnapshot removes the folder and is idempotent", async () => {
    assert.ok(existsSync(`${snapshots}/paused`));
    await client.deleteSnapshot({ snapshotId: "paused" });
    assert.equal(existsSync(`${snapshots}/paused`), false);
    await client.deleteSnapshot({ snapshotId: "paused" });
    await assert.rejects(
      client.restoreVm({ snapshotId: "paused", sandboxId: `d${suffix}`, ...signed }),
      (e) => code(e) === Code.NotFound,
    );
    await assert.rejects(
      client.deleteSnapshot({ snapshotId: "../x" }),
      (e) => code(e) === Code.InvalidArgument,
    );
  });
});

/** Flips one bit of the byte in the middle of `path`. */
function flip(path: string): void {
  const b = readFileSync(path);
  const at = Math.floor(b.length / 2);
  b[at] = b[at]! ^ 0x01;
  writeFileSync(path, b);
}
