/**
 * qemu memory snapshot, restore and stop-snap pause with real VMs (q35, TCG here), one VM
 * running at a time where the test allows:
 * - stop-snap: a guest process holding its state in memory survives pause / resume (same pid,
 *   the counter continues), QEMU is gone and the VM's cgroup memory dropped while paused,
 *   host writes to the share show after resume, identity (vsock path, hostname, id) is kept;
 * - snapshot + two restores: each clone has its own hostname, sandbox id and /dev/urandom,
 *   files written before the snapshot are in both, the share comes back through the hooks,
 *   and what one clone writes the other does not see.
 * Skipped, saying why, only when qemu or the kernel is missing.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
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
import type { RestoreHooks, SnapshotHooks, TemplateImage } from "../src/runtime/runtime.js";
import { controlLine, guestHostname } from "../src/runtime/vm/guest-control.js";
import { dialGuestPort, GUEST_AGENT_PORT } from "../src/runtime/vm/vsock-front.js";
import { buildTemplate } from "../src/template/build.js";
import { CACHE_DIR, HOST_PATH, prepareQemu, QEMU_ACCEL, until } from "./qemu-helpers.js";

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

/**
 * This test dials the vsock backend itself, past the front the runtime drains before it stops
 * the queues or unplugs the device: the closes of its last connections get time to reach the
 * guest first (vhost-device-vsock wedges on a close that arrives after).
 */
const backendQuiet = () => new Promise((r) => setTimeout(r, 200));

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

  test("identity: one hostname rule for boot and restore; control lines are checked words", () => {
    assert.equal(guestHostname("abcdefghijklmnopqrst"), "sandbox-abcdefghijkl");
    assert.equal(guestHostname("abc"), "sandbox-abc");
    assert.equal(
      controlLine({
        seedHex: "00ff",
        clockSec: 1.5e9,
        shareTag: "dnah-share",
        hostname: "sandbox-a",
        sandboxId: "a",
      }),
      "seed=00ff clock=1500000000.000 share=dnah-share hostname=sandbox-a id=a\n",
    );
    assert.equal(controlLine({ seedHex: "ab", clockSec: 2e9 }), "seed=ab clock=2000000000.000\n");
    // Nothing a sandbox id or tag could carry may add a word to the line.
    assert.throws(() => controlLine({ seedHex: "ab", clockSec: 2e9, sandboxId: "a b" }), /invalid id/);
    assert.throws(
      () => controlLine({ seedHex: "ab", clockSec: 2e9, hostname: "x\nseed=00" }),
      /invalid hostname/,
    );
    assert.throws(() => controlLine({ seedHex: "zz", clockSec: 2e9 }), /invalid seed/);
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

/** Share hooks as the snapshot layer's: the share goes into `share.tar` and back. */
function tarHooks(snapDir: string): SnapshotHooks & RestoreHooks {
  return {
    whileStopped: async (share) => {
      execFileSync("tar", ["-C", share, "--numeric-owner", "-cf", `${snapDir}/share.tar`, "."]);
    },
    beforeStart: async (share) => {
      assert.deepEqual(readdirSync(share), [], "a restore's share is empty before its hook");
      execFileSync("tar", ["-C", share, "--numeric-owner", "-xf", `${snapDir}/share.tar`]);
    },
  };
}

/** The cgroup's memory in use (cgroup v2 `memory.current`, v1 usage). */
function cgroupMemory(dir: string): number {
  for (const f of [
    `${dir}/memory.current`,
    `${dir.replace("/sys/fs/cgroup/", "/sys/fs/cgroup/memory/")}/memory.usage_in_bytes`,
  ])
    if (existsSync(f)) return Number(readFileSync(f, "utf8"));
  throw new Error(`no memory accounting for ${dir}`);
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("qemu stop-snap pause, snapshot and restore", { skip: "skip" in prep ? prep.skip : false }, () => {
  const suffix = randomBytes(4).toString("hex");
  const stateDir = `/tmp/dnah-qsnap-${suffix}`;
  const snapDir = `/tmp/dnah-qsnap-${suffix}-snapshot`;
  const cgroupParent = `dnah-qsnap-${suffix}`;
  const src = `qs${suffix}`;
  const clones = [`qc${suffix}a`, `qc${suffix}b`];
  let runtime: QemuRuntime;
  let template: TemplateImage;
  const spec = (sandboxId: string) => ({
    sandboxId,
    template,
    cpuCount: 1,
    memoryMib: 384,
    background: false,
  });
  // Set by the first test, read by the second.
  let vsockPath = "";
  let pid = 0;
  let token = "";

  before(async () => {
    runtime = new QemuRuntime({
      stateDir,
      accel: QEMU_ACCEL,
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
    for (const id of [src, ...clones]) await runtime?.destroy(id).catch(() => {});
    await runtime?.dispose();
    rmSync(stateDir, { recursive: true, force: true });
    rmSync(snapDir, { recursive: true, force: true });
    assert.deepEqual(
      readdirSync("/run/netns").filter((n) => n.startsWith(`${cgroupParent}.`)),
      [],
    );
    assert.equal(existsSync(`/sys/fs/cgroup/${cgroupParent}`), false);
  });

  test("stop-snap: pause frees the VM's memory, resume continues the same process", {
    timeout: 400_000,
  }, async (t) => {
    assert.equal(runtime.pauseReleasesMemory, true);
    const vm = await runtime.start(spec(src));
    vsockPath = vm.vsockPath;
    await execWhenUp(vm.vsockPath, "true", 180_000);
    assert.equal(
      (await agentExec(vm.vsockPath, "hostname; cat /etc/hostname")).stdout,
      `${guestHostname(src)}\n${guestHostname(src)}\n`,
    );

    // A counter whose state is a shell variable (its own process, pid recorded) and a marker file.
    token = randomBytes(8).toString("hex");
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
    const seen = await agentExec(vm.vsockPath, "cat /tmp/c /tmp/cpid");
    const [countBefore, cpid] = seen.stdout.trim().split("\n").map(Number);
    assert.ok(countBefore && cpid, seen.stdout);
    pid = cpid;

    const paths = runtime.paths(src);
    const qemuPid = paths.qemuPid;
    assert.ok(qemuPid && alive(qemuPid));
    const memBefore = cgroupMemory(paths.cgroup);
    let t0 = Date.now();
    await backendQuiet();
    await runtime.pause(src);
    const pauseMs = Date.now() - t0;
    assert.equal(runtime.isPaused(src), true);
    assert.equal(runtime.isRunning(src), true, "a stop-snapped sandbox still lives");
    assert.equal(alive(qemuPid), false, "QEMU ended");
    assert.equal(runtime.paths(src).qemuPid, undefined);
    const memFile = `${paths.dir}/paused/${MEMORY_FILE}`;
    const memFileBytes = statSync(memFile).size;
    assert.ok(memFileBytes > 30 * 1024 * 1024, `memory file ${memFileBytes} B`);
    const memPaused = cgroupMemory(paths.cgroup);
    assert.ok(memPaused < memBefore / 2, `cgroup memory ${memBefore} B before, ${memPaused} B paused`);
    const m = await runtime.metrics(src);
    assert.equal(m.memUsedBytes, 0);
    assert.equal(m.cpuUsedPct, 0);
    assert.ok(m.diskTotalBytes > 0);
    // The vsock front stays at its path and refuses while paused.
    assert.ok(existsSync(vm.vsockPath));
    await assert.rejects(agentExec(vm.vsockPath, "true", 5_000));
    // The host writes into the share while the VM is gone.
    writeFileSync(`${paths.share}/while-paused.txt`, token);

    t0 = Date.now();
    await runtime.resume(src);
    const resumeMs = Date.now() - t0;
    assert.equal(runtime.isPaused(src), false);
    assert.equal(existsSync(`${paths.dir}/paused`), false, "the memory file is removed after resume");
    const newQemu = runtime.paths(src).qemuPid;
    assert.ok(newQemu && newQemu !== qemuPid && alive(newQemu));
    const after = await agentExec(
      vm.vsockPath,
      "cat /tmp/cpid /tmp/c /root/marker /mnt/dnah-share/while-paused.txt; echo; hostname; cat /run/dnah/sandbox-id",
    );
    const [pidAfter, countAfter, marker, shared, host, id] = after.stdout.trim().split("\n");
    assert.equal(Number(pidAfter), pid, after.stdout);
    assert.ok(
      Number(countAfter) >= countBefore,
      `counter ${countAfter} after resume, ${countBefore} before pause`,
    );
    assert.equal(marker, token);
    assert.equal(shared, token);
    assert.equal(host, guestHostname(src));
    assert.equal(id, src);
    await until(
      "the counter to advance after resume",
      async () => Number((await agentExec(vm.vsockPath, "cat /tmp/c")).stdout) > Number(countAfter),
      30_000,
    );
    // Paused again, then destroyed while paused: nothing is left.
    await backendQuiet();
    await runtime.pause(src);
    await runtime.resume(src);
    assert.equal((await agentExec(vm.vsockPath, "cat /tmp/cpid")).stdout.trim(), String(pid));
    t.diagnostic(
      `pause ${pauseMs} ms, resume ${resumeMs} ms, memory file ${(memFileBytes / 1048576).toFixed(1)} MiB, cgroup ${(memBefore / 1048576).toFixed(0)} -> ${(memPaused / 1048576).toFixed(0)} MiB`,
    );
  });

  test("snapshot and two restores: clones get their own identity and diverge", {
    timeout: 600_000,
  }, async (t) => {
    assert.ok(pid, "the first test started the source");
    writeFileSync(`${runtime.paths(src).share}/in-share.txt`, token);
    // A snapshot folder inside the sandboxes folder is refused.
    await assert.rejects(
      runtime.snapshot(src, `${stateDir}/sandboxes/x`, tarHooks(snapDir)),
      InvalidArgumentError,
    );
    mkdirSync(snapDir, { mode: 0o700 });
    await backendQuiet();
    let t0 = Date.now();
    const res = await runtime.snapshot(src, snapDir, tarHooks(snapDir));
    const snapshotMs = Date.now() - t0;
    assert.deepEqual(res, { memory: true, templateId: "base", cpuCount: 1, memoryMib: 384 });
    const meta = await readSnapshotMeta(snapDir);
    assert.equal(statSync(`${snapDir}/${MEMORY_FILE}`).size, meta.memoryBytes);
    assert.deepEqual(
      readdirSync(snapDir).sort(),
      [SNAPSHOT_MANIFEST, MEMORY_FILE, meta.disk, "share.tar"].sort(),
    );
    for (const f of readdirSync(snapDir)) assert.ok(statSync(`${snapDir}/${f}`).isFile(), f);
    // The source runs on, the same process, its share mounted again.
    assert.equal(runtime.isPaused(src), false);
    assert.equal(
      (await agentExec(vsockPath, "cat /tmp/cpid /mnt/dnah-share/in-share.txt")).stdout,
      `${pid}\n${token}`,
    );
    // A stop-snapped sandbox is snapshotted from its memory file (QEMU stays gone) and stays
    // paused; destroyed while paused, it leaves nothing behind.
    await backendQuiet();
    await runtime.pause(src);
    const parkedDir = `${snapDir}-parked`;
    mkdirSync(parkedDir, { mode: 0o700 });
    try {
      assert.deepEqual(await runtime.snapshot(src, parkedDir, tarHooks(parkedDir)), res);
      assert.equal(runtime.isPaused(src), true);
      assert.equal(runtime.paths(src).qemuPid, undefined);
      const parkedMeta = await readSnapshotMeta(parkedDir);
      assert.equal(
        statSync(`${parkedDir}/${MEMORY_FILE}`).size,
        statSync(`${runtime.paths(src).dir}/paused/${MEMORY_FILE}`).size,
      );
      assert.ok(existsSync(`${parkedDir}/${parkedMeta.disk}`) && existsSync(`${parkedDir}/share.tar`));
    } finally {
      rmSync(parkedDir, { recursive: true, force: true });
    }
    const { dir, netns, cgroup } = runtime.paths(src);
    await runtime.destroy(src);
    assert.equal(existsSync(dir), false);
    assert.equal(existsSync(`/run/netns/${netns}`), false);
    assert.equal(existsSync(cgroup), false);

    const restoreMs: number[] = [];
    const seen: Record<string, string[]> = {};
    for (const clone of clones) {
      t0 = Date.now();
      const vm = await runtime.restore(spec(clone), snapDir, tarHooks(snapDir));
      restoreMs.push(Date.now() - t0);
      assert.equal(vm.sandboxId, clone);
      const r = await agentExec(
        vm.vsockPath,
        [
          "cat /tmp/cpid /root/marker /mnt/dnah-share/in-share.txt; echo",
          "kill -0 $(cat /tmp/cpid) && echo alive",
          "hostname; cat /etc/hostname /run/dnah/sandbox-id; echo",
          "grep -c dnah-hostname /etc/hosts",
          "head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo",
          // Each clone writes its own file on its disk and in its share.
          `echo ${clone} > /root/mine && echo ${clone} > /mnt/dnah-share/mine-${clone} && sync`,
          "ls /root | grep -c '^mine$'; ls /mnt/dnah-share | grep -c '^mine-'",
        ].join("; "),
      );
      const lines = r.stdout.trim().split("\n");
      const [cpid, marker, shared, alive_, host, etcHost, id, hostsLines, random, mine, mineShare] = lines;
      assert.equal(Number(cpid), pid, r.stdout);
      assert.equal(marker, token, "a file written before the snapshot is in the clone");
      assert.equal(shared, token, "the share came back through the hooks");
      assert.equal(alive_, "alive");
      assert.equal(host, guestHostname(clone));
      assert.equal(etcHost, guestHostname(clone));
      assert.equal(id, clone);
      assert.equal(hostsLines, "1");
      assert.match(random ?? "", /^[0-9a-f]{32}$/);
      // Only its own file: the other clone's writes are not here.
      assert.equal(mine, "1");
      assert.equal(mineShare, "1");
      seen[clone] = [host ?? "", random ?? ""];
      assert.match(
        readFileSync(runtime.paths(clone).serialLog, "utf8"),
        /dnah-init: control: 5 settings applied/,
      );
      // The other clone (destroyed already, or not restored yet) left nothing in this one.
      const other = clones.find((c) => c !== clone);
      const o = await agentExec(
        vm.vsockPath,
        `cat /root/mine; ls /mnt/dnah-share | grep -c ${other} || true`,
      );
      assert.equal(o.stdout, `${clone}\n0\n`);
      await runtime.destroy(clone);
    }
    const [a, b] = clones.map((c) => seen[c] ?? []);
    assert.notEqual(a?.[0], b?.[0], "hostnames differ");
    assert.notEqual(a?.[1], b?.[1], "urandom differs");
    t.diagnostic(
      `snapshot ${snapshotMs} ms (running source), restores ${restoreMs.join(", ")} ms, memory file ${(meta.memoryBytes / 1048576).toFixed(1)} MiB`,
    );
  });
});
