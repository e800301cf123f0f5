/**
 * Isolation attacks on the qemu runtime (issue 11): from inside microVM A, as root, with
 * microVM B running on the same host. Each attack is one row of the summary (`tried` /
 * `held`); an attack that gets through is a failure, never a skip.
 *
 * - vsock: every CID (the host's, the local one, A's own, others) on the guest's fixed ports,
 *   the stack's ports and a few common ones. Nothing may answer: the host dials the guest,
 *   never the other way (vhost-device-vsock would connect a guest to `<vm.vsock>_<port>`, and
 *   no such socket exists), and each VM has a backend of its own, so B has no CID A can name.
 * - network: TCP and UDP to every address of the host (a canary listens on all of them), the
 *   stack's ports, the VM namespace's gateway, the metadata address, a user-net gateway.
 *   Egress is on (the default): the guest has a route out, so only the filters hold it.
 * - the share: B's share is not A's; links to `/` and to B's share are not followed by the host
 *   (share reads, tar, uploads), nor are `..` in the URL; fifos and device nodes are refused
 *   without being opened; setuid files and device nodes made by the guest's root are inert on
 *   the host (the share is its own nosuid,nodev filesystem); and the share's size, not the
 *   host's free space, bounds what the guest can write into it.
 * - the host's view: hostname, boot id, kernel, disks, processes and mounts of the host are not
 *   what A sees.
 * - privilege: the setuid binaries in the image are Debian's usual ones. (`user` has
 *   passwordless sudo by design, as in E2B: the VM is the boundary, and the API runs commands
 *   as root on request.)
 * - exhaustion: A's memory (the guest OOM-kills its process; the VM, B and the host stay up),
 *   CPU (B answers while A spins), disk (ENOSPC inside; the host's copy-on-write file stays
 *   small), and logs (a guest flooding its serial console or vsock backend stops at the
 *   vmm's per-file cap).
 *
 * TCG boots; two VMs. `DNAH_ISOLATION_FULL=1` also fills A's disk with real data and floods
 * the serial console up to the cap (minutes under TCG).
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createSocket } from "node:dgram";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statfsSync, statSync, writeFileSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { createServer, type Server } from "node:net";
import { hostname, networkInterfaces, release, tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, test } from "node:test";
import { LOG_CAP_BYTES } from "../../services/vmm/src/runtime/vm/process.js";
import { prepareQemu } from "../../services/vmm/test/qemu-helpers.js";
import { eventually, startTestStack, type TestStack } from "../e2e/harness.js";
import { type AreaTally, record, summaryLines, tally } from "./summary.js";

const FULL = process.env.DNAH_ISOLATION_FULL === "1";
/** A TCG boot on a loaded 2-core machine. */
const CREATE_MS = 150_000;
const SHARE = "/mnt/dnah-share";
/** The guest's fixed vsock ports (`vsock-front.ts`): control, forwarder, agent, interpreter. */
const GUEST_PORTS = [49981, 49982, 49983, 49999];
/** Debian's setuid and setgid programs in the base image; any other is a finding. */
const DEBIAN_SETID = new Set([
  "/usr/bin/chage",
  "/usr/bin/chfn",
  "/usr/bin/chsh",
  "/usr/bin/expiry",
  "/usr/bin/gpasswd",
  "/usr/bin/mount",
  "/usr/bin/newgrp",
  "/usr/bin/passwd",
  "/usr/bin/su",
  "/usr/bin/sudo",
  "/usr/bin/umount",
  "/usr/lib/dbus-1.0/dbus-daemon-launch-helper",
  "/usr/lib/openssh/ssh-keysign",
  "/usr/sbin/unix_chkpwd",
]);

type Exec = { exitCode: number; stdout: string; stderr: string };

/**
 * The guest side of the connection attacks (python3 is in the base image): each argument is
 * `vsock/<cid>:<port>`, `tcp/<host>:<port>` or `udp/<host>:<port>`; all are tried at once
 * (non-blocking) and each prints `<target> CONNECTED|SENT|refused <errno>|TIMEOUT`.
 */
const PROBE = `
import errno, select, socket, sys, time
pending = {}
def say(t, what): print(t, what, flush=True)
for t in sys.argv[1:]:
    kind, rest = t.split("/", 1)
    host, port = rest.rsplit(":", 1)
    host, port = host.strip("[]"), int(port)
    try:
        if kind == "vsock":
            s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM); addr = (int(host), port)
        else:
            fam = socket.AF_INET6 if ":" in host else socket.AF_INET
            s = socket.socket(fam, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
            addr = socket.getaddrinfo(host, port, fam)[0][4]
        if kind == "udp":
            s.sendto(b"dnah-isolation-probe", addr); s.close(); say(t, "SENT"); continue
        s.setblocking(False)
        rc = s.connect_ex(addr)
        if rc in (0, errno.EINPROGRESS): pending[s.fileno()] = (s, t)
        else: say(t, "refused " + errno.errorcode.get(rc, str(rc))); s.close()
    except OSError as e:
        say(t, "refused " + errno.errorcode.get(e.errno or 0, str(e.errno)))
p = select.poll()
for fd in pending: p.register(fd, select.POLLOUT)
deadline = time.time() + 4
while pending and time.time() < deadline:
    for fd, _ in p.poll(100):
        s, t = pending.pop(fd); p.unregister(fd)
        err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        say(t, "CONNECTED" if err == 0 else "refused " + errno.errorcode.get(err, str(err))); s.close()
for s, t in pending.values(): say(t, "TIMEOUT"); s.close()
`;

/** Connects to unknown CIDs without end for `seconds`: each one is a warning in the vsock backend's log. */
const VSOCK_FLOOD = `
import socket, sys, time
end = time.time() + float(sys.argv[1])
while time.time() < end:
    s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM); s.setblocking(False)
    try: s.connect((99, 1234))
    except OSError: pass
    s.close()
`;

/** Maps shared anonymous memory in 64 MiB steps, each populated at once, until stopped. */
const MEMORY_HOG = `
import mmap
m = []
while True:
    m.append(mmap.mmap(-1, 64 << 20))
    m[-1].madvise(23)  # MADV_POPULATE_WRITE
`;

/** Writes a python script into the guest and runs it (the command line carries it in base64). */
const py = (script: string, args: string) =>
  `f=$(mktemp) && echo ${Buffer.from(script).toString("base64")} | base64 -d > $f && python3 $f ${args}`;

/** Host-side listeners on every address (TCP and UDP, v4 and v6): any packet from a guest is a hit. */
async function startCanary(): Promise<{ tcpPort: number; udpPort: number; hits: string[]; close(): void }> {
  const hits: string[] = [];
  const tcp: Server = createServer((c) => {
    hits.push(`tcp from ${c.remoteAddress}`);
    c.destroy();
  });
  await new Promise<void>((r) => tcp.listen({ port: 0, host: "::", ipv6Only: false }, r));
  const udp = createSocket({ type: "udp6", ipv6Only: false });
  udp.on("message", (_m, from) => hits.push(`udp from ${from.address}`));
  await new Promise<void>((r) => udp.bind(0, "::", r));
  return {
    tcpPort: (tcp.address() as { port: number }).port,
    udpPort: udp.address().port,
    hits,
    close() {
      tcp.close();
      udp.close();
    },
  };
}

/** The host's IPv4 and IPv6 addresses (loopback aside: in the guest that is its own). */
function hostAddresses(): { v4: string[]; v6: string[] } {
  const v4: string[] = [];
  const v6: string[] = [];
  for (const [name, addrs] of Object.entries(networkInterfaces())) {
    for (const a of addrs ?? []) {
      if (a.internal) continue;
      if (a.family === "IPv4") v4.push(a.address);
      else v6.push(a.address.startsWith("fe80") ? `${a.address}%eth0` : a.address);
      // The other end of a VM namespace's veth (B's or A's namespace itself).
      if (a.family === "IPv4" && name.startsWith("dnv")) {
        const parts = a.address.split(".").map(Number);
        v4.push([...parts.slice(0, 3), (parts[3] ?? 0) + 1].join("."));
      }
    }
  }
  return { v4, v6 };
}

/** `<target> <outcome>` lines of the probe, by target. */
function outcomes(stdout: string): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of stdout.trim().split("\n")) {
    const i = line.indexOf(" ");
    if (i > 0) m.set(line.slice(0, i), line.slice(i + 1));
  }
  return m;
}

/** Command names of the host's processes. */
function hostProcessNames(): Set<string> {
  const names = new Set<string>();
  for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
    try {
      names.add(readFileSync(`/proc/${pid}/comm`, "utf8").trim());
    } catch {
      // gone meanwhile
    }
  }
  return names;
}

describe("qemu: a hostile microVM cannot reach its neighbour or the host", () => {
  let s: TestStack | undefined;
  let a = "";
  let b = "";
  let canary: Awaited<ReturnType<typeof startCanary>> | undefined;
  const secret = `b-secret-${randomBytes(8).toString("hex")}`;
  const hostTmp = mkdtempSync(join(tmpdir(), "dnah-isolation-"));
  const timings: string[] = [];
  const stack = () => {
    assert.ok(s, "the stack did not start");
    return s;
  };
  const run = async (id: string, command: string, user = "root", timeoutMs = 60_000): Promise<Exec> => {
    const r = await stack().json<Exec>(`/v1/sandboxes/${id}/exec`, {
      method: "POST",
      body: JSON.stringify({ command, timeoutMs, user }),
      signal: AbortSignal.timeout(timeoutMs + 30_000),
    });
    assert.equal(r.status, 200, `${command.slice(0, 80)}: ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const vmDir = (id: string) => `${stack().stateDir}/sandboxes/${id}`;
  /** B and the host still answer (after or during an attack on them from A). */
  const neighbourAnswers = async (): Promise<string | undefined> => {
    const r = await run(b, "echo fine").catch((err: Error) => ({ stdout: err.message }) as Exec);
    if (r.stdout !== "fine\n") return `B did not answer: ${r.stdout}`;
    const h = await fetch(`${stack().url}/health`).catch(() => undefined);
    return h?.status === 200 ? undefined : `the gateway's /health answered ${h?.status}`;
  };
  const timed = async <T>(what: string, fn: () => Promise<T>): Promise<T> => {
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      timings.push(`${what} ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    }
  };
  const report = (t: { diagnostic(m: string): void }, area: AreaTally) => {
    for (const line of summaryLines(area)) t.diagnostic(line);
    assert.deepEqual(area.failures, [], `${area.area}: an attack got through`);
  };

  before(
    async () => {
      const prep = await prepareQemu();
      if ("skip" in prep)
        throw new Error(
          `the qemu runtime cannot run on this host: ${prep.skip} (scripts/setup-host.sh, scripts/prepare.sh)`,
        );
      canary = await startCanary();
      s = await startTestStack({
        DNAH_RUNTIME: "qemu",
        DNAH_POOL_SIZE: "0",
        DNAH_VM_BOOT_TIMEOUT_MS: String(CREATE_MS),
        DNAH_QEMU_ACCEL: process.env.DNAH_QEMU_ACCEL ?? "tcg",
      });
      const create = async () => {
        const r = await stack().json<{ sandboxId: string }>("/v1/sandboxes", {
          method: "POST",
          body: "{}",
          signal: AbortSignal.timeout(CREATE_MS),
        });
        assert.equal(r.status, 201, JSON.stringify(r.body));
        return r.body.sandboxId;
      };
      [a, b] = await timed("create A and B (parallel)", () => Promise.all([create(), create()]));
      writeFileSync(`${stack().shareDir(b)}/b-secret.txt`, secret);
    },
    { timeout: 2 * CREATE_MS + 60_000 },
  );
  after(async () => {
    for (const line of timings) process.stderr.write(`isolation-qemu timing | ${line}\n`);
    canary?.close();
    await s?.close();
    rmSync(hostTmp, { recursive: true, force: true });
  });

  test("vsock: no CID answers A, not the host's, not its own, not B's", { timeout: 60_000 }, async (t) => {
    const area = tally("isolation qemu: vsock");
    const stackPorts = [stack().url, stack().schedulerUrl, stack().vmmUrl, stack().snapshotUrl].map((u) =>
      Number(new URL(u).port),
    );
    const ports = [...GUEST_PORTS, ...stackPorts, 5432, 22, 80, 1024];
    // 2 the host, 1 the guest's local loopback, 3 A itself (every VM is 3 in its own backend,
    // so that is as close to "B's CID" as A can name), 0 the hypervisor, others nobody.
    const cids = [0, 1, 2, 3, 4, 99, 0xfffffffe];
    const targets = cids.flatMap((c) => ports.map((p) => `vsock/${c}:${p}`));
    const r = await timed(`vsock probe (${targets.length} targets)`, () =>
      run(a, py(PROBE, targets.join(" "))),
    );
    const got = outcomes(r.stdout);
    for (const target of targets) {
      const o = got.get(target);
      record(area, o && !o.startsWith("CONNECTED") ? undefined : `${target}: ${o ?? r.stderr}`);
    }
    // The probes did not wedge A's backend: the host still reaches A's agent.
    record(
      area,
      (await run(a, "echo up")).stdout === "up\n" ? undefined : "A's agent unreachable after the probe",
    );
    const dir = vmDir(a);
    record(
      area,
      readdirSync(dir).some((f) => f.startsWith("vm.vsock_"))
        ? "a host socket for guest-initiated connections exists"
        : undefined,
    );
    report(t, area);
  });

  test("network: A reaches no address of the host, no other namespace, no metadata service", {
    timeout: 60_000,
  }, async (t) => {
    assert.ok(canary);
    const area = tally("isolation qemu: network");
    const net = await run(a, "cat /proc/net/dev /proc/net/route; ls /sys/class/net");
    t.diagnostic(`guest interfaces: ${net.stdout.split("\n").slice(-3).join(" ").trim()}`);
    const host = hostAddresses();
    const stackPorts = [stack().url, stack().schedulerUrl, stack().vmmUrl, stack().snapshotUrl].map((u) =>
      Number(new URL(u).port),
    );
    const tcp = [
      ...host.v4.flatMap((h) => [canary!.tcpPort, ...stackPorts, 5432].map((p) => `tcp/${h}:${p}`)),
      ...host.v6.map((h) => `tcp/[${h}]:${canary!.tcpPort}`),
      // The VM namespace's side of the TAP (the guest's gateway), a QEMU user-net host, the
      // cloud metadata address, and the stack's ports on the guest's own loopback.
      `tcp/169.254.0.22:${canary.tcpPort}`,
      "tcp/169.254.0.22:22",
      `tcp/10.0.2.2:${canary.tcpPort}`,
      "tcp/169.254.169.254:80",
      ...stackPorts.map((p) => `tcp/127.0.0.1:${p}`),
    ];
    const udp = [...host.v4, "169.254.0.22"].map((h) => `udp/${h}:${canary!.udpPort}`);
    const r = await timed(`network probe (${tcp.length} tcp, ${udp.length} udp)`, () =>
      run(a, py(PROBE, [...tcp, ...udp].join(" "))),
    );
    const got = outcomes(r.stdout);
    for (const target of tcp) {
      const o = got.get(target);
      record(area, o && !o.startsWith("CONNECTED") ? undefined : `${target}: ${o ?? r.stderr}`);
    }
    // A datagram that left is held only if it never arrived.
    await new Promise((r) => setTimeout(r, 500));
    for (const target of udp)
      record(area, got.has(target) ? undefined : `${target}: no outcome (${r.stderr.slice(0, 200)})`);
    for (const hit of canary.hits) record(area, `the host's canary was reached: ${hit}`);
    report(t, area);
  });

  test("the share: B's is not A's, links and `..` lead nowhere, special files stay inert", {
    timeout: 90_000,
  }, async (t) => {
    const area = tally("isolation qemu: share");
    const api = (path: string, init: RequestInit = {}) =>
      stack().api(path, { ...init, signal: AbortSignal.timeout(15_000) });
    // Sent as written: fetch's URL parser would fold `..` and `%2e%2e` segments first.
    const rawGet = (path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        const u = new URL(stack().url);
        const req = httpRequest(
          { host: u.hostname, port: u.port, path, headers: { authorization: `Bearer ${stack().key}` } },
          (res) => {
            const chunks: Buffer[] = [];
            res.on("data", (c: Buffer) => chunks.push(c));
            res.on("end", () =>
              resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString() }),
            );
            res.on("error", reject);
          },
        );
        req.setTimeout(15_000, () => req.destroy(new Error("no answer in 15 s")));
        req.on("error", reject);
        req.end();
      });
    const refused = async (what: string, path: string) => {
      const res = await rawGet(path).catch((err: Error) => err);
      if (res instanceof Error) return record(area, `${what}: ${res.message}`);
      record(
        area,
        res.status >= 400 && res.status < 500 && !res.body.includes(secret)
          ? undefined
          : `${what}: ${res.status} ${res.body.slice(0, 120)}`,
      );
    };
    const targetFile = join(hostTmp, "target.txt");
    writeFileSync(targetFile, "host file");
    // A's root plants links to the host's root, B's share and B's secret, a link to a host file,
    // a fifo, device nodes (the host's disk numbers among them) and a setuid-root shell.
    const hostRoot = statSync("/");
    const major = Math.floor(hostRoot.dev / 256);
    const minor = hostRoot.dev % 256;
    // On the host, from A's share folder to B's.
    const shareA = stack().shareDir(a);
    const toB = relative(shareA, stack().shareDir(b));
    const plant = await run(
      a,
      [
        `cd ${SHARE}`,
        "ln -s / rootlink",
        `ln -s ${toB} blink`,
        `ln -s ${toB}/b-secret.txt bfile`,
        `ln -s ${targetFile} hostlink`,
        "mkfifo fifo",
        "mknod nulldev c 1 3",
        `mknod hostdisk b ${major} ${minor}`,
        "cp /bin/bash suidsh && chmod 4755 suidsh",
        "ls -la",
        `cat blink/b-secret.txt bfile 2>&1; grep -rs ${secret} ${SHARE}/ /mnt 2>&1; true`,
      ].join(" && "),
    );
    assert.equal(plant.exitCode, 0, plant.stderr);
    record(area, plant.stdout.includes(secret) ? "B's secret is readable in A" : undefined);
    // The host reads A's share without following links, and never opens a fifo or a device.
    for (const p of [
      "rootlink/etc/hostname",
      "blink/b-secret.txt",
      "bfile",
      "hostlink",
      "fifo",
      "nulldev",
      "hostdisk",
    ])
      await refused(`GET share/${p}`, `/v1/sandboxes/${a}/share/${p}`);
    for (const p of [
      `../../${b}/share/b-secret.txt`,
      `%2e%2e/%2e%2e/${b}/share/b-secret.txt`,
      `..%2f..%2f${b}%2fshare%2fb-secret.txt`,
      `%2e%2e%2f%2e%2e%2f${b}%2fshare%2fb-secret.txt`,
    ])
      await refused(`GET share/${p}`, `/v1/sandboxes/${a}/share/${p}`);
    const planted = await api(`/v1/sandboxes/${a}/share/blink/planted.txt`, {
      method: "PUT",
      headers: { "content-type": "application/octet-stream" },
      body: "from A",
    });
    record(area, planted.status === 403 ? undefined : `PUT through a link to B's share: ${planted.status}`);
    record(
      area,
      readdirSync(stack().shareDir(b)).includes("planted.txt")
        ? "an upload through A's link landed in B's share"
        : undefined,
    );
    // An upload onto a link replaces the link; the file it named is untouched.
    const put = await api(`/v1/sandboxes/${a}/share/hostlink`, {
      method: "PUT",
      headers: { "content-type": "application/octet-stream" },
      body: "overwritten?",
    });
    record(
      area,
      put.status === 200 && readFileSync(targetFile, "utf8") === "host file"
        ? undefined
        : `PUT onto a link: ${put.status}, host file now ${JSON.stringify(readFileSync(targetFile, "utf8"))}`,
    );
    // The tar of A's share: links as links, no fifo or device, none of B's bytes.
    const tar = await api(`/v1/sandboxes/${a}/share/?format=tar`);
    const tarBytes = Buffer.from(await tar.arrayBuffer());
    record(
      area,
      tar.status === 200 && !tarBytes.includes(secret) && !tarBytes.includes("root:x:0:0")
        ? undefined
        : `GET share?format=tar: ${tar.status}, holds B's secret or the host's passwd`,
    );
    // On the host the share is its own filesystem, mounted nosuid,nodev: the setuid shell and
    // the device nodes A's root made there do nothing.
    // The mount the share folder is in (the deepest one holding its path).
    const mount = readFileSync("/proc/self/mounts", "utf8")
      .split("\n")
      .filter((l) => {
        const at = l.split(" ")[1] ?? "";
        return at !== "" && `${shareA}/`.startsWith(`${at}/`);
      })
      .sort((x, y) => (y.split(" ")[1] ?? "").length - (x.split(" ")[1] ?? "").length)[0];
    const opts = mount?.split(" ")[3]?.split(",") ?? [];
    record(area, opts.includes("nosuid") ? undefined : `A's share is not nosuid on the host: ${mount}`);
    record(area, opts.includes("nodev") ? undefined : `A's share is not nodev on the host: ${mount}`);
    let devRead = "";
    try {
      devRead = `read ${readFileSync(join(shareA, "nulldev")).length} bytes`;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EACCES") devRead = (err as Error).message;
    }
    record(area, devRead === "" ? undefined : `a device node A made opens on the host: ${devRead}`);
    // Its size, not the host's free space, bounds what A writes through it.
    const hostFree = () => statfsSync(stack().stateDir).bavail * statfsSync(stack().stateDir).bsize;
    const freeBefore = hostFree();
    const fill = await run(
      a,
      `df -B1 --output=size ${SHARE} | tail -1; fallocate -l 64G ${SHARE}/fill; echo rc=$?; rm -f ${SHARE}/fill`,
      "user",
    );
    const shareBytes = Number(fill.stdout.split("\n")[0]);
    const freeAfter = hostFree();
    record(
      area,
      /rc=1/.test(fill.stdout) && /No space left/.test(fill.stderr) && shareBytes < 64 * 1024 ** 3
        ? undefined
        : `fallocate 64 GiB in the share: ${fill.stdout} ${fill.stderr}`,
    );
    record(
      area,
      freeBefore - freeAfter < 256 * 1024 ** 2
        ? undefined
        : `the host lost ${freeBefore - freeAfter} bytes of free space to A's share`,
    );
    t.diagnostic(`share filesystem: ${shareBytes} bytes seen by the guest (the host's disk is not)`);
    report(t, area);
  });

  test("the host's view: nothing of the host shows in A's /proc and /sys", { timeout: 60_000 }, async (t) => {
    const area = tally("isolation qemu: host view");
    const r = await run(
      a,
      [
        "hostname",
        "cat /proc/sys/kernel/random/boot_id",
        "uname -r",
        "echo ---partitions; tail -n +3 /proc/partitions",
        "echo ---mounts; cat /proc/mounts",
        "echo ---procs; cat /proc/[0-9]*/comm 2>/dev/null",
        "echo ---net; ls /sys/class/net",
      ].join("; "),
    );
    const [head = "", rest = ""] = r.stdout.split("---partitions\n");
    const [guestHost, bootId, kernel] = head.trim().split("\n");
    const [partitions = "", afterParts = ""] = rest.split("---mounts\n");
    const [mounts = "", afterMounts = ""] = afterParts.split("---procs\n");
    const [procs = "", netIfs = ""] = afterMounts.split("---net\n");
    const check = (ok: boolean, failure: string) => record(area, ok ? undefined : failure);
    check(guestHost !== hostname(), `A's hostname is the host's (${guestHost})`);
    const hostBoot = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
    check(bootId !== hostBoot, "A's boot id is the host's");
    t.diagnostic(`A's kernel ${kernel}, the host's ${release()}`);
    const hostParts = new Set(
      readFileSync("/proc/partitions", "utf8")
        .trim()
        .split("\n")
        .slice(2)
        .map((l) => l.trim().split(/\s+/).slice(2).join(" ")),
    );
    for (const p of partitions
      .trim()
      .split("\n")
      .map((l) => l.trim().split(/\s+/).slice(2).join(" ")))
      check(!hostParts.has(p), `the host's disk ${p} is visible in A`);
    check(!mounts.includes(stack().stateDir), "a host path of the stack shows in A's mounts");
    const guestProcs = new Set(procs.trim().split("\n"));
    const hostOnly = ["postgres", "qemu-system-x86", "virtiofsd", "vhost-device-vs"].filter((n) =>
      hostProcessNames().has(n),
    );
    assert.ok(hostOnly.length >= 3, `the host runs the VM's helpers: ${hostOnly.join(",")}`);
    for (const n of hostOnly) check(!guestProcs.has(n), `the host's process ${n} is visible in A`);
    check(netIfs.trim().split(/\s+/).sort().join(",") === "eth0,lo", `A's interfaces: ${netIfs.trim()}`);
    report(t, area);
  });

  test("privilege: only Debian's setuid programs; the guest's root gains nothing on the host", {
    timeout: 60_000,
  }, async (t) => {
    const area = tally("isolation qemu: privilege");
    const r = await run(
      a,
      "find / -xdev \\( -perm -4000 -o -perm -2000 \\) -type f 2>/dev/null | sort",
      "user",
    );
    const found = r.stdout.trim().split("\n").filter(Boolean);
    t.diagnostic(`setuid/setgid in the image: ${found.join(" ")}`);
    for (const f of found)
      record(area, DEBIAN_SETID.has(f) ? undefined : `unexpected setuid/setgid program ${f}`);
    // The unprivileged user cannot write the serial console (a flood there is root's: see exhaustion).
    const tty = await run(a, "echo x > /dev/ttyS0 && echo wrote", "user");
    record(area, tty.stdout.includes("wrote") ? "user writes the serial console" : undefined);
    // By design (E2B's template): `user` has passwordless sudo. Reported, not counted.
    const sudo = await run(a, "sudo -n id -u", "user");
    t.diagnostic(
      `user → root by sudo (by design, the VM is the boundary): ${sudo.stdout.trim() || sudo.stderr.trim()}`,
    );
    report(t, area);
  });

  test("exhaustion: memory, CPU, disk and logs stop at A's own limits; B and the host run on", {
    timeout: FULL ? 1_800_000 : 120_000,
  }, async (t) => {
    const area = tally("isolation qemu: exhaustion");
    const bootIdCmd = "cat /proc/sys/kernel/random/boot_id";
    const boot = (await run(a, bootIdCmd)).stdout;

    // Memory: past the VM's RAM, in the background (the exec that starts it returns at once, so
    // no call is held open while the guest is short of memory). The guest's OOM killer ends
    // the process; B answers meanwhile; A neither reboots nor loses its QEMU.
    const qemuPids = () =>
      readdirSync("/proc")
        .filter((p) => /^\d+$/.test(p))
        .filter((p) => {
          try {
            return readFileSync(`/proc/${p}/cmdline`, "latin1").includes(`${vmDir(a)}/qmp.sock`);
          } catch {
            return false;
          }
        });
    const qemuBefore = qemuPids();
    const agentRestarts = () =>
      (readFileSync(`${vmDir(a)}/serial.log`, "utf8").match(/agent exited/g) ?? []).length;
    const restartsBefore = agentRestarts();
    const memStarted = performance.now();
    await run(
      a,
      `rm -f /tmp/hog.rc; setsid sh -c '${py(MEMORY_HOG, "")} 2>/tmp/hog.err; echo rc=$? > /tmp/hog.rc' </dev/null >/dev/null 2>&1 &`,
    );
    await new Promise((r) => setTimeout(r, 3_000));
    record(area, await neighbourAnswers());
    // Polled with short calls; one that fails while the guest is short of memory is tried again.
    const mem = await eventually(async () => {
      const r = await stack()
        .json<Exec>(`/v1/sandboxes/${a}/exec`, {
          method: "POST",
          body: JSON.stringify({
            command: `cat /tmp/hog.rc && tail -c 300 /tmp/hog.err; echo oom=$(dmesg | grep -c 'Out of memory: Killed process'); ${bootIdCmd}`,
            timeoutMs: 20_000,
            user: "root",
          }),
          signal: AbortSignal.timeout(40_000),
        })
        .catch(() => undefined);
      if (r?.status === 200 && r.body.stdout.startsWith("rc=")) return r.body;
      await new Promise((done) => setTimeout(done, 1_000));
      return undefined;
    }, 180_000);
    timings.push(
      `memory: allocate past 512 MiB (and B answers meanwhile) ${((performance.now() - memStarted) / 1000).toFixed(1)} s`,
    );
    // Killed by the OOM killer (137), or refused an allocation (1, ENOMEM): A's own limit either way.
    const oomKills = Number(/oom=(\d+)/.exec(mem.stdout)?.[1] ?? 0);
    record(
      area,
      (/^rc=137/.test(mem.stdout) && oomKills >= 1) ||
        (/^rc=1\n/.test(mem.stdout) && /MemoryError|Cannot allocate/.test(mem.stdout))
        ? undefined
        : `memory hog: ${mem.stdout}`,
    );
    record(area, mem.stdout.endsWith(boot) ? undefined : "A rebooted");
    record(
      area,
      qemuPids().join() === qemuBefore.join() && qemuBefore.length === 1 ? undefined : "A's QEMU changed",
    );
    // The agent is a guest process too: the init restarts it if the OOM killer picks it.
    t.diagnostic(`memory: A's agent restarted ${agentRestarts() - restartsBefore} time(s) during the attack`);

    // CPU: A spins on every vCPU it has; B and the host answer.
    await run(
      a,
      "for i in $(seq $(nproc)); do setsid sh -c 'while :; do :; done' </dev/null >/dev/null 2>&1 & done",
    );
    record(area, await timed("cpu: B answers while A spins", neighbourAnswers));

    // Disk: A fills its root disk; ENOSPC inside, and the host's file of A's disk stays small.
    const diskName = readdirSync(vmDir(a)).find((f) => f.startsWith("root."));
    assert.ok(diskName, `no root disk in ${vmDir(a)}`);
    const disk = `${vmDir(a)}/${diskName}`;
    const fill = FULL
      ? "dd if=/dev/urandom of=/root/fill bs=1M 2>&1 | tail -1"
      : "fallocate -l 64G /root/fill 2>&1; fallocate -l $(df -B1 --output=avail / | tail -1) /root/fill2 2>&1";
    const full = await timed(`disk: fill A's root disk${FULL ? " with data" : ""}`, () =>
      run(
        a,
        // `d[o]`: the pattern does not match pkill's own shell.
        `pkill -f 'while :; d[o] :'; ${fill}; echo x > /root/after; echo rc=$?; df -B1 --output=avail,size / | tail -1`,
        "root",
        1_200_000,
      ),
    );
    const [avail = "", size = ""] = full.stdout.trim().split("\n").at(-1)!.trim().split(/\s+/);
    record(area, /rc=1/.test(full.stdout) ? undefined : `a write on a full disk: ${full.stdout}`);
    record(area, Number(avail) === 0 ? undefined : `A's disk not full: ${avail} bytes left`);
    const allocated = statSync(disk).blocks * 512;
    record(
      area,
      allocated < Number(size) + 64 * 1024 ** 2
        ? undefined
        : `A's disk file holds ${allocated} bytes on the host`,
    );
    t.diagnostic(`disk: A's root ${size} bytes, its file on the host ${allocated} bytes after the fill`);

    // Logs: A's root floods its vsock backend's log (a warning per connection to an unknown
    // CID) and its serial console until the vsock log reaches the vmm's cap (the serial
    // console is slower under TCG: it reaches the cap only in the full mode).
    const logOf = (name: string) => readFileSync(`${vmDir(a)}/${name}`, "utf8");
    const capped = (name: string) => logOf(name).includes("[dnah: this log reached");
    await run(
      a,
      "rm -f /root/fill /root/fill2 /root/after; " +
        `setsid sh -c '${py(VSOCK_FLOOD, "600 dnah-vsock-flood")}' </dev/null >/dev/null 2>&1 & ` +
        "setsid timeout 600 sh -c 'yes dnah-serial-flood > /dev/ttyS0' </dev/null >/dev/null 2>&1 &",
    );
    try {
      await timed("logs: flood until the vsock log's cap", () =>
        eventually(async () => capped("vsock.log"), 60_000),
      );
      if (FULL)
        await timed("logs: flood until the serial log's cap", () =>
          eventually(async () => capped("serial.log"), 600_000),
        );
    } finally {
      // A answers, and its freed disk takes writes again.
      const after = await run(
        a,
        "pkill -f 'dnah-vsock-floo[d]'; pkill -f 'dnah-serial-floo[d]'; echo x > /root/after && echo up",
      );
      record(
        area,
        after.stdout === "up\n" ? undefined : `A after the floods: ${after.stdout} ${after.stderr}`,
      );
    }
    // The vmm writes what it has read; a moment for its last chunk.
    await new Promise((r) => setTimeout(r, 500));
    for (const log of ["vsock.log", "serial.log", "qemu.log", "virtiofsd.log"]) {
      const bytes = statSync(`${vmDir(a)}/${log}`).size;
      t.diagnostic(`logs: ${log} ${bytes} bytes (cap ${LOG_CAP_BYTES})`);
      record(area, bytes <= LOG_CAP_BYTES + 200 ? undefined : `${log} grew to ${bytes} bytes`);
    }
    record(area, capped("vsock.log") ? undefined : "the vsock flood never reached the cap");
    record(
      area,
      logOf("serial.log").includes("dnah-serial-flood")
        ? undefined
        : "the serial flood left no trace in serial.log",
    );
    record(area, await neighbourAnswers());
    report(t, area);
  });
});
