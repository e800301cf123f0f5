import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import type { Socket } from "node:net";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { createServiceClient, dialTunnel, silentLogger, TunnelError } from "@dnah/platform";
import { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { configFromEnv, createVmm, type Vmm } from "../src/index.js";
import { cgroupVersion, cpuUsedPct } from "../src/runtime/jail/cgroup.js";
import { agentRequest } from "../src/vsock/agent-http.js";

const code = (e: unknown) => ConnectError.from(e).code;

/** GET /health through a tunnel; resolves with the status. */
function health(sock: Socket): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ createConnection: () => sock, path: "/health", host: "agent" }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on("error", reject);
    req.end();
  });
}

async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe("cpuUsedPct", () => {
  test("is CPU time over wall time across all CPUs, clamped to 0–100", () => {
    assert.equal(cpuUsedPct({ cpuUsec: 0, atMs: 0 }, { cpuUsec: 500_000, atMs: 1000 }, 1), 50);
    assert.equal(cpuUsedPct({ cpuUsec: 0, atMs: 0 }, { cpuUsec: 500_000, atMs: 1000 }, 2), 25);
    assert.equal(cpuUsedPct({ cpuUsec: 0, atMs: 0 }, { cpuUsec: 3_000_000, atMs: 1000 }, 2), 100);
    assert.equal(cpuUsedPct({ cpuUsec: 10, atMs: 0 }, { cpuUsec: 5, atMs: 1000 }, 1), 0);
    assert.equal(cpuUsedPct({ cpuUsec: 0, atMs: 1000 }, { cpuUsec: 100, atMs: 1000 }, 1), 0);
  });
});

describe("vmm pause / resume / metrics with the jail runtime", () => {
  const suffix = randomBytes(4).toString("hex");
  const stateDir = `/tmp/dnah-vmm-pause-${suffix}`;
  const cgroupParent = `dnah-vmm-pause-${suffix}`;
  let vmm: Vmm;
  let client: ReturnType<typeof createServiceClient<typeof VmmService>>;
  const created = new Set<string>();

  const create = async (sandboxId: string) => {
    created.add(sandboxId);
    await client.createVm({ sandboxId, templateId: "base", cpuCount: 1, memoryMib: 256 });
  };

  before(async () => {
    vmm = await createVmm(
      configFromEnv({
        DNAH_VMM_PORT: "0",
        DNAH_STATE_DIR: stateDir,
        DNAH_CGROUP_PARENT: cgroupParent,
        DNAH_VMM_CAPACITY: "4",
        ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
      }),
      silentLogger(),
    );
    client = createServiceClient(VmmService, await vmm.start());
  });
  after(async () => {
    for (const sandboxId of created) await client?.deleteVm({ sandboxId }).catch(() => {});
    await vmm?.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  test("pause freezes the guest and refuses tunnels with 409; resume brings it back", async () => {
    const id = `p${suffix}a`;
    await create(id);
    const vsock = `${stateDir}/sandboxes/${id}/vsock/vsock.sock`;
    const open = await dialTunnel(vmm.url, id, 49983);
    const closed = new Promise<void>((r) => open.once("close", () => r()));

    await client.pauseVm({ sandboxId: id });
    assert.deepEqual(
      (await client.listVms({})).vms.filter((v) => v.sandboxId === id).map((v) => v.paused),
      [true],
    );
    // A tunnel that was open is cut, so kept-alive clients do not hang on a frozen guest.
    await closed;
    await assert.rejects(dialTunnel(vmm.url, id, 49983), (e) => {
      assert.ok(e instanceof TunnelError);
      assert.equal(e.status, 409);
      assert.equal(e.code, "failed_precondition");
      assert.match(e.message, /is paused; resume it first/);
      return true;
    });
    // Frozen for real: the agent does not answer on its own socket either.
    await assert.rejects(agentRequest(vsock, "GET", "/health", undefined, 1_500));
    await assert.rejects(client.pauseVm({ sandboxId: id }), (e) => code(e) === Code.FailedPrecondition);

    await client.resumeVm({ sandboxId: id });
    assert.equal((await client.listVms({})).vms.find((v) => v.sandboxId === id)?.paused, false);
    const sock = await dialTunnel(vmm.url, id, 49983);
    assert.equal(await health(sock), 204);
    sock.destroy();
    await assert.rejects(client.resumeVm({ sandboxId: id }), (e) => code(e) === Code.FailedPrecondition);
    await client.deleteVm({ sandboxId: id });
  });

  test("unknown and malformed ids get precise codes", async () => {
    for (const call of [
      () => client.pauseVm({ sandboxId: "nosuchvm" }),
      () => client.resumeVm({ sandboxId: "nosuchvm" }),
      () => client.getVmMetrics({ sandboxId: "nosuchvm" }),
    ])
      await assert.rejects(call(), (e) => code(e) === Code.NotFound);
    await assert.rejects(client.pauseVm({ sandboxId: "Bad/Id" }), (e) => code(e) === Code.InvalidArgument);
  });

  test("metrics report the sandbox's limits and see what it writes", async () => {
    const id = `p${suffix}m`;
    await create(id);
    const first = (await client.getVmMetrics({ sandboxId: id })).metrics!;
    assert.equal(first.cpuCount, 1);
    assert.equal(first.memTotalBytes, 256n * 1024n * 1024n);
    assert.ok(first.memUsedBytes > 0n && first.memUsedBytes <= first.memTotalBytes);
    assert.ok(first.memCacheBytes <= first.memUsedBytes);
    assert.ok(first.cpuUsedPct >= 0 && first.cpuUsedPct <= 100);
    assert.ok(first.diskTotalBytes > first.diskUsedBytes);
    assert.ok(Math.abs(Number(first.timestampMs) - Date.now()) < 60_000);
    // What the sandbox writes lands in its overlay's upper layer.
    writeFileSync(`${stateDir}/sandboxes/${id}/upper/blob`, randomBytes(4 * 1024 * 1024));
    const second = (await client.getVmMetrics({ sandboxId: id })).metrics!;
    assert.ok(
      second.diskUsedBytes - first.diskUsedBytes >= 4n * 1024n * 1024n,
      `${first.diskUsedBytes} -> ${second.diskUsedBytes}`,
    );
    // Paused sandboxes can be sampled too.
    await client.pauseVm({ sandboxId: id });
    const paused = (await client.getVmMetrics({ sandboxId: id })).metrics!;
    assert.ok(paused.cpuUsedPct >= 0 && paused.cpuUsedPct <= 100);
    await client.deleteVm({ sandboxId: id });
  });

  test("deleting a paused sandbox finishes and leaves nothing behind", async () => {
    const id = `p${suffix}d`;
    await create(id);
    const pids = await (vmm.runtime as unknown as { pids(id: string): Promise<number[]> }).pids(id);
    assert.ok(pids.length > 0);
    await client.pauseVm({ sandboxId: id });
    await client.deleteVm({ sandboxId: id }, { timeoutMs: 60_000 });
    assert.equal(existsSync(`${stateDir}/sandboxes/${id}`), false);
    const cgroupDirs =
      cgroupVersion() === 2
        ? [`/sys/fs/cgroup/${cgroupParent}/${id}`]
        : ["memory", "cpu", "cpuacct", "pids", "freezer"].map(
            (c) => `/sys/fs/cgroup/${c}/${cgroupParent}/${id}`,
          );
    for (const d of cgroupDirs) assert.equal(existsSync(d), false, d);
    assert.equal(readFileSync("/proc/self/mounts", "utf8").includes(`${stateDir}/sandboxes/${id}`), false);
    await until("the sandbox's processes to be gone", () => pids.every((p) => !existsSync(`/proc/${p}`)));
    assert.deepEqual(
      (await client.listVms({})).vms.filter((v) => v.sandboxId === id),
      [],
    );
  });
});
