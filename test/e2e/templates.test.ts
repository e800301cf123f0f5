import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { Code, ConnectError } from "@connectrpc/connect";
import { createApiKey } from "@dnah/gateway";
import { sandboxClient, startTestStack, type TestStack } from "./harness.js";

/**
 * Templates end to end through the native REST API: a context tar uploaded by its sha256, a
 * template built from base with an apt package, the copied file, an env var, a workdir and a
 * start command (a small HTTP server, ready on its port), sandboxes started from it (natively,
 * and through the E2B API to reach the server over the port tunnel), a rebuild that reruns only
 * the changed step, a cancelled build, and another key's view.
 *
 * Layers are cached in the vmm's cache folder (/var/cache/dnah), shared across runs: the apt,
 * copy and workdir steps are built once per machine (the first run is slower), the last step
 * (which names the run) every run. DNAH_TEMPLATE_COLD_BUILD=1 forces the first build to build
 * every step (apt-get included), to measure a cold build against the cached rebuild.
 */
const BUILD_TIMEOUT_MS = 600_000;
const COLD = process.env.DNAH_TEMPLATE_COLD_BUILD === "1";
const HELLO = "hello from the context\n";
const run = promisify(execFile);

interface BuildJson {
  buildId: string;
  status: string;
  reason: string | null;
  hostId: string;
  result: { cachedSteps: number; builtSteps: number; durationMs: number; sizeBytes: number } | null;
}

describe("templates (native REST, real vmm builds, jail sandboxes)", () => {
  let s: TestStack;
  let bobKey: string;
  let ctxDir: string;
  let sha256: string;
  const nonce = randomBytes(4).toString("hex");
  const NAME = `e2e-web-${nonce}`;
  const sandboxes: string[] = [];
  const durations: string[] = [];

  const as = (key: string) => ({ authorization: `Bearer ${key}` });
  const post = (path: string, body: unknown, key?: string) =>
    s.json(path, {
      method: "POST",
      body: JSON.stringify(body),
      ...(key ? { headers: as(key) } : {}),
    });

  /** The log's timing lines (each built step's time, the total), for the test's output. */
  const timings = (log: string) =>
    log
      .split("\n")
      .filter((l) => / done in |ready: /.test(l))
      .map((l) => `  ${l}`);

  /** Follows the build's log (text/plain) to its end and returns the build. */
  async function follow(buildId: string, name = NAME): Promise<{ build: BuildJson; log: string }> {
    const res = await s.api(`/v1/templates/${name}/builds/${buildId}/logs?follow=true`, {
      signal: AbortSignal.timeout(BUILD_TIMEOUT_MS),
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain/);
    const log = await res.text();
    assert.match(log, new RegExp(`dnah: build ${buildId} (ready|error|cancelled)`), log.slice(-2000));
    const got = await s.json<{ build: BuildJson }>(`/v1/templates/${name}/builds/${buildId}`);
    return { build: got.body.build, log };
  }

  const steps = (last: string) => [
    { type: "apt", packages: ["jq"] },
    { type: "copy", src: "hello.txt", dest: "/opt/app/hello.txt", filesHash: sha256 },
    { type: "env", vars: { GREETING: "hi from the template" } },
    { type: "workdir", path: "/opt/app" },
    { type: "run", command: last },
  ];
  const START = { command: "python3 -m http.server 8080", readyPort: 8080 };

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0", DNAH_TEMPLATE_CONTEXT_MAX_BYTES: String(1024 * 1024) });
    bobKey = (await createApiKey(s.db, "templates-bob")).key;
    ctxDir = await mkdtemp(join(tmpdir(), "dnah-tpl-"));
    await writeFile(join(ctxDir, "hello.txt"), HELLO, { mode: 0o644 });
    // The same bytes every run (no mtime, no owner): the same hash, so its layer is cached.
    const tar = (
      await run(
        "tar",
        [
          "--mtime=@0",
          "--owner=0",
          "--group=0",
          "--numeric-owner",
          "--mode=0644",
          "-cf",
          "-",
          "-C",
          ctxDir,
          "hello.txt",
        ],
        { encoding: "buffer" },
      )
    ).stdout;
    sha256 = createHash("sha256").update(tar).digest("hex");
    const up = await s.api(`/v1/templates/files/${sha256}`, {
      method: "POST",
      headers: { "content-type": "application/x-tar" },
      body: tar,
    });
    assert.equal(up.status, 201, await up.clone().text());
    assert.deepEqual(await up.json(), { sha256, sizeBytes: tar.length });
  });
  after(async () => {
    for (const id of sandboxes) await s?.api(`/v1/sandboxes/${id}`, { method: "DELETE" });
    await s?.api(`/v1/templates/${NAME}`, { method: "DELETE" });
    await s?.close();
    if (ctxDir) await rm(ctxDir, { recursive: true, force: true });
    for (const d of durations) console.log(`# ${d}`);
  });

  test("build contexts: stored by sha256, checked, bounded", async () => {
    const head = await s.api(`/v1/templates/files/${sha256}`, { method: "HEAD" });
    assert.equal(head.status, 200);
    assert.deepEqual((await s.json(`/v1/templates/files/${sha256}`)).body, { sha256, present: true });
    const absent = "0".repeat(64);
    assert.equal((await s.api(`/v1/templates/files/${absent}`, { method: "HEAD" })).status, 404);
    const wrong = await s.api(`/v1/templates/files/${absent}`, { method: "POST", body: "not a tar" });
    assert.equal(wrong.status, 400);
    assert.match(
      ((await wrong.json()) as { message: string }).message,
      /^sha256 mismatch: the 9 bytes sent hash to /,
    );
    const big = randomBytes(1024 * 1024 + 1);
    const tooBig = await s.api(`/v1/templates/files/${createHash("sha256").update(big).digest("hex")}`, {
      method: "POST",
      body: big,
    });
    assert.equal(tooBig.status, 413);
    assert.equal(((await tooBig.json()) as { code: string }).code, "payload_too_large");
    assert.equal((await s.api("/v1/templates/files/xyz")).status, 400);
  });

  test("FROM a registry image, or no template, is a clear 400", async () => {
    for (const body of [
      { name: "x", dockerfile: "FROM python:3.12\nRUN pip install flask\n" },
      { name: "x", from: "ghcr.io/org/image:1" },
    ]) {
      const r = await post("/v1/templates", body);
      assert.equal(r.status, 400, JSON.stringify(r.body));
      assert.match(
        (r.body as { message: string }).message,
        /FROM of a registry image needs an image store; FROM a dnah template \(base, code-interpreter, or one of yours\)/,
      );
    }
    const none = await post("/v1/templates", { name: "x", from: "no-such-template" });
    assert.equal(none.status, 400);
    assert.match(
      (none.body as { message: string }).message,
      /^FROM 'no-such-template': no template of that name/,
    );
    const builtin = await post("/v1/templates", { name: "base", steps: [] });
    assert.equal(builtin.status, 403);
    assert.equal((builtin.body as { code: string }).code, "permission_denied");
  });

  test("builds a template and starts sandboxes from it; a rebuild reuses the cache", async () => {
    const first = await post("/v1/templates", {
      name: NAME,
      public: true,
      steps: steps(`echo first-${nonce} > /opt/app/built.txt`),
      start: START,
      force: COLD,
    });
    assert.equal(first.status, 202, JSON.stringify(first.body));
    const b1 = first.body as { template: { status: string; owned: boolean }; build: BuildJson };
    assert.equal(b1.template.owned, true);
    assert.equal(b1.build.status, "building");
    const started = Date.now();
    const one = await follow(b1.build.buildId);
    assert.equal(one.build.status, "ready", `${one.build.reason}\n${one.log.slice(-3000)}`);
    durations.push(
      `first build: ${one.build.result?.durationMs} ms on the host (${Date.now() - started} ms seen), ` +
        `${one.build.result?.cachedSteps} cached, ${one.build.result?.builtSteps} built`,
      ...timings(one.log),
    );
    assert.match(one.log, /step 1\/5 RUN/);
    // The last step is new in every run; forced, every file-changing step is built.
    assert.ok((one.build.result?.builtSteps ?? 0) >= (COLD ? 4 : 1), JSON.stringify(one.build.result));

    const t = await s.json<{ template: { status: string; readyBuildId: string } }>(`/v1/templates/${NAME}`);
    assert.equal(t.body.template.status, "ready");
    assert.equal(t.body.template.readyBuildId, b1.build.buildId);

    // A sandbox from it, through the E2B API and by another key (it is public); its server
    // answers through the gateway's port tunnel (E2B's sandbox traffic).
    const e2b = await s.json<{ sandboxID: string }>("/sandboxes", {
      method: "POST",
      body: JSON.stringify({ templateID: NAME }),
      headers: as(bobKey),
    });
    assert.equal(e2b.status, 201, JSON.stringify(e2b.body));
    const id = e2b.body.sandboxID;
    sandboxes.push(id);
    const served = await fetch(`${s.url}/hello.txt`, {
      headers: { "e2b-sandbox-id": id, "e2b-sandbox-port": "8080" },
    });
    assert.equal(served.status, 200);
    assert.equal(await served.text(), HELLO);
    // The package, the file, the variable (native exec reaches it too).
    const exec = async (command: string, sandboxId = id) => {
      const r = await post(`/v1/sandboxes/${sandboxId}/exec`, { command });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      return r.body as { exitCode: number; stdout: string; stderr: string };
    };
    const jq = await exec("jq --version");
    assert.equal(jq.exitCode, 0, jq.stderr);
    assert.match(jq.stdout, /^jq-1\./);
    assert.equal((await exec("cat /opt/app/hello.txt")).stdout, HELLO);
    assert.equal((await exec("printenv GREETING")).stdout, "hi from the template\n");
    assert.equal((await exec("cat /opt/app/built.txt")).stdout, `first-${nonce}\n`);

    // Rebuild with the last step changed: everything before it comes from the cache.
    const second = await post("/v1/templates", {
      name: NAME,
      public: true,
      steps: steps(`echo second-${nonce} > /opt/app/built.txt`),
      start: START,
    });
    assert.equal(second.status, 202, JSON.stringify(second.body));
    const b2 = second.body as { template: { status: string }; build: BuildJson };
    assert.equal(b2.template.status, "ready", "its first build still serves");
    const again = Date.now();
    const two = await follow(b2.build.buildId);
    assert.equal(two.build.status, "ready", `${two.build.reason}\n${two.log.slice(-3000)}`);
    durations.push(
      `rebuild (last step changed): ${two.build.result?.durationMs} ms on the host (${Date.now() - again} ms seen), ` +
        `${two.build.result?.cachedSteps} cached, ${two.build.result?.builtSteps} built`,
      ...timings(two.log),
    );
    assert.deepEqual(
      [two.build.result?.cachedSteps, two.build.result?.builtSteps],
      [3, 1],
      "apt, copy and workdir from the cache; only the changed RUN built",
    );
    assert.match(two.log, /step 1\/5 RUN .*\(cached\)/);
    // New sandboxes (native API) start from the new build.
    const sb2 = await post("/v1/sandboxes", { templateId: NAME });
    assert.equal(sb2.status, 201, JSON.stringify(sb2.body));
    const id2 = (sb2.body as { sandboxId: string }).sandboxId;
    sandboxes.push(id2);
    assert.equal((await exec("cat /opt/app/built.txt", id2)).stdout, `second-${nonce}\n`);
  });

  test("a cancelled build stops quickly; the template keeps its last good build", async () => {
    const before = await s.json<{ template: { readyBuildId: string } }>(`/v1/templates/${NAME}`);
    const res = await post("/v1/templates", {
      name: NAME,
      public: true,
      steps: [...steps(`echo second-${nonce} > /opt/app/built.txt`), { type: "run", command: "sleep 60" }],
      start: START,
    });
    assert.equal(res.status, 202, JSON.stringify(res.body));
    const { buildId } = (res.body as { build: BuildJson }).build;
    // Wait until the sleep step runs on the host.
    const deadline = Date.now() + BUILD_TIMEOUT_MS;
    for (;;) {
      const g = await s.json<{ build: BuildJson; logs: { message: string }[] }>(
        `/v1/templates/${NAME}/builds/${buildId}`,
      );
      if (g.body.logs.some((l) => /step 6\/6 RUN sleep 60/.test(l.message))) break;
      assert.equal(g.body.build.status, "building", JSON.stringify(g.body));
      assert.ok(Date.now() < deadline, "the sleep step never started");
      await new Promise((r) => setTimeout(r, 200));
    }
    const t0 = Date.now();
    const c = await post(`/v1/templates/${NAME}/builds/${buildId}/cancel`, {});
    const cancelMs = Date.now() - t0;
    assert.equal(c.status, 200, JSON.stringify(c.body));
    assert.equal((c.body as { build: BuildJson }).build.status, "cancelled");
    assert.ok(cancelMs < 10_000, `cancel took ${cancelMs} ms`);
    durations.push(`cancel of a running step: ${cancelMs} ms`);
    const after = await s.json<{ template: { status: string; readyBuildId: string } }>(
      `/v1/templates/${NAME}`,
    );
    assert.equal(after.body.template.status, "ready");
    assert.equal(after.body.template.readyBuildId, before.body.template.readyBuildId);
    const again = await post(`/v1/templates/${NAME}/builds/${buildId}/cancel`, {});
    assert.equal(again.status, 409);
  });

  test("another key can neither see nor use a private template", async () => {
    const priv = `e2e-private-${nonce}`;
    const r = await post("/v1/templates", { name: priv, steps: [{ type: "env", vars: { SECRET: "mine" } }] });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    const b = await follow((r.body as { build: BuildJson }).build.buildId, priv);
    assert.equal(b.build.status, "ready", b.log);
    try {
      const mine = await s.json<{ templates: { templateId: string; owned: boolean }[] }>("/v1/templates");
      assert.ok(mine.body.templates.some((t) => t.templateId === priv && t.owned));
      const theirs = await s.json<{ templates: { templateId: string }[] }>("/v1/templates", {
        headers: as(bobKey),
      });
      assert.ok(!theirs.body.templates.some((t) => t.templateId === priv));
      assert.ok(theirs.body.templates.some((t) => t.templateId === "base"));
      assert.ok(
        theirs.body.templates.some((t) => t.templateId === NAME),
        "the public one",
      );
      assert.equal((await s.json(`/v1/templates/${priv}`, { headers: as(bobKey) })).status, 404);
      const use = await post("/v1/sandboxes", { templateId: priv }, bobKey);
      assert.equal(use.status, 404, JSON.stringify(use.body));
      // Connect CreateSandbox knows its caller too: the owner starts it, Bob does not see it.
      await assert.rejects(
        sandboxClient({ url: s.url, key: bobKey }).createSandbox({ templateId: priv }),
        (e) => e instanceof ConnectError && e.code === Code.NotFound,
      );
      const mineSb = await sandboxClient(s).createSandbox({ templateId: priv });
      sandboxes.push(mineSb.sandbox!.sandboxId);
      assert.equal(mineSb.sandbox?.templateId, priv);
      const build = await s.json(`/v1/templates/${priv}/builds/${b.build.buildId}`, { headers: as(bobKey) });
      assert.equal(build.status, 404);
      const take = await post("/v1/templates", { name: priv, steps: [] }, bobKey);
      assert.equal(take.status, 409);
      assert.equal(
        (await s.api(`/v1/templates/${priv}`, { method: "DELETE", headers: as(bobKey) })).status,
        404,
      );
      // The public one: visible and usable, but not Bob's to delete.
      const del = await s.api(`/v1/templates/${NAME}`, { method: "DELETE", headers: as(bobKey) });
      assert.equal(del.status, 403);
    } finally {
      assert.equal((await s.api(`/v1/templates/${priv}`, { method: "DELETE" })).status, 204);
    }
    assert.equal((await s.json(`/v1/templates/${priv}`)).status, 404);
  });
});
