/**
 * The qemu runtime with real microVMs (TCG here): the agent is reachable only over vsock, two
 * VMs cannot reach each other, any other guest port goes through the guest's forwarder, and
 * the share is visible both ways. Skipped, saying why, only when qemu or the kernel is missing.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { createLogger, createServiceClient, silentLogger } from "@dnah/platform";
import { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { configFromEnv, createVmm, type Vmm } from "../src/index.js";
import { guestCmdline, qemuArgs } from "../src/runtime/qemu/args.js";
import { QemuRuntime } from "../src/runtime/qemu/qemu.js";
import { CACHE_DIR, exec, HOST_PATH, prepareQemu, QEMU_ACCEL, tunnelRequest, until } from "./qemu-helpers.js";

const run = promisify(execFile);
const prep = await prepareQemu();
if ("skip" in prep) process.stderr.write(`qemu.test: skipping: ${prep.skip}\n`);

describe("qemu command line", () => {
  const layout = {
    accelerators: ["kvm", "tcg"] as const,
    cpuCount: 2,
    memoryMib: 512,
    kernel: "/k",
    initramfs: "/i",
    cmdline: "console=ttyS0",
    disk: { path: "/d.qcow2", format: "qcow2" as const },
    tap: { name: "tap0", mac: "02:fc:00:00:00:05" },
    vsockSocket: "/v.sock",
    fs: { socket: "/f.sock", tag: "dnah-share" },
    serialLog: "/s.log",
    qmpSocket: "/q.sock",
    tcgCacheMib: 64,
  };

  test("q35: shared memfd RAM, vhost-user devices on their own root ports", () => {
    const a = qemuArgs({ ...layout, machine: "q35" }).join(" ");
    assert.match(a, /-object memory-backend-memfd,id=mem,size=512M,share=on -machine q35,memory-backend=mem/);
    assert.match(a, /-accel kvm -accel tcg,tb-size=64/);
    assert.match(a, /vhost-user-vsock-pci,chardev=vsc,id=vsock0,bus=rp1/);
    assert.match(a, /vhost-user-fs-pci,chardev=vfsc,tag=dnah-share,id=fs0,bus=rp2/);
    assert.match(a, /-drive file=\/d.qcow2,format=qcow2/);
    assert.doesNotMatch(a, /force-legacy/);
  });

  test("microvm: modern virtio-mmio and tsc_early_khz", () => {
    const a = qemuArgs({ ...layout, machine: "microvm" }).join(" ");
    assert.match(a, /-global virtio-mmio.force-legacy=false/);
    assert.match(a, /vhost-user-vsock-device,chardev=vsc/);
    const base = {
      sandboxId: "x",
      hostname: "sandbox",
      shareTag: "s",
      seedHex: "ab",
      clockSec: 1.7e9,
      net: undefined,
    };
    assert.match(guestCmdline({ ...base, machine: "microvm", tscKhz: 2596122 }), /tsc_early_khz=2596122/);
    assert.doesNotMatch(guestCmdline({ ...base, machine: "q35", tscKhz: 2596122 }), /tsc_early_khz/);
  });
});

describe("qemu runtime: isolation, forwarding, share", { skip: "skip" in prep ? prep.skip : false }, () => {
  const suffix = randomBytes(4).toString("hex");
  const stateDir = `/tmp/dnah-qemu-${suffix}`;
  const cgroupParent = `dnah-qemu-${suffix}`;
  const a = `qa${suffix}`;
  const b = `qb${suffix}`;
  let vmm: Vmm;
  let runtime: QemuRuntime;
  let client: ReturnType<typeof createServiceClient<typeof VmmService>>;

  before(async () => {
    runtime = new QemuRuntime({
      stateDir,
      accel: QEMU_ACCEL,
      cacheDir: CACHE_DIR,
      cgroupParent,
      pidsMax: 4096,
      hostPath: HOST_PATH,
      // Warnings (a VM process that died, and why) end up in the test output.
      logger: createLogger("qemu-test", { level: "warn" }),
    });
    vmm = await createVmm(
      configFromEnv({
        DNAH_VMM_PORT: "0",
        DNAH_STATE_DIR: stateDir,
        DNAH_CGROUP_PARENT: cgroupParent,
        DNAH_CACHE_DIR: CACHE_DIR,
        DNAH_BOOT_TIMEOUT_MS: "170000",
      }),
      silentLogger(),
      { runtime },
    );
    // Leftovers of a crashed vmm with this scope: start() must remove them.
    await run("ip", ["netns", "add", `${cgroupParent}.orphan1`]);
    mkdirSync(`${stateDir}/sandboxes/orphan1`, { recursive: true });
    client = createServiceClient(VmmService, await vmm.start());
    await Promise.all(
      [a, b].map((sandboxId) =>
        client.createVm(
          { sandboxId, templateId: "base", cpuCount: 1, memoryMib: 384 },
          { timeoutMs: 180_000 },
        ),
      ),
    );
  });
  after(async () => {
    for (const sandboxId of [a, b])
      await client?.deleteVm({ sandboxId }, { timeoutMs: 60_000 }).catch(() => {});
    await vmm?.close();
    rmSync(stateDir, { recursive: true, force: true });
    // Nothing of ours may survive: namespaces, cgroups.
    assert.deepEqual(
      readdirSync("/run/netns").filter((n) => n.startsWith(`${cgroupParent}.`)),
      [],
    );
    assert.equal(existsSync(`/sys/fs/cgroup/${cgroupParent}`), false);
  });

  test("orphans of an earlier run (namespace, folder) are removed at start", () => {
    assert.equal(existsSync(`/run/netns/${cgroupParent}.orphan1`), false);
    assert.equal(existsSync(`${stateDir}/sandboxes/orphan1`), false);
  });

  test("after a pause the guest clock is set again from the host", { timeout: 120_000 }, async () => {
    await client.pauseVm({ sandboxId: b });
    await new Promise((r) => setTimeout(r, 4_000));
    await client.resumeVm({ sandboxId: b });
    const before = Date.now() / 1000;
    const r = await exec(vmm.url, b, "date +%s.%N");
    const after = Date.now() / 1000;
    const guest = Number(r.stdout.trim());
    // Stopped vCPUs stop the guest clock; without the reset it would be about 4 s behind.
    assert.ok(guest >= before - 1.5 && guest <= after + 1.5, `guest ${guest}, host ${before}..${after}`);
  });

  test("the guest booted through the image's init; the agent listens on no TCP port", {
    timeout: 120_000,
  }, async () => {
    assert.match(readFileSync(runtime.paths(a).serialLog, "utf8"), /dnah-init: agent started/);
    // State 0A is LISTEN; the agent is reached over AF_VSOCK only.
    const r = await exec(vmm.url, a, "cat /proc/net/tcp /proc/net/tcp6");
    assert.equal(r.exitCode, 0, r.stderr);
    const listening = r.stdout
      .split("\n")
      .slice(1)
      .filter((l) => l.trim().split(/\s+/)[3] === "0A");
    assert.deepEqual(listening, []);
  });

  test("one VM cannot reach another's agent or guest ports, over vsock or the network", {
    timeout: 120_000,
  }, async () => {
    // B serves on 8080; from inside B's own namespace it answers (the control).
    await exec(vmm.url, b, "setsid -f python3 -m http.server 8080 --bind 0.0.0.0 >/dev/null 2>&1");
    const nsB = runtime.paths(b).netns;
    await until(
      "B's server to answer on its TAP",
      async () => {
        try {
          await run("ip", [
            "netns",
            "exec",
            nsB,
            "curl",
            "-sf",
            "-m",
            "2",
            "-o",
            "/dev/null",
            "http://169.254.0.21:8080/",
          ]);
          return true;
        } catch {
          return false;
        }
      },
      60_000,
    );
    const { stdout: addrs } = await run("ip", [
      "netns",
      "exec",
      nsB,
      "ip",
      "-4",
      "-o",
      "addr",
      "show",
      "dev",
      "eth0",
    ]);
    const bNs = /inet (\S+)\//.exec(addrs)?.[1];
    assert.ok(bNs, addrs);
    const probe = `
import socket
def tcp(host, port):
    s = socket.socket(); s.settimeout(3)
    try:
        s.connect((host, port)); return "open"
    except Exception as e:
        return type(e).__name__
    finally:
        s.close()
def vsock(cid, port):
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM); s.settimeout(4)
    try:
        s.connect((cid, port)); return "open"
    except Exception as e:
        return type(e).__name__
    finally:
        s.close()
print("vsock-host-agent", vsock(2, 49983))
print("tcp-b-ns-8080", tcp("${bNs}", 8080))
print("tcp-b-ns-49983", tcp("${bNs}", 49983))
`;
    const r = await exec(vmm.url, a, `python3 - <<'EOF'\n${probe}\nEOF`, 90_000);
    assert.equal(r.exitCode, 0, r.stderr);
    const results = Object.fromEntries(
      r.stdout
        .trim()
        .split("\n")
        .map((l) => l.split(" ") as [string, string]),
    );
    for (const [what, outcome] of Object.entries(results))
      assert.notEqual(outcome, "open", `${what}: ${outcome}`);
    assert.equal(Object.keys(results).length, 3, r.stdout);
  });

  test("a server on guest port 8080 is reachable through the tunnel (the guest's forwarder)", {
    timeout: 120_000,
  }, async () => {
    await exec(vmm.url, a, "mkdir -p /srv/www && echo from-guest-a > /srv/www/hello.txt");
    await exec(
      vmm.url,
      a,
      "cd /srv/www && setsid -f python3 -m http.server 8080 --bind 127.0.0.1 >/dev/null 2>&1",
    );
    let body = "";
    await until(
      "guest port 8080 to answer through the tunnel",
      async () => {
        try {
          const res = await tunnelRequest(
            vmm.url,
            a,
            { port: 8080, method: "GET", path: "/hello.txt" },
            5_000,
          );
          body = res.body.toString();
          return res.status === 200;
        } catch {
          return false;
        }
      },
      60_000,
    );
    assert.equal(body, "from-guest-a\n");
  });

  test("the share is visible both ways", { timeout: 120_000 }, async () => {
    const share = runtime.paths(a).share;
    const token = randomBytes(8).toString("hex");
    writeFileSync(`${share}/from-host.txt`, token);
    const r = await exec(
      vmm.url,
      a,
      `cat /mnt/dnah-share/from-host.txt; echo -n back-${token} > /mnt/dnah-share/from-guest.txt`,
    );
    assert.equal(r.exitCode, 0, r.stderr);
    assert.equal(r.stdout, token);
    assert.equal(readFileSync(`${share}/from-guest.txt`, "utf8"), `back-${token}`);
    // B has its own share.
    assert.equal((await exec(vmm.url, b, "ls /mnt/dnah-share")).stdout.trim(), "");
  });
});
