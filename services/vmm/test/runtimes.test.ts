/**
 * One suite, run against each runtime on this host: the jail, and real microVMs under qemu
 * (TCG here). create → exec → files → pause / resume → metrics → delete, with nothing left
 * behind. The qemu half is skipped, saying why, only when qemu or the guest kernel is missing.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, rmSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { createLogger, createServiceClient, dialTunnel, silentLogger, TunnelError } from "@dnah/platform";
import { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { configFromEnv, createVmm, type Vmm } from "../src/index.js";
import { cgroupVersion } from "../src/runtime/jail/cgroup.js";
import { JailRuntime } from "../src/runtime/jail/jail.js";
import { QemuRuntime } from "../src/runtime/qemu/qemu.js";
import type { Runtime } from "../src/runtime/runtime.js";
import { ensureNodeRuntime } from "../src/template/node-runtime.js";
import {
  CACHE_DIR,
  exec,
  HOST_PATH,
  prepareQemu,
  QEMU_ACCEL,
  readGuestFile,
  until,
  writeGuestFile,
} from "./qemu-helpers.js";

const qemuPrep = await prepareQemu();
if ("skip" in qemuPrep) process.stderr.write(`runtimes.test: skipping qemu: ${qemuPrep.skip}\n`);

const RUNTIMES = [
  { name: "jail", skip: false as const },
  { name: "qemu", skip: "skip" in qemuPrep ? qemuPrep.skip : (false as const) },
] as const;

for (const rt of RUNTIMES) {
  describe(`runtime ${rt.name}: create → exec → files → pause/resume → delete`, { skip: rt.skip }, () => {
    const suffix = randomBytes(4).toString("hex");
    const stateDir = `/tmp/dnah-rt-${rt.name}-${suffix}`;
    const cgroupParent = `dnah-rt-${suffix}`;
    const id = `rt${suffix}`;
    let vmm: Vmm;
    let client: ReturnType<typeof createServiceClient<typeof VmmService>>;
    let pids: number[] = [];

    before(async () => {
      const logger = silentLogger();
      const runtime: Runtime =
        rt.name === "jail"
          ? new JailRuntime({
              stateDir,
              nodeRuntimeDir: await ensureNodeRuntime(CACHE_DIR),
              agentDir: configFromEnv({}).agentDir,
              cgroupParent,
              pidsMax: 4096,
              hostPath: HOST_PATH,
              logger,
            })
          : new QemuRuntime({
              stateDir,
              accel: QEMU_ACCEL,
              cacheDir: CACHE_DIR,
              cgroupParent,
              pidsMax: 4096,
              hostPath: HOST_PATH,
              logger: createLogger("runtimes-test", { level: "warn" }),
              egress: false,
            });
      vmm = await createVmm(
        configFromEnv({
          DNAH_VMM_PORT: "0",
          DNAH_STATE_DIR: stateDir,
          DNAH_CGROUP_PARENT: cgroupParent,
          DNAH_CACHE_DIR: CACHE_DIR,
          // A TCG boot on a busy 2-core machine takes seconds to tens of seconds.
          DNAH_BOOT_TIMEOUT_MS: "150000",
        }),
        logger,
        { runtime },
      );
      client = createServiceClient(VmmService, await vmm.start());
    });
    after(async () => {
      await client?.deleteVm({ sandboxId: id }, { timeoutMs: 60_000 }).catch(() => {});
      await vmm?.close();
      rmSync(stateDir, { recursive: true, force: true });
    });

    test("create boots the sandbox; its agent answers through the tunnel", { timeout: 180_000 }, async () => {
      const { vm } = await client.createVm(
        { sandboxId: id, templateId: "base", cpuCount: 1, memoryMib: 512 },
        { timeoutMs: 170_000 },
      );
      assert.equal(vm?.runtime, rt.name);
      assert.ok((vm?.bootMs ?? 0) > 0);
      assert.deepEqual(
        (await client.listVms({})).vms.map((v) => v.sandboxId),
        [id],
      );
    });

    test("exec runs commands as root and reports exit codes", { timeout: 120_000 }, async () => {
      const r = await exec(vmm.url, id, "echo hello; id -u; uname -r");
      assert.equal(r.exitCode, 0, r.stderr);
      const [hello, uid, kernel] = r.stdout.trim().split("\n");
      assert.equal(hello, "hello");
      assert.equal(uid, "0");
      // The jail shares the host's kernel; a microVM runs the image's own.
      if (rt.name === "qemu" && "kernelRelease" in qemuPrep) assert.equal(kernel, qemuPrep.kernelRelease);
      if (rt.name === "jail") assert.equal(kernel, (await import("node:os")).release());
      assert.equal((await exec(vmm.url, id, "echo oops >&2; exit 3")).exitCode, 3);
    });

    test("files: an upload reads back and is what exec sees", { timeout: 120_000 }, async () => {
      const content = randomBytes(100_000);
      await writeGuestFile(vmm.url, id, "/tmp/dnah-rt.bin", content);
      const back = await readGuestFile(vmm.url, id, "/tmp/dnah-rt.bin");
      assert.equal(back.status, 200);
      assert.ok(back.body.equals(content));
      const sum = await exec(vmm.url, id, "sha256sum /tmp/dnah-rt.bin | cut -d' ' -f1");
      assert.equal(
        sum.stdout.trim(),
        (await import("node:crypto")).createHash("sha256").update(content).digest("hex"),
      );
      assert.equal((await readGuestFile(vmm.url, id, "/tmp/nope")).status, 404);
    });

    test("pause stops the guest and refuses tunnels; resume brings it back", {
      timeout: 120_000,
    }, async () => {
      await client.pauseVm({ sandboxId: id });
      assert.equal((await client.listVms({})).vms.find((v) => v.sandboxId === id)?.paused, true);
      await assert.rejects(
        dialTunnel(vmm.url, id, 49983),
        (e) => e instanceof TunnelError && e.status === 409,
      );
      await assert.rejects(
        client.pauseVm({ sandboxId: id }),
        (e) => ConnectError.from(e).code === Code.FailedPrecondition,
      );
      await client.resumeVm({ sandboxId: id });
      assert.equal((await client.listVms({})).vms.find((v) => v.sandboxId === id)?.paused, false);
      const r = await exec(vmm.url, id, "cat /tmp/dnah-rt.bin | wc -c");
      assert.equal(r.stdout.trim(), "100000");
    });

    test("metrics report the sandbox's size and use", { timeout: 60_000 }, async () => {
      const m = (await client.getVmMetrics({ sandboxId: id })).metrics!;
      assert.equal(m.cpuCount, 1);
      assert.equal(m.memTotalBytes, 512n * 1024n * 1024n);
      assert.ok(m.memUsedBytes > 0n);
      assert.ok(m.diskTotalBytes > 0n && m.diskUsedBytes > 0n);
      assert.ok(m.cpuUsedPct >= 0 && m.cpuUsedPct <= 100);
    });

    test("delete removes every process, cgroup, namespace and file", { timeout: 120_000 }, async () => {
      pids = (await (vmm.runtime as unknown as { pids?: (i: string) => Promise<number[]> }).pids?.(id)) ?? [];
      const cgroupDirs =
        cgroupVersion() === 2
          ? [`/sys/fs/cgroup/${cgroupParent}/${id}`]
          : ["memory", "cpu", "pids", "freezer"].map((c) => `/sys/fs/cgroup/${c}/${cgroupParent}/${id}`);
      const procs = new Set<number>(pids);
      for (const d of cgroupDirs) {
        try {
          const { readFileSync } = await import("node:fs");
          for (const p of readFileSync(`${d}/cgroup.procs`, "utf8").split("\n").filter(Boolean))
            procs.add(Number(p));
        } catch {
          // controller not mounted
        }
      }
      assert.ok(procs.size > 0, "the sandbox had processes in its cgroup");
      await client.deleteVm({ sandboxId: id }, { timeoutMs: 60_000 });
      assert.equal(existsSync(`${stateDir}/sandboxes/${id}`), false);
      for (const d of cgroupDirs) assert.equal(existsSync(d), false, d);
      assert.equal(existsSync(`/run/netns/${cgroupParent}.${id}`), false);
      await until("the sandbox's processes to be gone", () =>
        [...procs].every((p) => !existsSync(`/proc/${p}`)),
      );
      assert.deepEqual((await client.listVms({})).vms, []);
    });
  });
}
