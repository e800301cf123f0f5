import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import { request } from "node:http";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { createServiceClient, dialTunnel, silentLogger, TunnelError } from "@dnah/platform";
import { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { configFromEnv, createVmm, type Vmm } from "../src/index.js";

const code = (e: unknown) => ConnectError.from(e).code;

describe("vmm with the jail runtime", () => {
  const suffix = randomBytes(4).toString("hex");
  const stateDir = `/tmp/dnah-vmm-test-${suffix}`;
  let vmm: Vmm;
  let client: ReturnType<typeof createServiceClient<typeof VmmService>>;

  before(async () => {
    // A leftover of an earlier crash: start() must remove it.
    mkdirSync(`${stateDir}/sandboxes/orphan1/upper`, { recursive: true });
    vmm = await createVmm(
      configFromEnv({
        DNAH_VMM_PORT: "0",
        DNAH_STATE_DIR: stateDir,
        DNAH_CGROUP_PARENT: `dnah-vmm-test-${suffix}`,
        DNAH_VMM_CAPACITY: "3",
        ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
      }),
      silentLogger(),
    );
    client = createServiceClient(VmmService, await vmm.start());
  });
  after(async () => {
    await vmm?.close();
    rmSync(stateDir, { recursive: true, force: true });
  });

  test("orphans of an earlier run are removed at start", () => {
    assert.equal(existsSync(`${stateDir}/sandboxes/orphan1`), false);
  });

  test("CreateVm boots a sandbox whose agent answers through the tunnel, DeleteVm removes it", async () => {
    const { vm } = await client.createVm({ sandboxId: "vmmtest1", templateId: "base", envVars: { A: "1" } });
    assert.equal(vm?.runtime, "jail");
    assert.ok((vm?.bootMs ?? 0) > 0);
    assert.deepEqual(
      (await client.listVms({})).vms.map((v) => v.sandboxId),
      ["vmmtest1"],
    );
    const sock = await dialTunnel(vmm.url, "vmmtest1", 49983);
    const body = await new Promise<{ status: number; envd: string | undefined }>((resolve, reject) => {
      const req = request({ createConnection: () => sock, path: "/health", host: "agent" }, (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, envd: res.headers["x-envd-version"] as string | undefined });
      });
      req.on("error", reject);
      req.end();
    });
    sock.destroy();
    assert.equal(body.status, 204);
    assert.ok(body.envd);
    await client.deleteVm({ sandboxId: "vmmtest1" });
    assert.equal(existsSync(`${stateDir}/sandboxes/vmmtest1`), false);
    assert.deepEqual((await client.listVms({})).vms, []);
    // Deleting again succeeds: callers retry.
    await client.deleteVm({ sandboxId: "vmmtest1" });
  });

  test("bad requests get precise codes", async () => {
    await assert.rejects(
      client.createVm({ sandboxId: "Bad/Id", templateId: "base" }),
      (e) => code(e) === Code.InvalidArgument,
    );
    await assert.rejects(
      client.createVm({ sandboxId: "vmmtest2", templateId: "nope" }),
      (e) => code(e) === Code.NotFound,
    );
    await client.createVm({ sandboxId: "vmmtest3", templateId: "base" });
    await assert.rejects(
      client.createVm({ sandboxId: "vmmtest3", templateId: "base" }),
      (e) => code(e) === Code.AlreadyExists,
    );
    await assert.rejects(
      client.configureVm({ sandboxId: "vmmtest9", envVars: {} }),
      (e) => code(e) === Code.NotFound,
    );
    await client.deleteVm({ sandboxId: "vmmtest3" });
  });

  test("capacity is enforced", async () => {
    const ids = ["cap1", "cap2", "cap3"];
    await Promise.all(ids.map((sandboxId) => client.createVm({ sandboxId, templateId: "base" })));
    await assert.rejects(
      client.createVm({ sandboxId: "cap4", templateId: "base" }),
      (e) => code(e) === Code.ResourceExhausted,
    );
    await Promise.all(ids.map((sandboxId) => client.deleteVm({ sandboxId })));
  });

  test("the tunnel refuses unknown sandboxes and bad paths before upgrading", async () => {
    await assert.rejects(
      dialTunnel(vmm.url, "nosuchsandbox", 49983),
      (e) => e instanceof TunnelError && e.status === 404,
    );
    await assert.rejects(
      dialTunnel(vmm.url, "x", 70000),
      (e) => e instanceof TunnelError && e.status === 400,
    );
  });
});
