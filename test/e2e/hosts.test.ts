import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { randomBytes, randomInt } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createServiceClient, loadOrCreateControlKey, vmmAuthInterceptor } from "@dnah/platform";
import { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { VmmService } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import pg from "pg";
import S3rver from "s3rver";
import { DATABASE_URL, eventually, waitForHttp } from "./harness.js";

/**
 * Many hosts on one machine: a scheduler and a gateway on the host, and three vmm "hosts",
 * each in its own network namespace (its own addresses, routes and firewall), joined over a
 * veth pair with the join token. Registration time is measured; placement spreads; a silent
 * host's sandboxes become lost while the others serve; a host back from a stall reconciles
 * (its lost sandboxes run again, the one deleted meanwhile is removed from it); a restarted
 * host registers again; a draining host gets nothing new.
 */
describe("many hosts (network namespaces)", () => {
  const suffix = randomBytes(3).toString("hex");
  const schema = `e2e_hosts_${suffix}`;
  const key = `dnah_hosts_${suffix}_0123456789`;
  const joinToken = randomBytes(24).toString("base64url");
  const base = 20_000 + randomInt(0, 20_000);
  const ports = { scheduler: base, gateway: base + 1, snapshot: base + 2, vmm: 7002 };
  const gw = `http://127.0.0.1:${ports.gateway}`;
  const headers = { authorization: `Bearer ${key}`, "content-type": "application/json" };
  const HOSTS = [1, 2, 3].map((i) => ({
    id: `h${i}-${suffix}`,
    ns: `dnah-h${i}-${suffix}`,
    veth: `dh${i}${suffix}`,
    hostIp: `10.251.${i}.1`,
    nsIp: `10.251.${i}.2`,
    stateDir: `/tmp/dnah-hosts-${suffix}/h${i}`,
  }));
  const procs = new Map<string, ChildProcess>();
  const common = {
    PATH: process.env.PATH ?? "/usr/bin:/bin",
    // s3rver's fixed credentials: the hosts' shared archive storage.
    AWS_ACCESS_KEY_ID: "S3RVER",
    AWS_SECRET_ACCESS_KEY: "S3RVER",
    DATABASE_URL,
    DNAH_DB_SCHEMA: schema,
    DNAH_LOG_LEVEL: "warn",
    ...(process.env.DNAH_CACHE_DIR ? { DNAH_CACHE_DIR: process.env.DNAH_CACHE_DIR } : {}),
  };
  const DEAD_AFTER_MS = 3_000;
  const scheduler = createServiceClient(SchedulerService, `http://127.0.0.1:${ports.scheduler}`);
  const db = new pg.Client({ connectionString: DATABASE_URL });
  const registration: Record<string, number> = {};
  const bucketDir = mkdtempSync(join(tmpdir(), "dnah-hosts-s3-"));
  let s3: S3rver;
  let s3Port = 0;

  const spawnService = (name: string, argv: string[], env: Record<string, string>) => {
    const p = spawn(argv[0]!, argv.slice(1), {
      env: { ...common, ...env },
      stdio: ["ignore", "ignore", "inherit"],
    });
    procs.set(name, p);
    return p;
  };
  const node = (service: string) => [process.execPath, "--import", "tsx", `services/${service}/src/main.ts`];
  const sh = (...args: string[]) => execFileSync(args[0]!, args.slice(1), { stdio: "pipe" });

  /** Starts host i's vmm in its namespace; resolves with the ms until its row is registered. */
  const startVmm = async (h: (typeof HOSTS)[number]): Promise<number> => {
    const since = (await db.query<{ now: Date }>("SELECT now()")).rows[0]!.now;
    const t0 = performance.now();
    // nsenter switches only the network namespace (ip netns exec would also remount /sys,
    // hiding the cgroup file system the jail runtime needs).
    spawnService(h.id, ["nsenter", `--net=/run/netns/${h.ns}`, ...node("vmm")], {
      DNAH_VMM_HOST: h.nsIp,
      DNAH_VMM_PORT: String(ports.vmm),
      DNAH_SCHEDULER_URL: `http://${h.hostIp}:${ports.scheduler}`,
      DNAH_JOIN_TOKEN: joinToken,
      DNAH_HOST_ID: h.id,
      DNAH_STATE_DIR: h.stateDir,
      DNAH_CGROUP_PARENT: `dnah-hosts-${suffix}-${h.id.slice(0, 2)}`,
      DNAH_HEARTBEAT_INTERVAL_MS: "500",
      DNAH_VMM_CAPACITY: "4",
      DNAH_HOST_LABELS: `zone=z${h.id.slice(1, 2)}`,
      DNAH_RUNTIME: "jail",
      DNAH_ARCHIVE_S3_BUCKET: "dnah-hosts",
      DNAH_ARCHIVE_S3_PREFIX: `run-${suffix}/`,
      DNAH_ARCHIVE_S3_ENDPOINT: `http://${h.hostIp}:${s3Port}`,
      DNAH_ARCHIVE_S3_PATH_STYLE: "true",
    });
    // Registered (or registered again) since the spawn: placeable from here on.
    await eventually(async () => {
      const { rows } = await db.query("SELECT 1 FROM hosts WHERE id = $1 AND last_heartbeat > $2", [
        h.id,
        since,
      ]);
      return rows.length === 1;
    }, 60_000);
    return Math.round(performance.now() - t0);
  };
  const stopProc = (name: string, signal: NodeJS.Signals = "SIGTERM") =>
    new Promise<void>((resolve) => {
      const p = procs.get(name);
      if (p === undefined || p.exitCode !== null || p.signalCode !== null) return resolve();
      p.once("exit", () => resolve());
      p.kill(signal);
    });
  const api = async (path: string, init: RequestInit = {}) => {
    const r = await fetch(`${gw}${path}`, { headers, ...init });
    const text = await r.text();
    return { status: r.status, body: text === "" ? undefined : JSON.parse(text) };
  };
  const create = async () => {
    const r = await api("/v1/sandboxes", { method: "POST", body: "{}" });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    return r.body as { sandboxId: string; hostId: string };
  };
  const exec = async (id: string) =>
    api(`/v1/sandboxes/${id}/exec`, { method: "POST", body: JSON.stringify({ command: "echo alive" }) });
  const state = async (id: string) => (await api(`/v1/sandboxes/${id}`)).body?.state as string | undefined;

  before(async () => {
    await db.connect();
    for (const h of HOSTS) {
      sh("ip", "netns", "add", h.ns);
      sh("ip", "link", "add", h.veth, "type", "veth", "peer", "name", `${h.veth}p`, "netns", h.ns);
      sh("ip", "addr", "add", `${h.hostIp}/24`, "dev", h.veth);
      sh("ip", "link", "set", h.veth, "up");
      sh("ip", "-n", h.ns, "addr", "add", `${h.nsIp}/24`, "dev", `${h.veth}p`);
      sh("ip", "-n", h.ns, "link", "set", `${h.veth}p`, "up");
      sh("ip", "-n", h.ns, "link", "set", "lo", "up");
      sh("ip", "-n", h.ns, "route", "add", "default", "via", h.hostIp);
    }
    s3 = new S3rver({
      address: "0.0.0.0",
      port: 0,
      silent: true,
      directory: bucketDir,
      configureBuckets: [{ name: "dnah-hosts", configs: [] }],
    });
    s3Port = ((await s3.run()) as AddressInfo).port;
    spawnService("snapshot", node("snapshot"), {
      DNAH_SNAPSHOT_PORT: String(ports.snapshot),
      DNAH_SNAPSHOT_KEYS_DIR: `/tmp/dnah-hosts-${suffix}/keys`,
    });
    spawnService("scheduler", node("scheduler"), {
      DNAH_SNAPSHOT_URL: `http://127.0.0.1:${ports.snapshot}`,
      DNAH_SCHEDULER_HOST: "0.0.0.0",
      DNAH_SCHEDULER_PORT: String(ports.scheduler),
      DNAH_POOL_SIZE: "0",
      DNAH_JOIN_TOKEN: joinToken,
      DNAH_HOST_DEAD_AFTER_MS: String(DEAD_AFTER_MS),
    });
    await eventually(
      () =>
        scheduler.listHosts({}).then(
          () => true,
          () => false,
        ),
      60_000,
    );
    await db.query(`SET search_path TO ${schema}`);
    spawnService("gateway", node("gateway"), {
      DNAH_PORT: String(ports.gateway),
      DNAH_GATEWAY_HOST: "127.0.0.1",
      DNAH_SCHEDULER_URL: `http://127.0.0.1:${ports.scheduler}`,
      DNAH_API_KEY: key,
      DNAH_SNAPSHOT_URL: `http://127.0.0.1:${ports.snapshot}`,
    });
    // One at a time, so each measurement is of one host joining.
    for (const h of HOSTS) registration[h.id] = await startVmm(h);
    await waitForHttp(`${gw}/health`);
  });

  after(async () => {
    for (const name of [...procs.keys()].reverse()) await stopProc(name);
    for (const h of HOSTS) {
      try {
        sh("ip", "netns", "del", h.ns);
      } catch {}
      try {
        sh("ip", "link", "del", h.veth);
      } catch {}
    }
    // A vmm that was killed leaves its overlays mounted until a restart reclaims them.
    for (const line of execFileSync("findmnt", ["-rn", "-o", "TARGET"]).toString().split("\n"))
      if (line.startsWith(`/tmp/dnah-hosts-${suffix}/`)) execFileSync("umount", ["-l", line]);
    rmSync(`/tmp/dnah-hosts-${suffix}`, { recursive: true, force: true });
    await s3?.close();
    rmSync(bucketDir, { recursive: true, force: true });
    await db.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`).catch(() => {});
    await db.end();
  });

  test("each host joins with the token and is placeable within seconds; a wrong token is refused", async () => {
    console.log(`registration (vmm start → placeable), ms: ${JSON.stringify(registration)}`);
    for (const h of HOSTS) assert.ok(registration[h.id]! < 15_000, `${h.id}: ${registration[h.id]} ms`);
    const { hosts } = await scheduler.listHosts({});
    const ours = hosts.filter((x) => HOSTS.some((h) => h.id === x.hostId));
    assert.equal(ours.length, 3);
    for (const x of ours) {
      assert.equal(x.live, true);
      assert.ok(x.vcpus > 0 && x.memoryMib > 0n, "resources reported");
      assert.match(x.labels.zone ?? "", /^z[123]$/);
      assert.equal(x.vmmUrl, `http://10.251.${x.hostId.slice(1, 2)}.2:${ports.vmm}`);
    }
    await assert.rejects(
      scheduler.registerHost({
        hostId: "intruder",
        vmmUrl: "http://10.0.0.9:1",
        runtime: "jail",
        capacitySandboxes: 9,
      }),
      /join token/,
    );
    assert.equal((await db.query("SELECT 1 FROM hosts WHERE id = 'intruder'")).rows.length, 0);
  });

  test("spread; a silent host's sandboxes are lost while the others serve; it reconciles when back", async () => {
    const boxes = [await create(), await create(), await create()];
    assert.deepEqual(new Set(boxes.map((b) => b.hostId)), new Set(HOSTS.map((h) => h.id)), "one per host");
    for (const b of boxes) assert.equal((await exec(b.sandboxId)).status, 200);
    const h1 = HOSTS[0]!;
    const onH1 = boxes.find((b) => b.hostId === h1.id)!;
    const extra = await eventually(async () => {
      // A second sandbox on h1: delete it while h1 is silent, so h1 must remove it when back.
      const b = await create();
      if (b.hostId === h1.id) return b;
      await api(`/v1/sandboxes/${b.sandboxId}`, { method: "DELETE" });
      return undefined;
    });
    // A stall (SIGSTOP): the vmm and its sandboxes live on, but nothing answers.
    procs.get(h1.id)!.kill("SIGSTOP");
    const t0 = Date.now();
    await eventually(async () => (await state(onH1.sandboxId)) === "lost", 20_000);
    console.log(`silent host → sandboxes lost in ${Date.now() - t0} ms (dead after ${DEAD_AFTER_MS} ms)`);
    assert.equal(await state(extra.sandboxId), "lost");
    for (const b of boxes.filter((x) => x.hostId !== h1.id)) {
      assert.equal(await state(b.sandboxId), "running");
      assert.equal((await exec(b.sandboxId)).status, 200, "the other hosts keep serving");
    }
    const lostNew = await create();
    assert.notEqual(lostNew.hostId, h1.id, "nothing is placed on a dead host");
    const ev = (await api(`/v1/sandboxes/${onH1.sandboxId}/events`)).body.events as {
      kind: string;
      actor: string;
    }[];
    assert.deepEqual([ev.at(-1)!.kind, ev.at(-1)!.actor], ["lost", "reaper"]);
    assert.equal((await api(`/v1/sandboxes/${extra.sandboxId}`, { method: "DELETE" })).status, 204);

    procs.get(h1.id)!.kill("SIGCONT");
    await eventually(async () => (await state(onH1.sandboxId)) === "running", 20_000);
    assert.equal((await exec(onH1.sandboxId)).status, 200, "running again, really");
    // The sandbox deleted while h1 was silent is removed from h1 by its next heartbeat.
    const vmm1Url = `http://${h1.nsIp}:${ports.vmm}`;
    // Calls to a vmm need a control-plane token: unsigned, even a read is refused.
    await assert.rejects(createServiceClient(VmmService, vmm1Url).listVms({}), /unauthenticated|401/i);
    const key = await loadOrCreateControlKey(db);
    const vmm1 = createServiceClient(VmmService, vmm1Url, [vmmAuthInterceptor(key, vmm1Url)]);
    await eventually(async () => {
      const { vms } = await vmm1.listVms({});
      return (
        vms.some((v) => v.sandboxId === onH1.sandboxId) && !vms.some((v) => v.sandboxId === extra.sandboxId)
      );
    }, 20_000);
    const ev2 = (await api(`/v1/sandboxes/${onH1.sandboxId}/events`)).body.events as { kind: string }[];
    assert.equal(ev2.at(-1)!.kind, "found");
    const { rows } = await db.query(
      "SELECT count(*)::int AS n FROM sandboxes WHERE host_id = $1 AND state = 'running'",
      [h1.id],
    );
    assert.equal(rows[0].n, 1);
    for (const b of [...boxes, lostNew]) await api(`/v1/sandboxes/${b.sandboxId}`, { method: "DELETE" });
  });

  test("a killed and at once restarted host's sandboxes are lost, not ghosts; it registers again and takes new ones", async () => {
    const h2 = HOSTS[1]!;
    await scheduler.setHostDraining({ hostId: HOSTS[0]!.id, draining: true });
    await scheduler.setHostDraining({ hostId: HOSTS[2]!.id, draining: true });
    const b = await create();
    assert.equal(b.hostId, h2.id, "the only host not draining");
    await stopProc(h2.id, "SIGKILL");
    // Restarted at once, maybe before it counts as dead: its heartbeats no longer list the
    // sandbox, which becomes lost either way (never a ghost "running" on a live host).
    const ms = await startVmm(h2);
    console.log(`restarted host placeable again in ${ms} ms`);
    await eventually(async () => (await state(b.sandboxId)) === "lost", 20_000);
    // Its old sandbox did not survive the restart: it stays visibly lost.
    await new Promise((r) => setTimeout(r, 1_500));
    assert.equal(await state(b.sandboxId), "lost");
    const again = await create();
    assert.equal(again.hostId, h2.id);
    assert.equal((await exec(again.sandboxId)).status, 200);
    // Draining moves new placements away (through the CLI this time).
    const cli = (...args: string[]) =>
      execFileSync(process.execPath, ["--import", "tsx", "packages/cli/src/main.ts", "hosts", ...args], {
        env: { ...process.env, DNAH_SCHEDULER_URL: `http://127.0.0.1:${ports.scheduler}` },
      }).toString();
    cli("undrain", HOSTS[0]!.id);
    assert.match(cli("drain", h2.id), /draining/);
    const listed = JSON.parse(cli("list", "--json")) as {
      hostId: string;
      draining: boolean;
      live: boolean;
    }[];
    assert.deepEqual(
      HOSTS.map((h) => listed.find((x) => x.hostId === h.id)?.draining),
      [false, true, true],
    );
    assert.match(cli("list"), new RegExp(`${h2.id}\\s+draining`));
    const moved = await create();
    assert.equal(moved.hostId, HOSTS[0]!.id);
    await scheduler.setHostDraining({ hostId: h2.id, draining: false });
    await scheduler.setHostDraining({ hostId: HOSTS[2]!.id, draining: false });
    for (const x of [b, again, moved]) await api(`/v1/sandboxes/${x.sandboxId}`, { method: "DELETE" });
  });

  test("an archived sandbox in shared storage comes back on another host when its own is gone", async () => {
    const [h1, h2, h3] = HOSTS as [(typeof HOSTS)[number], (typeof HOSTS)[number], (typeof HOSTS)[number]];
    await scheduler.setHostDraining({ hostId: h1.id, draining: true });
    await scheduler.setHostDraining({ hostId: h2.id, draining: true });
    const b = await create();
    assert.equal(b.hostId, h3.id);
    const wrote = await api(`/v1/sandboxes/${b.sandboxId}/exec`, {
      method: "POST",
      body: JSON.stringify({ command: "echo kept across hosts > /home/user/kept.txt" }),
    });
    assert.equal(wrote.status, 200);
    assert.equal((await api(`/v1/sandboxes/${b.sandboxId}/pause`, { method: "POST" })).status, 200);
    const archived = await api(`/v1/sandboxes/${b.sandboxId}/archive`, { method: "POST" });
    assert.equal(archived.status, 200, JSON.stringify(archived.body));
    assert.equal(archived.body.state, "archived");
    // Its host dies; the archive is in the shared bucket.
    await stopProc(h3.id, "SIGKILL");
    await eventually(async () => {
      const { hosts } = await scheduler.listHosts({});
      return hosts.find((x) => x.hostId === h3.id)?.live === false;
    }, 20_000);
    assert.equal(await state(b.sandboxId), "archived", "an archived sandbox is not lost with its host");
    await scheduler.setHostDraining({ hostId: h1.id, draining: false });
    const resumed = await api(`/v1/sandboxes/${b.sandboxId}/resume`, { method: "POST" });
    assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
    assert.equal(resumed.body.state, "running");
    assert.equal(resumed.body.hostId, h1.id, "restored on a live host");
    const read = await api(`/v1/sandboxes/${b.sandboxId}/exec`, {
      method: "POST",
      body: JSON.stringify({ command: "cat /home/user/kept.txt" }),
    });
    assert.equal(read.body.stdout, "kept across hosts\n");
    await scheduler.setHostDraining({ hostId: h2.id, draining: false });
    await api(`/v1/sandboxes/${b.sandboxId}`, { method: "DELETE" });
  });
});
