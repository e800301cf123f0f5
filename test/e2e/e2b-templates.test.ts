import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { createApiKey } from "@dnah/gateway";
import { BuildError, Sandbox, Template, waitForPort } from "e2b";
import { AccessTokens } from "../../services/gateway/src/compat/e2b/access-token.js";
import { uploadQuery } from "../../services/gateway/src/compat/e2b/template-upload-token.js";
import { startTestStack, type TestStack } from "./harness.js";

const tag = randomBytes(4).toString("hex");

/**
 * E2B's `Template` builder (v2 build system) through the real, unmodified `e2b` SDK: a build
 * from `base` with apt, a copied file, an env var, a workdir and a start command (an HTTP
 * server); sandboxes from it by name; the server through the port tunnel; a rebuild with one
 * changed step reuses the cached layers; failures are BuildErrors naming the step.
 */
describe("e2b SDK Template builder", () => {
  let s: TestStack;
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
  const name = `e2b-tpl-${tag}`;
  const ctx = mkdtempSync(join(tmpdir(), "e2b-tplctx-"));
  writeFileSync(join(ctx, "index.html"), `hello from template ${tag}\n`);
  const sandboxes: Sandbox[] = [];
  let templateId = "";

  const template = (greeting: string) =>
    Template({ fileContextPath: ctx })
      .fromTemplate("base")
      .aptInstall(["jq"])
      .copy("index.html", "/srv/www/index.html")
      .setEnvs({ GREETING: greeting })
      .setWorkdir("/srv/www")
      .setStartCmd("python3 -m http.server 8080", waitForPort(8080));

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0", DNAH_RATE_LIMIT_PER_MINUTE: "0" });
    opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
  });
  after(async () => {
    for (const sb of sandboxes) await sb.kill().catch(() => undefined);
    await s?.close();
  });

  /** GET through the sandbox's port tunnel, addressed as the SDK's getHost names it. */
  const viaTunnel = (sbx: Sandbox, port: number, path: string) =>
    new Promise<{ status: number; body: string }>((resolve, reject) => {
      const u = new URL(s.url);
      const req = request(
        { host: u.hostname, port: u.port, path, headers: { host: sbx.getHost(port) } },
        (res) => {
          let body = "";
          res.setEncoding("utf8");
          res.on("data", (c: string) => {
            body += c;
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        },
      );
      req.on("error", reject);
      req.end();
    });

  const durations: Record<string, number> = {};

  test("Template.build: logs stream, the build is ready, Template.exists knows the name", async (t) => {
    const logs: string[] = [];
    const t0 = performance.now();
    const info = await Template.build(template("hi"), name, {
      ...opts,
      cpuCount: 1,
      memoryMB: 512,
      onBuildLogs: (e) => logs.push(`${e.level} ${e.message}`),
    });
    durations.first = (performance.now() - t0) / 1000;
    t.diagnostic(`first build: ${durations.first.toFixed(1)} s, ${logs.length} log lines`);
    assert.equal(info.templateId, name);
    assert.deepEqual(info.tags, ["default"]);
    templateId = info.templateId;
    // The SDK's own lines, the upload, and the server's (apt's output among them).
    assert.ok(
      logs.some((l) => l.includes("Uploaded 'index.html'")),
      logs.join("\n"),
    );
    assert.ok(
      logs.some((l) => /jq/.test(l) && /apt|Setting up|RUN/.test(l)),
      logs.join("\n"),
    );
    assert.ok(
      logs.some((l) => l.includes("ready:")),
      logs.join("\n"),
    );
    assert.equal(await Template.exists(name, opts), true);
    assert.equal(await Template.exists(`${name}:default`, opts), true);
    assert.equal(await Template.exists(`no-such-${tag}`, opts), false);
  });

  test("Sandbox.create(name): jq, the copied file, the env, the workdir; the server answers through the tunnel", async () => {
    assert.ok(templateId, "the build test ran first");
    const sbx = await Sandbox.create(name, { ...opts, timeoutMs: 120_000 });
    sandboxes.push(sbx);
    assert.match((await sbx.commands.run("jq --version")).stdout, /^jq-/);
    assert.equal((await sbx.files.read("/srv/www/index.html")).trim(), `hello from template ${tag}`);
    assert.equal((await sbx.commands.run("echo $GREETING")).stdout, "hi\n");
    const page = await viaTunnel(sbx, 8080, "/index.html");
    assert.equal(page.status, 200);
    assert.equal(page.body, `hello from template ${tag}\n`);
    // By `name:default` too (the tag every build gets).
    const byTag = await Sandbox.create(`${name}:default`, { ...opts, timeoutMs: 60_000 });
    sandboxes.push(byTag);
    assert.equal((await viaTunnel(byTag, 8080, "/index.html")).status, 200);
  });

  test("a rebuild with one changed step reuses the cached steps before it", async (t) => {
    assert.ok(templateId, "the build test ran first");
    const logs: string[] = [];
    const t0 = performance.now();
    await Template.build(template("hello again"), name, {
      ...opts,
      onBuildLogs: (e) => logs.push(`${e.level} ${e.message}`),
    });
    durations.second = (performance.now() - t0) / 1000;
    const cached = logs.filter((l) => l.endsWith("(cached)"));
    t.diagnostic(
      `second build: ${durations.second.toFixed(1)} s (first ${durations.first?.toFixed(1)} s); cached: ${cached.length}`,
    );
    // The uploaded files are known by their hash: no second upload.
    assert.ok(
      logs.some((l) => l.includes("Skipping upload of 'index.html', already cached")),
      logs.join("\n"),
    );
    // apt and COPY come before the changed ENV: both from the cache.
    assert.ok(
      cached.some((l) => l.includes("apt-get")),
      logs.join("\n"),
    );
    assert.ok(
      cached.some((l) => l.includes("COPY")),
      logs.join("\n"),
    );
    assert.ok(
      logs.some((l) => /2 cached/.test(l) || /[3-9] cached/.test(l)),
      logs.join("\n"),
    );
    const sbx = await Sandbox.create(name, { ...opts, timeoutMs: 60_000 });
    sandboxes.push(sbx);
    assert.equal((await sbx.commands.run("echo $GREETING")).stdout, "hello again\n");
  });

  test("a failing step is a BuildError; the status names the step", async () => {
    const bad = Template().fromTemplate("base").runCmd("echo fine").runCmd("echo broken >&2; exit 3");
    const logs: string[] = [];
    await assert.rejects(
      Template.build(bad, `e2b-bad-${tag}`, { ...opts, onBuildLogs: (e) => logs.push(e.message) }),
      (err: unknown) => err instanceof BuildError && /exit code 3/.test(err.message),
    );
    // The SDK logs the ids it was given; the status names the SDK's step (1-based).
    const ids = logs.map((l) => /Template created with ID: (\S+), Build ID: (\S+)/.exec(l)).find((m) => m);
    assert.ok(ids, logs.join("\n"));
    const status = await Template.getBuildStatus({ templateId: ids[1]!, buildId: ids[2]! }, opts);
    assert.equal(status.status, "error");
    assert.equal(status.reason?.step, "2");
    assert.match(status.reason?.message ?? "", /exit code 3/);
  });

  test("fromImage of a registry image is refused, naming the fix", async () => {
    await assert.rejects(
      Template.build(Template().fromImage("python:3.12").runCmd("true"), `e2b-img-${tag}`, opts),
      (err: unknown) => err instanceof BuildError && /fromTemplate\('base'\)/.test(err.message),
    );
  });

  test("tags: assign, list, create from name:tag, remove", async () => {
    assert.ok(templateId, "the build test ran first");
    const assigned = await Template.assignTags(`${name}:default`, ["prod"], opts);
    assert.deepEqual(assigned.tags, ["prod"]);
    const tags = await Template.getTags(name, opts);
    assert.deepEqual(tags.map((x) => x.tag).sort(), ["default", "prod"]);
    assert.equal(await Template.exists(`${name}:prod`, opts), true);
    const sbx = await Sandbox.create(`${name}:prod`, { ...opts, timeoutMs: 60_000 });
    sandboxes.push(sbx);
    assert.equal((await sbx.commands.run("echo $GREETING")).stdout, "hello again\n");
    await Template.removeTags(name, ["prod"], opts);
    assert.equal(await Template.exists(`${name}:prod`, opts), false);
  });

  test("upload URLs: signed per key, template and hash; missing, wrong or expired signatures are 403", async () => {
    assert.ok(templateId, "the build test ran first");
    const hash = randomBytes(32).toString("hex");
    const link = await s.json<{ present: boolean; url?: string }>(`/templates/${templateId}/files/${hash}`, {
      headers: { "x-api-key": s.key },
    });
    assert.equal(link.status, 201);
    assert.equal(link.body.present, false);
    const url = new URL(link.body.url!);
    const put = (u: string) => fetch(u, { method: "PUT", body: Buffer.from("not a tar, but bytes") });
    const noSig = new URL(url);
    noSig.search = "";
    assert.equal((await put(noSig.toString())).status, 403);
    const wrong = new URL(url);
    wrong.searchParams.set("signature", "A".repeat(43));
    assert.equal((await put(wrong.toString())).status, 403);
    const otherHash = new URL(url.toString().replace(hash, randomBytes(32).toString("hex")));
    assert.equal((await put(otherHash.toString())).status, 403);
    const tokens = await AccessTokens.load(s.db);
    const owner = url.searchParams.get("owner")!;
    const expired = new URL(url);
    expired.search = uploadQuery(tokens, { owner, templateId, filesHash: hash, expires: 1 });
    assert.equal((await put(expired.toString())).status, 403);
    // The real one stores the bytes under this key's name for them only.
    assert.equal((await put(url.toString())).status, 201);
    const again = await s.json<{ present: boolean }>(`/templates/${templateId}/files/${hash}`, {
      headers: { "x-api-key": s.key },
    });
    assert.deepEqual(again.body, { present: true });
    // Another key neither sees this template's files nor the hash as uploaded.
    const other = await createApiKey(s.db, `e2b-tpl-other-${tag}`);
    const theirs = await fetch(`${s.url}/templates/${templateId}/files/${hash}`, {
      headers: { "x-api-key": other.key },
    });
    assert.equal(theirs.status, 404);
    assert.equal(await Template.exists(name, { ...opts, apiKey: other.key }), false);
  });

  test("Sandbox.deleteSnapshot(name) deletes the caller's template", async () => {
    assert.ok(templateId, "the build test ran first");
    assert.equal(await Sandbox.deleteSnapshot(name, opts), true);
    assert.equal(await Template.exists(name, opts), false);
    assert.equal(await Sandbox.deleteSnapshot(name, opts), false);
  });
});
