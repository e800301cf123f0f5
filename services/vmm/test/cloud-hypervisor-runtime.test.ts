import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { createServiceClient, silentLogger } from "@dnah/platform";
import { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { InvalidArgumentError, VmNotFoundError, VmStateError } from "../src/domain/errors.js";
import { configFromEnv, createVmm } from "../src/index.js";
import { CloudHypervisorRuntime, type VmImage } from "../src/runtime/cloud-hypervisor/cloud-hypervisor.js";
import { VM_ROOT } from "../src/runtime/cloud-hypervisor/vm-config.js";
import { listCgroups, removeCgroupParent } from "../src/runtime/jail/cgroup.js";
import type { RestoreHooks, SnapshotHooks, VmSpec } from "../src/runtime/runtime.js";
import { createVmNetwork, listVmNetworks } from "../src/runtime/vm/network.js";
import { dialVsock } from "../src/vsock/dialer.js";
import { fakeImage, StandinWrapper, virtiofsdWrapper } from "./ch-standin/harness.js";

// The real Cloud Hypervisor runtime code (network namespace + TAP, mount namespace, cgroup,
// copy-on-write disk, API client) driven against the CH stand-in in place of the
// cloud-hypervisor binary. NO real Cloud Hypervisor and NO KVM run here, and no guest boots:
// these tests prove the control plane and the host-side plumbing, not a VM.

const suffix = randomBytes(4).toString("hex");
const root = `/tmp/dnah-chrt-${suffix}`;
const stateDir = join(root, "state");
const scope = `dnah-chrt-${suffix}`;
const hostPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

async function waitFor(
  cond: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

/** Hooks that record what they were called with (and when, against the stand-in's calls). */
function recordingHooks(): SnapshotHooks & RestoreHooks & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    whileStopped: async (share) => {
      calls.push(`whileStopped ${share}`);
    },
    beforeStart: async (share) => {
      // The share exists and is empty when the restore's hook runs.
      calls.push(`beforeStart ${share} ${existsSync(share) ? readdirSync(share).length : "missing"}`);
    },
  };
}

/** An empty snapshot folder, as the snapshot layer makes it. */
async function snapFolder(path: string): Promise<string> {
  await mkdir(path, { recursive: true, mode: 0o700 });
  return path;
}

const alive = (pid: number | undefined) => {
  if (pid === undefined) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("cloud-hypervisor runtime against the CH stand-in (no real CH, no KVM, no guest)", () => {
  let image: VmImage;
  const wrapper53 = new StandinWrapper(join(root, "bin"), "53.0.0");
  const wrapper51 = new StandinWrapper(join(root, "bin"), "51.0.0");
  const wrapper50 = new StandinWrapper(join(root, "bin"), "50.0.0");
  const runtimes: CloudHypervisorRuntime[] = [];
  const exits: Array<[string, string]> = [];

  const runtime = (bin: string, img?: VmImage, share = false) => {
    const rt = new CloudHypervisorRuntime({
      ...(share
        ? { virtiofsd: { path: virtiofsdWrapper(join(root, "bin")), flavour: "rust" as const } }
        : {}),
      stateDir,
      binary: bin,
      cgroupParent: scope,
      pidsMax: 256,
      hostPath,
      logger: silentLogger(),
      findImage: async () => img ?? image,
      egress: false,
      apiTimeoutMs: 15_000,
      startTimeoutMs: 30_000,
    });
    rt.onExit((id, reason) => exits.push([id, reason]));
    runtimes.push(rt);
    return rt;
  };
  const spec = (id: string, over: Partial<VmSpec> = {}): VmSpec => ({
    sandboxId: id,
    template: { templateId: "base", rootfsDir: "/nonexistent" },
    cpuCount: 1,
    memoryMib: 256,
    background: false,
    ...over,
  });

  before(async () => {
    image = await fakeImage(join(root, "image"));
  });

  after(async () => {
    for (const rt of runtimes) {
      await rt.reclaimOrphans(new Set()).catch(() => []);
      await rt.dispose().catch(() => {});
    }
    await removeCgroupParent(scope).catch(() => {});
    rmSync(root, { recursive: true, force: true });
  });

  test("start: CH runs in its own network and mount namespace, with a TAP, a CoW disk and a bound vsock", async () => {
    const rt = runtime(wrapper53.bin);
    const vm = await rt.start(spec("chrt1"));
    try {
      const pid = rt.pid("chrt1")!;
      assert.ok(alive(pid));
      assert.equal(rt.isRunning("chrt1"), true);
      assert.notEqual(readlinkSync(`/proc/${pid}/ns/net`), readlinkSync("/proc/self/ns/net"));
      assert.notEqual(readlinkSync(`/proc/${pid}/ns/mnt`), readlinkSync("/proc/self/ns/mnt"));
      // The stand-in checked at vm.boot that the TAP exists in its namespace; see it from here too.
      assert.deepEqual(await listVmNetworks(scope), ["chrt1"]);
      const dir = join(stateDir, "sandboxes", "chrt1");
      assert.equal(vm.vsockPath, join(dir, "vsock.sock"), "the vmm's vsock front");
      assert.equal(existsSync(vm.vsockPath), true);
      assert.equal(existsSync(join(dir, "vm.vsock")), true, "CH bound its hybrid-vsock socket at vm.boot");
      const files = readdirSync(dir);
      assert.ok(
        files.some((f) => /^rootfs\.(raw|qcow2)$/.test(f)),
        files.join(","),
      );
      assert.ok(files.includes("serial.log"));
      assert.deepEqual(await listCgroups(scope), ["chrt1"]);
      // No guest runs: CH answers CONNECT with EOF as when nothing listens, and so does the front.
      await assert.rejects(dialVsock(vm.vsockPath, 49983, 5_000), /closed during handshake/);
      const m = await rt.metrics("chrt1");
      assert.equal(m.cpuCount, 1);
      assert.equal(m.memTotalBytes, 256 * 1024 * 1024);
      assert.ok(m.memUsedBytes > 0 && m.memUsedBytes <= m.memTotalBytes);
      assert.equal(m.diskTotalBytes, 64 * 1024 * 1024, "the guest sees the base image's size");
      assert.deepEqual(Object.keys(await rt.counters("chrt1")), ["rootfs", "net0"]);
    } finally {
      await rt.destroy("chrt1");
    }
  });

  test("pause / resume go through vm.pause / vm.resume; wrong states are VmStateError", async () => {
    const rt = runtime(wrapper53.bin);
    await rt.start(spec("chrt2"));
    try {
      await assert.rejects(rt.resume("chrt2"), VmStateError);
      await rt.pause("chrt2");
      assert.equal(rt.isPaused("chrt2"), true);
      await assert.rejects(rt.pause("chrt2"), VmStateError);
      await rt.resume("chrt2");
      assert.equal(rt.isPaused("chrt2"), false);
      await assert.rejects(rt.pause("nosuch"), VmNotFoundError);
      const calls = wrapper53
        .records()
        .filter((r) => r.pid === rt.pid("chrt2"))
        .map((r) => `${r.endpoint} ${r.status}`);
      assert.deepEqual(
        calls.filter((c) => /^vm\.(pause|resume)/.test(c)),
        ["vm.pause 204", "vm.resume 204"],
        "the runtime refuses wrong-state calls before they reach CH",
      );
    } finally {
      await rt.destroy("chrt2");
    }
  });

  test("snapshot writes CH's files plus the disk; restore brings it up in another sandbox, paused or running", async () => {
    const rt = runtime(wrapper53.bin);
    assert.equal(rt.pauseReleasesMemory, false, "vm.pause keeps the guest's RAM in CH");
    await rt.start(spec("chrt3", { memoryMib: 320, cpuCount: 2 }));
    const snap = await snapFolder(join(root, "snap3"));
    try {
      await assert.rejects(
        rt.snapshot("chrt3", join(stateDir, "sandboxes", "chrt3", "in"), recordingHooks()),
        InvalidArgumentError,
      );
      const hooks = recordingHooks();
      const meta = await rt.snapshot("chrt3", snap, hooks);
      assert.deepEqual(meta, { memory: true, templateId: "base", cpuCount: 2, memoryMib: 320 });
      assert.deepEqual(hooks.calls, [`whileStopped ${join(stateDir, "sandboxes", "chrt3", "share")}`]);
      assert.equal(rt.isPaused("chrt3"), false, "a running sandbox is resumed after its snapshot");
      const files = readdirSync(snap).sort();
      const disk = files.find((f) => /^rootfs\.(raw|qcow2)$/.test(f));
      assert.ok(disk, files.join(","));
      assert.deepEqual(files, ["config.json", "dnah-snapshot.json", "memory-ranges", disk, "state.json"]);
      // Plain files only: the snapshot layer signs a flat folder.
      for (const f of files) assert.ok(statSync(join(snap, f)).isFile(), f);
      const cfg = JSON.parse(readFileSync(join(snap, "config.json"), "utf8"));
      assert.equal(cfg.vsock.socket, `${VM_ROOT}/vm.vsock`, "paths are the fixed in-namespace ones");
      assert.equal(cfg.memory.size, 320 * 1024 * 1024);
      assert.match(cfg.payload.cmdline, /dnah\.hostname=sandbox-chrt3 /, "hostname rule: sandbox-<id[:12]>");

      // The whileStopped hook failing removes what the runtime wrote and resumes the sandbox.
      const failed = await snapFolder(join(root, "snap3-failed"));
      await assert.rejects(
        rt.snapshot("chrt3", failed, {
          whileStopped: async () => {
            throw new Error("share copy failed");
          },
        }),
        /share copy failed/,
      );
      assert.deepEqual(readdirSync(failed), []);
      assert.equal(rt.isPaused("chrt3"), false);

      // A template other than the snapshot's is refused before anything starts.
      await assert.rejects(
        rt.restore(
          spec("chrtx", { template: { templateId: "other", rootfsDir: "/x" } }),
          snap,
          recordingHooks(),
        ),
        InvalidArgumentError,
      );
      assert.equal(existsSync(join(stateDir, "sandboxes", "chrtx")), false);

      const restoreHooks = recordingHooks();
      const running = await rt.restore(spec("chrt4"), snap, restoreHooks);
      assert.deepEqual(restoreHooks.calls, [
        `beforeStart ${join(stateDir, "sandboxes", "chrt4", "share")} 0`,
      ]);
      assert.equal(rt.isPaused("chrt4"), false);
      assert.equal(existsSync(running.vsockPath), true);
      assert.equal((await rt.metrics("chrt4")).cpuCount, 2, "size comes from the snapshot");
      const paused = await rt.restore(spec("chrt5"), snap, recordingHooks(), false);
      assert.equal(rt.isPaused("chrt5"), true);
      await rt.resume("chrt5");
      assert.ok(paused.vsockPath.endsWith("/chrt5/vsock.sock"));
    } finally {
      for (const id of ["chrt3", "chrt4", "chrt5"]) await rt.destroy(id).catch(() => {});
    }
  });

  test("with virtiofsd: shared memory, an fs device on its socket, the share on the kernel command line", async () => {
    const rt = runtime(wrapper53.bin, undefined, true);
    await rt.start(spec("chrt13"));
    const snap = await snapFolder(join(root, "snap13"));
    try {
      const dir = join(stateDir, "sandboxes", "chrt13");
      assert.equal(existsSync(join(dir, "share")), true);
      assert.equal(existsSync(join(dir, "virtiofsd.sock")), true);
      await rt.snapshot("chrt13", snap, recordingHooks());
      const cfg = JSON.parse(readFileSync(join(snap, "config.json"), "utf8"));
      assert.equal(cfg.memory.shared, true);
      assert.deepEqual(cfg.fs, [
        {
          tag: "dnah-share",
          socket: `${VM_ROOT}/virtiofsd.sock`,
          num_queues: 1,
          queue_size: 1024,
          id: "fs0",
        },
      ]);
      assert.match(cfg.payload.cmdline, /dnah\.share=dnah-share/);
      assert.match(cfg.payload.cmdline, /dnah\.id=chrt13/);
    } finally {
      await rt.destroy("chrt13");
    }
    assert.equal(existsSync(join(stateDir, "sandboxes", "chrt13")), false);
  });

  test("v51 has no RestoreConfig.resume: the runtime resumes explicitly after vm.restore", async () => {
    const rt53 = runtime(wrapper53.bin);
    await rt53.start(spec("chrt6"));
    const snap = await snapFolder(join(root, "snap6"));
    try {
      await rt53.pause("chrt6");
      await rt53.snapshot("chrt6", snap, recordingHooks());
      assert.equal(rt53.isPaused("chrt6"), true, "a paused sandbox stays paused after its snapshot");
      const rt51 = runtime(wrapper51.bin);
      await rt51.restore(spec("chrt7"), snap, recordingHooks());
      assert.equal(rt51.isPaused("chrt7"), false);
      const calls = wrapper51.records().map((r) => `${r.endpoint} ${r.status}`);
      assert.deepEqual(
        calls.filter((c) => !c.startsWith("vm.info") && !c.startsWith("vmm.ping")),
        ["vm.restore 204", "vm.resume 204"],
      );
      await rt51.destroy("chrt7");
    } finally {
      await rt53.destroy("chrt6").catch(() => {});
    }
  });

  test("destroy removes the CH process, namespace, cgroup and folder; a CH that dies is reported", async () => {
    const rt = runtime(wrapper53.bin);
    await rt.start(spec("chrt8"));
    const pid = rt.pid("chrt8")!;
    await rt.destroy("chrt8");
    assert.equal(alive(pid), false);
    assert.equal(existsSync(join(stateDir, "sandboxes", "chrt8")), false);
    assert.deepEqual(await listVmNetworks(scope), []);
    assert.deepEqual(await listCgroups(scope), []);
    await assert.rejects(rt.destroy("chrt8"), VmNotFoundError);

    await rt.start(spec("chrt9"));
    process.kill(rt.pid("chrt9")!, "SIGKILL");
    await waitFor(() => exits.some(([id]) => id === "chrt9"), "the exit report");
    assert.match(exits.find(([id]) => id === "chrt9")![1], /SIGKILL/);
    assert.equal(rt.isRunning("chrt9"), false);
    await assert.rejects(rt.pause("chrt9"), VmNotFoundError);
    await rt.destroy("chrt9");
    assert.equal(existsSync(join(stateDir, "sandboxes", "chrt9")), false);
    assert.deepEqual(await listVmNetworks(scope), []);
  });

  test("failed starts clean up: too old a CH, a kernel CH cannot open", async () => {
    const old = runtime(wrapper50.bin);
    await assert.rejects(old.start(spec("chrt10")), (err: Error) => {
      assert.match(err.message, /50\.0\.0 is too old: dnah needs v51\.0 or later/);
      return true;
    });
    const broken = runtime(wrapper53.bin, { ...image, kernel: join(root, "image", "missing-vmlinuz") });
    await assert.rejects(broken.start(spec("chrt11")), (err: Error) => {
      assert.match(err.message, /vm\.boot failed \(HTTP 500\).*Cannot open kernel/);
      return true;
    });
    assert.deepEqual(readdirSync(join(stateDir, "sandboxes")), []);
    assert.deepEqual(await listVmNetworks(scope), []);
    assert.deepEqual(await listCgroups(scope), []);
  });

  test("reclaimOrphans removes a crashed vmm's namespace, cgroup and folder", async () => {
    const rt = runtime(wrapper53.bin);
    const env = { PATH: hostPath };
    await createVmNetwork(scope, "orphan1", false, env);
    await mkdir(join(stateDir, "sandboxes", "orphan1"), { recursive: true });
    await rt.start(spec("chrt12"));
    try {
      assert.deepEqual(await rt.reclaimOrphans(new Set()), ["orphan1"]);
      assert.deepEqual(await listVmNetworks(scope), ["chrt12"]);
      assert.equal(existsSync(join(stateDir, "sandboxes", "orphan1")), false);
      assert.equal(rt.isRunning("chrt12"), true, "its own sandboxes are kept");
    } finally {
      await rt.destroy("chrt12");
    }
  });

  test("the vmm selects it for DNAH_RUNTIME=cloud-hypervisor + DNAH_CH_BIN and reports it", async () => {
    const vmm = await createVmm(
      configFromEnv({
        DNAH_VMM_PORT: "0",
        DNAH_STATE_DIR: join(root, "vmm-state"),
        DNAH_CGROUP_PARENT: `${scope}-vmm`,
        DNAH_RUNTIME: "cloud-hypervisor",
        DNAH_CH_BIN: wrapper53.bin,
      }),
      silentLogger(),
    );
    try {
      assert.equal(vmm.runtime.name, "cloud-hypervisor");
      const client = createServiceClient(VmmService, await vmm.start());
      const info = await client.getHostInfo({});
      assert.equal(info.runtime, "cloud-hypervisor");
      assert.match(info.isolation, /microVM/);
    } finally {
      await vmm.close();
    }
    await assert.rejects(
      createVmm(
        configFromEnv({
          DNAH_VMM_PORT: "0",
          DNAH_STATE_DIR: join(root, "vmm-state"),
          DNAH_CGROUP_PARENT: `${scope}-vmm`,
          DNAH_RUNTIME: "cloud-hypervisor",
          DNAH_CH_BIN: wrapper50.bin,
        }),
        silentLogger(),
      ),
      /too old/,
      "a too-old CH stops the vmm at start, not at the first CreateVm",
    );
  });

  test("no request the runtime sent violated the upstream schema or CH's HTTP rules", () => {
    for (const w of [wrapper53, wrapper51, wrapper50]) assert.deepEqual(w.violations(), []);
    assert.ok(wrapper53.records().length > 20, "the stand-in saw the runtime's calls");
  });
});
