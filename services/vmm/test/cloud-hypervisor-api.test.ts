import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { request } from "node:http";
import { connect, createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { ChApiClient, ChApiError, ChUnreachableError } from "../src/runtime/cloud-hypervisor/api.js";
import type { VmConfig } from "../src/runtime/cloud-hypervisor/types.js";
import { buildSnapshotConfig, buildVmConfig } from "../src/runtime/cloud-hypervisor/vm-config.js";
import { fakeImage, StandinWrapper } from "./ch-standin/harness.js";

// The CH API client against the CH stand-in (test/ch-standin): a Node program that serves
// Cloud Hypervisor's REST API and checks every request against the vendored upstream schema.
// NO real Cloud Hypervisor and NO KVM run here; these tests prove the control-plane contract
// (bodies, status codes, state machine per release), not that a guest boots.

const root = `/tmp/dnah-chapi-${randomBytes(4).toString("hex")}`;
const procs: ChildProcess[] = [];

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

/** Starts the stand-in as CH `version`, returns a client on its socket. */
async function startCh(
  version: string,
  name: string,
): Promise<{ api: ChApiClient; proc: ChildProcess; wrapper: StandinWrapper; sock: string }> {
  const wrapper = new StandinWrapper(join(root, `bin-${name}`), version);
  const sock = join(root, `${name}.sock`);
  const proc = spawn(wrapper.bin, ["--api-socket", `path=${sock}`, "-v"], {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  proc.stderr?.on("data", (c: Buffer) => {
    stderr += c.toString();
  });
  procs.push(proc);
  await waitFor(() => existsSync(sock) || proc.exitCode !== null, `the stand-in's API socket (${stderr})`);
  assert.equal(proc.exitCode, null, stderr);
  // The file appears at bind(), a moment before listen(): wait until a connect succeeds.
  await waitFor(
    () =>
      new Promise<boolean>((resolve) => {
        const s = connect(sock);
        s.once("connect", () => {
          s.destroy();
          resolve(true);
        });
        s.once("error", () => resolve(false));
      }),
    "the stand-in to listen",
  );
  const api = new ChApiClient(sock, { timeoutMs: 15_000 });
  return { api, proc, wrapper, sock };
}

function vmConfig(img: { kernel: string; initramfs: string; rootDisk: string }, dir: string): VmConfig {
  return buildVmConfig({
    cpuCount: 1,
    memoryMib: 256,
    kernel: img.kernel,
    initramfs: img.initramfs,
    cmdline: "console=ttyS0",
    disk: { path: img.rootDisk, format: "raw" },
    vsockSocket: join(dir, "vsock.sock"),
    serialFile: join(dir, "serial.log"),
  });
}

async function rejects(p: Promise<unknown>): Promise<ChApiError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof ChApiError, `expected ChApiError, got ${String(err)}`);
    return err;
  }
  assert.fail("expected the call to fail");
}

describe("CH API client against the schema-checking CH stand-in (no real CH, no KVM)", () => {
  let img: Awaited<ReturnType<typeof fakeImage>>;
  before(async () => {
    img = await fakeImage(join(root, "image"));
  });
  after(async () => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    await Promise.all(
      procs.map((p) =>
        p.exitCode === null && p.signalCode === null ? new Promise((r) => p.once("exit", r)) : 0,
      ),
    );
    rmSync(root, { recursive: true, force: true });
  });

  test("v53: create → boot → pause → snapshot → resume → shutdown → boot → delete → vmm.shutdown", async () => {
    const { api, proc, wrapper, sock } = await startCh("53.0.0", "seq");
    const dir = join(root, "seq-vm");
    await mkdir(dir);
    const ping = await api.ping();
    assert.equal(ping.version, "53.0.0");
    assert.equal(api.version?.major, 53);
    await api.create(vmConfig(img, dir));
    assert.equal((await api.info()).state, "Created");
    assert.equal(existsSync(join(dir, "serial.log")), true, "CH creates the serial file at vm.create");
    await api.boot();
    assert.equal((await api.info()).state, "Running");
    assert.equal(existsSync(join(dir, "vsock.sock")), true, "vm.boot binds the hybrid vsock socket");
    assert.deepEqual(Object.keys(await api.counters()), ["rootfs"]);
    await api.pause();
    assert.equal((await api.info()).state, "Paused");
    const snap = join(root, "seq-snap");
    await mkdir(snap);
    await api.snapshot(buildSnapshotConfig(snap), 30_000);
    assert.deepEqual(readdirSync(snap).sort(), ["config.json", "memory-ranges", "state.json"]);
    assert.equal(
      JSON.parse(readFileSync(join(snap, "config.json"), "utf8")).vsock.socket,
      join(dir, "vsock.sock"),
    );
    await api.resume();
    assert.equal((await api.info()).state, "Running");
    await api.shutdown();
    assert.equal((await api.info()).state, "Created", "vm.shutdown keeps the config");
    assert.equal(existsSync(join(dir, "vsock.sock")), false);
    await api.boot();
    await api.delete();
    await api.delete(); // idempotent
    const gone = await rejects(api.info());
    assert.equal(gone.status, 404);
    assert.equal(gone.notCreated, true);
    await api.shutdownVmm();
    await waitFor(() => proc.exitCode !== null, "the stand-in to exit");
    assert.equal(proc.exitCode, 0);
    assert.equal(existsSync(sock), false, "CH removes its API socket on exit");
    api.close();
    assert.deepEqual(wrapper.violations(), []);
  });

  test("wrong-state calls fail with CH's chain as the message and cause; status per release", async () => {
    const a = await startCh("53.0.0", "state53");
    const b = await startCh("52.0.0", "state52");
    const c = await startCh("46.0.0", "state46");
    try {
      await a.api.ping(); // the client reads status codes per the release ping reports
      const boot53 = await rejects(a.api.boot());
      assert.equal(boot53.status, 404);
      assert.equal(boot53.notCreated, true);
      assert.deepEqual(boot53.messages, ["Error from API", "The VM could not boot", "VM is not created"]);
      assert.match(boot53.message, /vm\.boot failed \(HTTP 404\): Error from API: The VM could not boot/);
      assert.equal((boot53.cause as Error).message, "The VM could not boot");
      assert.equal(((boot53.cause as Error).cause as Error).message, "VM is not created");

      await b.api.ping();
      const boot52 = await rejects(b.api.boot());
      assert.equal(boot52.status, 500, "before v53 'not created' is a 500");
      assert.equal(boot52.notCreated, true);

      const dir = join(root, "state53-vm");
      await mkdir(dir);
      await a.api.create(vmConfig(img, dir));
      const pause = await rejects(a.api.pause());
      assert.equal(pause.status, 500, "wrong state is a 500, never the documented 405");
      assert.equal(pause.notCreated, false);
      assert.match(pause.message, /Created to Paused/);
      const again = await rejects(a.api.create(vmConfig(img, dir)));
      assert.match(again.message, /already created/);
      await a.api.boot();
      const snap = join(root, "state53-snap");
      await mkdir(snap);
      const running = await rejects(a.api.snapshot(buildSnapshotConfig(snap), 30_000));
      assert.match(running.message, /snapshot while VM is running/);
      const resume = await rejects(a.api.resume());
      assert.match(resume.message, /Running to Running/);

      await c.api.ping();
      const boot46 = await rejects(c.api.boot());
      assert.deepEqual(boot46.messages, ["Error from API"], "v46 sends the top error as plain text");
      for (const w of [a.wrapper, b.wrapper, c.wrapper]) assert.deepEqual(w.violations(), []);
    } finally {
      for (const x of [a, b, c]) {
        await x.api.shutdownVmm().catch(() => {});
        x.api.close();
      }
    }
  });

  test("a deliberately bad body is rejected with 400 and recorded as a contract violation", async () => {
    const { api, wrapper } = await startCh("53.0.0", "bad");
    try {
      const dir = join(root, "bad-vm");
      await mkdir(dir);
      const good = vmConfig(img, dir);
      const bad = { ...good, cpus: { boot_vcpus: 1 }, memroy: { size: 1 } } as unknown as VmConfig;
      const err = await rejects(api.create(bad));
      assert.equal(err.status, 400);
      assert.match(err.message, /max_vcpus/);
      assert.match(err.message, /unknown field 'memroy'/);
      const v = wrapper.violations();
      assert.equal(v.length, 2, v.join("\n"));
      assert.ok(v.every((x) => x.startsWith("PUT vm.create: vm.create VmConfig")));
      // The VM was not created: the same good config is accepted afterwards.
      await api.create(good);
      assert.equal((await api.info()).state, "Created");
    } finally {
      await api.shutdownVmm().catch(() => {});
      api.close();
    }
  });

  test("a chunked request body (what Node sends without Content-Length) is a violation CH cannot read", async () => {
    const { api, wrapper, sock } = await startCh("53.0.0", "chunked");
    try {
      const status = await new Promise<number>((resolve, reject) => {
        const req = request(
          {
            socketPath: sock,
            method: "PUT",
            path: "/api/v1/vm.create",
            headers: { "Content-Type": "application/json" },
          },
          (res) => {
            res.resume();
            resolve(res.statusCode ?? 0);
          },
        );
        req.on("error", reject);
        req.write('{"payload":');
        req.end('{"kernel":"/k"}}');
      });
      assert.equal(status, 400);
      assert.match(wrapper.violations().join("\n"), /chunked/);
    } finally {
      await api.shutdownVmm().catch(() => {});
      api.close();
    }
  });

  test("a CH that never answers times out with a ChUnreachableError; a missing socket fails at once", async () => {
    const sock = join(root, "silent.sock");
    const server: Server = createServer(() => {
      // accept and say nothing
    });
    await new Promise<void>((r) => server.listen(sock, r));
    const api = new ChApiClient(sock, { timeoutMs: 300 });
    try {
      await assert.rejects(api.ping(), (err: Error) => err instanceof ChUnreachableError && err.timedOut);
      const none = new ChApiClient(join(root, "nothing-here.sock"));
      await assert.rejects(
        none.ping(),
        (err: Error) => err instanceof ChUnreachableError && !err.timedOut && /ENOENT/.test(err.message),
      );
      none.close();
    } finally {
      api.close();
      server.close();
    }
  });
});
