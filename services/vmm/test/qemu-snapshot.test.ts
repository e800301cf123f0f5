/**
 * qemu memory snapshot and restore with real VMs (q35, TCG here): a guest process keeps
 * running across the snapshot in the source and in a clone restored under a new sandbox id,
 * files survive, the clone's agent answers over its own vsock, its clock is the host's, its
 * init was reseeded and mounted its own share. Skipped, saying why, only when qemu or the
 * kernel is missing.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { after, before, describe, test } from "node:test";
import { createLogger } from "@dnah/platform";
import { DEFAULT_DEBIAN_MIRROR } from "../src/config.js";
import { InvalidArgumentError } from "../src/domain/errors.js";
import { qemuArgs } from "../src/runtime/qemu/args.js";
import { QemuRuntime } from "../src/runtime/qemu/qemu.js";
import {
  execUri,
  MEMORY_FILE,
  parseSnapshotMeta,
  readSnapshotMeta,
  SNAPSHOT_MANIFEST,
} from "../src/runtime/qemu/snapshot.js";
import type { TemplateImage } from "../src/runtime/runtime.js";
import { dialGuestPort, GUEST_AGENT_PORT } from "../src/runtime/vm/vsock-front.js";
import { buildTemplate } from "../src/template/build.js";
import { CACHE_DIR, HOST_PATH, prepareQemu, until } from "./qemu-helpers.js";

const prep = await prepareQemu();
if ("skip" in prep) process.stderr.write(`qemu-snapshot.test: skipping: ${prep.skip}\n`);

/**
 * Runs `bash -c script` through the agent's process.Process/Start, dialling the VM's vsock
 * front directly (the restored clone is not registered with a vmm).
 */
async function agentExec(
  vsockPath: string,
  script: string,
  timeoutMs = 30_000,
): Promise<{ stdout: string; exitCode: number }> {
  const msg = Buffer.from(
    JSON.stringify({ process: { cmd: "/bin/bash", args: ["-c", script] }, stdin: false }),
  );
  const envelope = Buffer.alloc(5 + msg.length);
  envelope.writeUInt32BE(msg.length, 1);
  msg.copy(envelope, 5);
  const sock = await dialGuestPort(vsockPath, GUEST_AGENT_PORT, 5_000);
  let timer: NodeJS.Timeout | undefined;
  try {
    const body = await new Promise<Buffer>((resolve, reject) => {
      const req = request(
        {
          createConnection: () => sock,
          host: "agent",
          method: "POST",
          path: "/process.Process/Start",
          headers: {
            "content-type": "application/connect+json",
            "connect-protocol-version": "1",
            "connect-timeout-ms": timeoutMs,
            "content-length": envelope.length,
            authorization: `Basic ${Buffer.from("root:").toString("base64")}`,
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            res.statusCode === 200
              ? resolve(Buffer.concat(chunks))
              : reject(new Error(`Start answered ${res.statusCode}`)),
          );
          res.on("error", reject);
        },
      );
      timer = setTimeout(() => req.destroy(new Error("exec timed out")), timeoutMs + 5_000);
      req.on("error", reject);
      // dialGuestPort hands the stream over paused; the HTTP parser only adds a listener.
      req.on("socket", (s) => s.resume());
      req.end(envelope);
    });
    let stdout = "";
    let exitCode = -1;
    for (let off = 0; off + 5 <= body.length; ) {
      const len = body.readUInt32BE(off + 1);
      const frame = JSON.parse(body.subarray(off + 5, off + 5 + len).toString("utf8")) as {
        event?: { data?: { stdout?: string }; end?: { exitCode?: number } };
        error?: { message?: string };
      };
      if (frame.error) throw new Error(`Start stream failed: ${frame.error.message}`);
      off += 5 + len;
      if (frame.event?.data?.stdout)
        stdout += Buffer.from(frame.event.data.stdout, "base64").toString("utf8");
      if (frame.event?.end) exitCode = frame.event.end.exitCode ?? 0;
    }
    return { stdout, exitCode };
  } finally {
    clearTimeout(timer);
    sock.destroy();
  }
}

/** Polls until `script` exits 0 through the agent; resolves with its output. */
async function execWhenUp(vsockPath: string, script: string, timeoutMs: number): Promise<string> {
  let out = "";
  let last = "";
  await until(
    `the agent to run: ${script}`,
    async () => {
      try {
        const r = await agentExec(vsockPath, script);
        out = r.stdout;
        last = `exit ${r.exitCode}: ${r.stdout}`;
        return r.exitCode === 0;
      } catch (err) {
        last = (err as Error).message;
        await new Promise((r) => setTimeout(r, 500));
        return false;
      }
    },
    timeoutMs,
  ).catch((err: Error) => {
    throw new Error(`${err.message} (last: ${last})`);
  });
  return out;
}

describe("qemu snapshot pieces (no VM)", () => {
  const layout = {
    machine: "q35" as const,
    accelerators: ["tcg"] as const,
    cpuCount: 1,
    memoryMib: 384,
    kernel: "/k",
    initramfs: "/i",
    cmdline: "console=ttyS0",
    disk: { path: "/d.qcow2", format: "qcow2" as const },
    vsockSocket: "/v.sock",
    fs: { socket: "/f.sock", tag: "dnah-share" },
    serialLog: "/s.log",
    qmpSocket: "/q.sock",
    tcgCacheMib: 64,
  };

  test("a restore's command line waits for the state and has no vhost-user device", () => {
    const a = qemuArgs({ ...layout, incoming: true }).join(" ");
    assert.match(a, /-incoming defer/);
    assert.match(a, /pcie-root-port,id=rp1.*pcie-root-port,id=rp2/);
    assert.doesNotMatch(a, /vhost-user|chardev/);
    assert.throws(() => qemuArgs({ ...layout, machine: "microvm", incoming: true }), /no hotplug/);
  });

  test("manifests are validated field by field; state paths are quoted for exec:", () => {
    const good = {
      runtime: "qemu",
      templateId: "base",
      imageKey: "abc",
      machine: "q35",
      cpuCount: 1,
      memoryMib: 384,
      qemuVersion: "7.2.22",
      memory: MEMORY_FILE,
      memoryBytes: 1,
      disk: "root.qcow2",
      createdAt: "2026-01-01T00:00:00.000Z",
    };
    assert.deepEqual(parseSnapshotMeta(JSON.stringify(good), "m"), good);
    assert.throws(
      () => parseSnapshotMeta(JSON.stringify({ ...good, disk: "../etc/passwd", cpuCount: 0 }), "m"),
      (e: Error) => e instanceof InvalidArgumentError && /\(disk, cpuCount\)/.test(e.message),
    );
    assert.throws(() => parseSnapshotMeta("{", "m"), InvalidArgumentError);
    assert.equal(execUri("save", "/a b/memory.bin"), "exec:cat > '/a b/memory.bin'");
    assert.throws(() => execUri("load", "/x'; rm -rf /'"), InvalidArgumentError);
    assert.throws(() => execUri("load", "relative"), InvalidArgumentError);
  });
});

describe("qemu snapshot and restore", { skip: "skip" in prep ? prep.skip : false }, () => {
  const suffix = randomBytes(4).toString("hex");
  const stateDir = `/tmp/dnah-qsnap-${suffix}`;
  const snapDir = `/tmp/dnah-qsnap-${suffix}-snapshot`;
  const cgroupParent = `dnah-qsnap-${suffix}`;
  const src = `qs${suffix}`;
  const clone = `qc${suffix}`;
  let runtime: QemuRuntime;
  let template: TemplateImage;

  before(async () => {
    runtime = new QemuRuntime({
      stateDir,
      cacheDir: CACHE_DIR,
      cgroupParent,
      pidsMax: 4096,
      hostPath: HOST_PATH,
      logger: createLogger("qemu-snapshot-test", { level: "warn" }),
      machine: "q35",
      egress: false,
    });
    const built = await buildTemplate("base", {
      cacheDir: CACHE_DIR,
      mirror: DEFAULT_DEBIAN_MIRROR,
      env: { PATH: HOST_PATH },
    });
    template = { templateId: "base", rootfsDir: built.rootfsDir };
  });

  after(async () => {
    for (const id of [src, clone]) await runtime?.destroy(id).catch(() => {});
    await runtime?.dispose();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(snapDir, { recursive: true, force: true });
    rmSync(`${snapDir}-paused`, { recursive: true, force: true });
    assert.deepEqual(
      readdirSync("/run/netns").filter((n) => n.startsWith(`${cgroupParent}.`)),
      [],
    );
    assert.equal(existsSync(`/sys/fs/cgroup/${cgroupParent}`), false);
  });

  test("a running guest is snapshotted and restored into a new sandbox; both keep running", {
    timeout: 400_000,
  }, async (t) => {
    const spec = (sandboxId: string) => ({
      sandboxId,
      template,
      cpuCount: 1,
      memoryMib: 384,
      background: false,
    });
    const vm = await runtime.start(spec(src));
    await execWhenUp(vm.vsockPath, "true", 180_000);

    // A counter (its own process, pid recorded) and a marker file on the disk.
    const token = randomBytes(8).toString("hex");
    const started = await agentExec(
      vm.vsockPath,
      `echo ${token} > /root/marker && sync && setsid -f sh -c 'echo $$ > /tmp/cpid; i=0; while :; do i=$((i+1)); echo $i > /tmp/c; sleep 0.1; done' >/dev/null 2>&1 </dev/null; echo ok`,
    );
    assert.equal(started.stdout.trim(), "ok");
    await until(
      "the counter to pass 5",
      async () => Number((await agentExec(vm.vsockPath, "cat /tmp/c")).stdout) > 5,
      60_000,
    );
    const before = await agentExec(vm.vsockPath, "cat /tmp/c /tmp/cpid");
    const [countBefore, pid] = before.stdout.trim().split("\n").map(Number);
    assert.ok(countBefore && pid, before.stdout);

    // A snapshot folder inside the sandboxes folder is refused.
    await assert.rejects(runtime.snapshot(src, `${stateDir}/sandboxes/x`), InvalidArgumentError);

    let t0 = Date.now();
    const meta = await runtime.snapshot(src, snapDir);
    const snapshotMs = Date.now() - t0;
    assert.deepEqual(await readSnapshotMeta(snapDir), meta);
    assert.equal(meta.templateId, "base");
    assert.equal(meta.memoryMib, 384);
    assert.equal(statSync(`${snapDir}/${MEMORY_FILE}`).size, meta.memoryBytes);
    // RAM the guest touched is in the stream (at least the kernel, Node and the agent).
    assert.ok(meta.memoryBytes > 30 * 1024 * 1024, `memory file ${meta.memoryBytes} B`);
    assert.ok(existsSync(`${snapDir}/${meta.disk}`));
    assert.ok(existsSync(`${snapDir}/${SNAPSHOT_MANIFEST}`));
    await assert.rejects(runtime.snapshot(src, snapDir), InvalidArgumentError);

    // The source runs on: same counter process, advancing, its share mounted again.
    assert.equal(runtime.isRunning(src), true);
    assert.equal(runtime.isPaused(src), false);
    writeFileSync(`${runtime.paths(src).share}/after-snap.txt`, token);
    const srcAfter = await agentExec(vm.vsockPath, `cat /tmp/cpid; cat /mnt/dnah-share/after-snap.txt`);
    assert.equal(srcAfter.stdout, `${pid}\n${token}`);
    const srcCount = Number((await agentExec(vm.vsockPath, "cat /tmp/c")).stdout);
    await until(
      "the source's counter to advance",
      async () => Number((await agentExec(vm.vsockPath, "cat /tmp/c")).stdout) > srcCount,
      30_000,
    );

    t0 = Date.now();
    const restored = await runtime.restore(spec(clone), snapDir);
    const restoreMs = Date.now() - t0;
    assert.equal(restored.sandboxId, clone);
    assert.notEqual(restored.vsockPath, vm.vsockPath);
    // restore resolves once the guest's control port answered: the agent is up at once.
    const hostBefore = Date.now() / 1000;
    const r = await agentExec(
      restored.vsockPath,
      "cat /tmp/cpid /root/marker /tmp/c; kill -0 $(cat /tmp/cpid) && echo alive; date +%s.%N",
    );
    const hostAfter = Date.now() / 1000;
    const [cpid, marker, count, alive, clock] = r.stdout.trim().split("\n");
    assert.equal(Number(cpid), pid, r.stdout);
    assert.equal(marker, token);
    assert.equal(alive, "alive");
    // The counter continued from the snapshot, not from 0 (it was restored, not restarted).
    assert.ok(Number(count) >= countBefore, `clone counter ${count}, before the snapshot ${countBefore}`);
    // The clone's clock is the host's (it stood still in the file; the control port set it).
    const guestClock = Number(clock);
    assert.ok(
      guestClock >= hostBefore - 3 && guestClock <= hostAfter + 3,
      `guest ${guestClock}, host ${hostBefore}..${hostAfter}`,
    );
    await until(
      "the clone's counter to advance",
      async () => Number((await agentExec(restored.vsockPath, "cat /tmp/c")).stdout) > Number(count),
      30_000,
    );
    // The init took the seed, the clock and the share (3 settings) on the clone's console.
    const serial = readFileSync(runtime.paths(clone).serialLog, "utf8");
    assert.match(serial, /dnah-init: control: 3 settings applied/);
    // The clone has its own share, mounted again after the replug.
    writeFileSync(`${runtime.paths(clone).share}/clone.txt`, `clone-${token}`);
    const share = await agentExec(
      restored.vsockPath,
      "cat /mnt/dnah-share/clone.txt; ls /mnt/dnah-share | grep -c after-snap",
    );
    assert.equal(share.stdout, `clone-${token}0\n`);
    // Its kernel RNG state differs from the source's from here on (both were reseeded).
    const [a, b] = await Promise.all(
      [vm.vsockPath, restored.vsockPath].map((p) => agentExec(p, "head -c 16 /dev/urandom | od -An -tx1")),
    );
    assert.notEqual(a?.stdout, b?.stdout);
    assert.equal(runtime.isRunning(src), true);

    // Input the runtime refuses, with no VM started: another template, a folder that is not
    // a snapshot.
    await assert.rejects(
      runtime.restore({ ...spec(`qx${suffix}`), template: { ...template, templateId: "other" } }, snapDir),
      InvalidArgumentError,
    );
    await assert.rejects(runtime.restore(spec(`qx${suffix}`), stateDir), InvalidArgumentError);

    // A paused sandbox is snapshotted too and stays paused; it resumes and answers after.
    await runtime.pause(src);
    const pausedMeta = await runtime.snapshot(src, `${snapDir}-paused`);
    assert.ok(pausedMeta.memoryBytes > 0);
    assert.equal(runtime.isPaused(src), true);
    await runtime.resume(src);
    assert.equal((await agentExec(vm.vsockPath, "cat /tmp/cpid")).stdout.trim(), String(pid));

    t.diagnostic(
      `snapshot ${snapshotMs} ms, restore ${restoreMs} ms, memory file ${(meta.memoryBytes / 1048576).toFixed(1)} MiB`,
    );
    await runtime.destroy(clone);
    await runtime.destroy(src);
    assert.equal(existsSync(runtime.paths(clone).dir), false);
  });
});
