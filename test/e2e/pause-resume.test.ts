import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { createServiceClient, TunnelError } from "@dnah/platform";
import { SandboxState } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { classify } from "../../services/gateway/src/errors.js";
import { eventually, sandboxClient, startTestStack, type TestStack } from "./harness.js";

interface SandboxJson {
  sandboxId: string;
  state: string;
  pausedAt: string | null;
  cpuCount: number;
  memoryMib: number;
}
interface MetricsJson {
  timestamp: string;
  cpuCount: number;
  cpuUsedPct: number;
  memUsedBytes: number;
  memTotalBytes: number;
  memCacheBytes: number;
  diskUsedBytes: number;
  diskTotalBytes: number;
}
interface ErrorJson {
  code: string;
  message: string;
}

/** Calls that must not hang on a frozen sandbox give up after this (a failure, not a bound). */
const NO_HANG_MS = 30_000;
const CGROUP_ROOTS = [
  "/sys/fs/cgroup",
  "/sys/fs/cgroup/freezer",
  "/sys/fs/cgroup/memory",
  "/sys/fs/cgroup/pids",
  "/sys/fs/cgroup/cpuacct",
];
/** Appends 1, 2, 3 … to a file in /tmp ten times a second. */
const COUNTER =
  "nohup setsid bash -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.1; done' >/dev/null 2>&1 &";

function sandboxPids(s: TestStack, id: string): number[] {
  for (const root of CGROUP_ROOTS) {
    const f = `${root}/${s.cgroupParent}/${id}/cgroup.procs`;
    if (existsSync(f)) return readFileSync(f, "utf8").split("\n").filter(Boolean).map(Number);
  }
  return [];
}

/** The counter as the host sees it in the sandbox's overlay (readable while it is frozen). */
function counterOnHost(s: TestStack, id: string): number {
  return Number(readFileSync(`${s.stateDir}/sandboxes/${id}/upper/tmp/counter`, "utf8").trim() || "0");
}

describe("the gateway's error table", () => {
  test("a tunnel refused because the sandbox is paused is failed_precondition, also as a cause", () => {
    const refused = new TunnelError(409, "failed_precondition", "sandbox 'abc' is paused; resume it first");
    const expected = { kind: "failed_precondition", message: "sandbox 'abc' is paused; resume it first" };
    assert.deepEqual(classify(refused), expected);
    assert.deepEqual(classify(new ConnectError("x", Code.Internal, undefined, undefined, refused)), expected);
  });
});

describe("pause / resume / metrics over REST with a real jail", () => {
  let s: TestStack;
  let id: string;
  const post = (path: string) =>
    s.json<SandboxJson & ErrorJson>(path, { method: "POST", signal: AbortSignal.timeout(NO_HANG_MS) });
  const exec = (command: string) =>
    s.json<{ exitCode: number; stdout: string } & ErrorJson>(`/v1/sandboxes/${id}/exec`, {
      method: "POST",
      body: JSON.stringify({ command }),
      signal: AbortSignal.timeout(NO_HANG_MS),
    });

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0" });
    const r = await s.json<SandboxJson>("/v1/sandboxes", {
      method: "POST",
      body: JSON.stringify({ metadata: { suite: "pause" } }),
    });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    id = r.body.sandboxId;
  });
  after(async () => {
    await s?.close();
  });

  test("pause freezes everything, calls answer 409 promptly, resume carries on", async () => {
    const put = await s.api(`/v1/sandboxes/${id}/files?path=/home/user/before.txt`, {
      method: "PUT",
      headers: { "content-type": "application/octet-stream" },
      body: "written before the pause",
    });
    assert.equal(put.status, 200, await put.text());
    assert.equal((await exec(COUNTER)).body.exitCode, 0);
    await eventually(
      async () => existsSync(`${s.stateDir}/sandboxes/${id}/upper/tmp/counter`) && counterOnHost(s, id) >= 3,
    );

    const paused = await post(`/v1/sandboxes/${id}/pause`);
    assert.equal(paused.status, 200, JSON.stringify(paused.body));
    assert.equal(paused.body.state, "paused");
    assert.ok(paused.body.pausedAt && !Number.isNaN(Date.parse(paused.body.pausedAt)));
    const atPause = counterOnHost(s, id);

    const blocked = await exec("echo hi");
    assert.equal(blocked.status, 409, JSON.stringify(blocked.body));
    assert.equal(blocked.body.code, "failed_precondition");
    assert.match(blocked.body.message, /is paused; resume it first/);
    const read = await s.api(`/v1/sandboxes/${id}/files?path=/home/user/before.txt`, {
      signal: AbortSignal.timeout(NO_HANG_MS),
    });
    assert.equal(read.status, 409);
    assert.equal(((await read.json()) as ErrorJson).code, "failed_precondition");

    const again = await post(`/v1/sandboxes/${id}/pause`);
    assert.equal(again.status, 409);
    assert.equal(again.body.code, "failed_precondition");
    const got = await s.json<SandboxJson>(`/v1/sandboxes/${id}`);
    assert.equal(got.body.state, "paused");
    assert.equal(got.body.pausedAt, paused.body.pausedAt);

    // Frozen: ten ticks a second would move the counter by ~20 here.
    await new Promise((r) => setTimeout(r, 2_000));
    const beforeResume = counterOnHost(s, id);
    assert.ok(beforeResume - atPause <= 1, `counter moved while paused: ${atPause} -> ${beforeResume}`);

    const resumed = await post(`/v1/sandboxes/${id}/resume`);
    assert.equal(resumed.status, 200, JSON.stringify(resumed.body));
    assert.equal(resumed.body.state, "running");
    assert.equal(resumed.body.pausedAt, null);
    const notPaused = await post(`/v1/sandboxes/${id}/resume`);
    assert.equal(notPaused.status, 409);
    assert.equal(notPaused.body.code, "failed_precondition");

    // It carries on from where it stopped.
    await eventually(async () => counterOnHost(s, id) >= beforeResume + 5);
    const text = await s.api(`/v1/sandboxes/${id}/files?path=/home/user/before.txt`);
    assert.equal(text.status, 200);
    assert.equal(await text.text(), "written before the pause");
    const counted = await exec("cat /tmp/counter");
    assert.equal(counted.status, 200);
    assert.ok(Number(counted.body.stdout) >= beforeResume + 5);
  });

  test("metrics: the sandbox's limits, and disk use that sees a 4 MiB write", async () => {
    const view = (await s.json<SandboxJson>(`/v1/sandboxes/${id}`)).body;
    const first = await s.json<MetricsJson>(`/v1/sandboxes/${id}/metrics`);
    assert.equal(first.status, 200, JSON.stringify(first.body));
    assert.equal(first.body.cpuCount, view.cpuCount);
    assert.equal(first.body.memTotalBytes, view.memoryMib * 1024 * 1024);
    assert.ok(first.body.memUsedBytes > 0 && first.body.memUsedBytes <= first.body.memTotalBytes);
    assert.ok(first.body.memCacheBytes >= 0 && first.body.memCacheBytes <= first.body.memUsedBytes);
    assert.ok(first.body.cpuUsedPct >= 0 && first.body.cpuUsedPct <= 100);
    assert.ok(first.body.diskTotalBytes > first.body.diskUsedBytes);
    assert.ok(!Number.isNaN(Date.parse(first.body.timestamp)));
    const w = await exec("head -c 4194304 /dev/urandom > /home/user/blob && sync");
    assert.equal(w.body.exitCode, 0);
    const second = await s.json<MetricsJson>(`/v1/sandboxes/${id}/metrics`);
    assert.ok(
      second.body.diskUsedBytes - first.body.diskUsedBytes >= 4 * 1024 * 1024,
      `${first.body.diskUsedBytes} -> ${second.body.diskUsedBytes}`,
    );
    const missing = await s.json<ErrorJson>("/v1/sandboxes/nosuchsandbox/metrics");
    assert.equal(missing.status, 404);
  });

  test("list filters by state; bad states are a 400", async () => {
    const ids = async (query: string) => {
      const r = await s.json<{ sandboxes: SandboxJson[] }>(`/v1/sandboxes?metadata.suite=pause&${query}`);
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body.sandboxes.map((x) => x.sandboxId);
    };
    assert.deepEqual(await ids("state=paused"), []);
    assert.deepEqual(await ids("state=running"), [id]);
    assert.equal((await post(`/v1/sandboxes/${id}/pause`)).status, 200);
    assert.deepEqual(await ids("state=paused"), [id]);
    assert.deepEqual(await ids("state=running"), []);
    assert.deepEqual(await ids("state=running,paused"), [id]);
    assert.deepEqual(await ids("state=running&state=paused"), [id]);
    const bad = await s.json<ErrorJson>("/v1/sandboxes?state=frozen");
    assert.equal(bad.status, 400);
    assert.equal(bad.body.code, "invalid_argument");
    assert.match(bad.body.message, /unknown state 'frozen'/);
    assert.equal((await s.json<ErrorJson>("/v1/sandboxes?state=deleted")).status, 400);
    // Metrics of a paused sandbox still answer.
    assert.equal((await s.json<MetricsJson>(`/v1/sandboxes/${id}/metrics`)).status, 200);
  });

  test("deleting a paused sandbox finishes and leaves nothing behind", async () => {
    assert.equal((await s.json<SandboxJson>(`/v1/sandboxes/${id}`)).body.state, "paused");
    const dir = `${s.stateDir}/sandboxes/${id}`;
    const pids = sandboxPids(s, id);
    assert.ok(pids.length > 0, "sandbox has processes");
    const del = await s.api(`/v1/sandboxes/${id}`, { method: "DELETE", signal: AbortSignal.timeout(60_000) });
    assert.equal(del.status, 204);
    assert.equal(existsSync(dir), false, "folder left behind");
    for (const root of CGROUP_ROOTS)
      assert.equal(existsSync(`${root}/${s.cgroupParent}/${id}`), false, `cgroup left in ${root}`);
    assert.equal(readFileSync("/proc/self/mounts", "utf8").includes(dir), false, "mount left behind");
    await eventually(async () => pids.every((p) => !existsSync(`/proc/${p}`)), 10_000);
    for (const pid of readdirSync("/proc").filter((p) => /^\d+$/.test(p))) {
      try {
        const env = readFileSync(`/proc/${pid}/environ`, "latin1");
        assert.equal(env.includes(`DNAH_SANDBOX_ID=${id}\0`), false, `process ${pid} survived`);
      } catch (err) {
        if (!["ENOENT", "ESRCH", "EACCES"].includes((err as NodeJS.ErrnoException).code ?? "")) throw err;
      }
    }
    assert.equal((await s.json(`/v1/sandboxes/${id}`)).status, 404);
  });
});

describe("pause / resume / metrics over Connect", () => {
  let s: TestStack;
  let id: string;
  let client: ReturnType<typeof sandboxClient>;
  const code = (e: unknown) => ConnectError.from(e).code;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0" });
    client = sandboxClient(s);
    id = (await client.createSandbox({ metadata: { suite: "pause-connect" } })).sandbox!.sandboxId;
  });
  after(async () => {
    await s?.close();
  });

  test("pause, refused exec, metrics, list, resume, exec", async () => {
    const paused = (await client.pauseSandbox({ sandboxId: id })).sandbox!;
    assert.equal(paused.state, SandboxState.PAUSED);
    assert.ok(paused.pausedAt !== undefined);
    await assert.rejects(
      client.exec({ sandboxId: id, command: "echo hi" }, { timeoutMs: NO_HANG_MS }),
      (e) => code(e) === Code.FailedPrecondition && /is paused/.test(ConnectError.from(e).rawMessage),
    );
    await assert.rejects(client.pauseSandbox({ sandboxId: id }), (e) => code(e) === Code.FailedPrecondition);
    const m = (await client.getSandboxMetrics({ sandboxId: id })).metrics!;
    assert.equal(m.memTotalBytes, BigInt(paused.memoryMib) * 1024n * 1024n);
    assert.equal(m.cpuCount, paused.cpuCount);
    const listed = await client.listSandboxes({
      metadata: { suite: "pause-connect" },
      states: [SandboxState.PAUSED],
    });
    assert.deepEqual(
      listed.sandboxes.map((x) => x.sandboxId),
      [id],
    );
    await assert.rejects(
      client.listSandboxes({ states: [SandboxState.DELETED] }),
      (e) => code(e) === Code.InvalidArgument,
    );

    const resumed = (await client.resumeSandbox({ sandboxId: id })).sandbox!;
    assert.equal(resumed.state, SandboxState.RUNNING);
    assert.equal(resumed.pausedAt, undefined);
    await assert.rejects(client.resumeSandbox({ sandboxId: id }), (e) => code(e) === Code.FailedPrecondition);
    const out = await client.exec({ sandboxId: id, command: "echo back" }, { timeoutMs: NO_HANG_MS });
    assert.equal(Buffer.from(out.stdout).toString(), "back\n");
    await assert.rejects(client.pauseSandbox({ sandboxId: "nosuch" }), (e) => code(e) === Code.NotFound);
    await assert.rejects(
      client.pauseSandbox({ sandboxId: "bad id!" }),
      (e) => code(e) === Code.InvalidArgument,
    );
  });

  test("paused behind the gateway's back: its open tunnel is refused with 409, not a hang", async () => {
    // The gateway now holds a kept-alive tunnel to the agent and a fresh lookup saying "running".
    await client.exec({ sandboxId: id, command: "true" }, { timeoutMs: NO_HANG_MS });
    const scheduler = createServiceClient(SchedulerService, s.schedulerUrl);
    await scheduler.pauseSandbox({ sandboxId: id });
    try {
      await assert.rejects(
        client.exec({ sandboxId: id, command: "echo hi" }, { timeoutMs: NO_HANG_MS }),
        (e) =>
          code(e) === Code.FailedPrecondition &&
          /is paused; resume it first/.test(ConnectError.from(e).rawMessage),
      );
      const rest = await s.json<ErrorJson>(`/v1/sandboxes/${id}/exec`, {
        method: "POST",
        body: JSON.stringify({ command: "echo hi" }),
        signal: AbortSignal.timeout(NO_HANG_MS),
      });
      assert.equal(rest.status, 409, JSON.stringify(rest.body));
      assert.equal(rest.body.code, "failed_precondition");
    } finally {
      await scheduler.resumeSandbox({ sandboxId: id });
    }
    const out = await client.exec({ sandboxId: id, command: "echo again" }, { timeoutMs: NO_HANG_MS });
    assert.equal(Buffer.from(out.stdout).toString(), "again\n");
  });
});
