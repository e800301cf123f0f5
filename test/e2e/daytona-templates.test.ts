import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { Daytona, DaytonaError, DaytonaNotFoundError, Image, type Sandbox } from "@daytonaio/sdk";
import { eventually, startTestStack, type TestStack } from "./harness.js";

/**
 * Daytona's `Image` builder and snapshots (issue 12) with the real @daytonaio/sdk 0.218.0:
 * a snapshot built from `Image.base("base")` (the SDK's way to say FROM a dnah template)
 * with an apt install, ENV, WORKDIR, a local file uploaded through the gateway's S3 store
 * and an ENTRYPOINT serving HTTP; sandboxes from it; a failing step; `create({image})`.
 */
const tag = randomBytes(4).toString("hex");
/**
 * The package step: a real `apt-get install jq` (network, ~30 s cold) with
 * DNAH_TEMPLATE_NET=1; by default an offline stand-in installs a `jq` script, so CI stays
 * fast and offline. Either way the sandbox runs the `jq` the image got.
 */
const APT = process.env.DNAH_TEMPLATE_NET === "1";
const INSTALL = APT
  ? "apt-get update && apt-get install -y --no-install-recommends jq"
  : `printf '#!/bin/sh\\necho 1\\n' > /usr/local/bin/jq && chmod +x /usr/local/bin/jq && echo installed jq`;
const created: Sandbox[] = [];

/** snapshot.create polls with no timeout of its own. */
function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p,
    new Promise<never>((_, rej) => {
      timer = setTimeout(() => rej(new Error(`${what} timed out after ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

describe("Daytona snapshots and images with the real @daytonaio/sdk", () => {
  let s: TestStack;
  let daytona: Daytona;
  let dir: string;
  /** Test 1's image; test 3 creates from it directly (its layers are cached by then). */
  let siteImage: Image | undefined;

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0" });
    daytona = new Daytona({ apiKey: s.key, apiUrl: `${s.url}/api` });
    dir = mkdtempSync(join(tmpdir(), "dnah-dt-ctx-"));
  });
  after(async () => {
    for (const sb of created) await sb.delete().catch(() => undefined);
    await daytona?.[Symbol.asyncDispose]();
    await s?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("snapshot from an Image → active with logs; a sandbox from it has the package, env, file and a serving entrypoint", async () => {
    const name = `site-${tag}`;
    const indexHtml = join(dir, "index.html");
    writeFileSync(indexHtml, `hello from ${tag}\n`);
    const big = join(dir, "big.bin");
    writeFileSync(big, randomBytes(6 * 1024 * 1024));
    const image = Image.base("base")
      .runCommands(INSTALL)
      .env({ GREETING: "hi there" })
      .workdir("/srv")
      .addLocalFile(indexHtml, "/srv/index.html")
      // Over 5 MiB: the SDK uploads it with a multipart upload.
      .addLocalFile(big, "/opt/big.bin")
      .entrypoint(["python3", "-m", "http.server", "8080"]);
    siteImage = image;
    const logs: string[] = [];
    const snap = await bounded(
      daytona.snapshot.create({ name, image }, { onLogs: (l) => logs.push(l) }),
      300_000,
      "snapshot build",
    );
    assert.equal(snap.state, "active");
    assert.deepEqual(snap.entrypoint, ["python3", "-m", "http.server", "8080"]);
    const all = logs.join("\n");
    assert.match(all, new RegExp(`Creating snapshot ${name}`));
    assert.match(all, APT ? /jq/ : /installed jq/, "the build's own log lines were streamed");
    assert.match(all, new RegExp(`Created snapshot ${name} \\(active\\)`));
    assert.equal((await daytona.snapshot.get(name)).id, snap.id);
    assert.equal((await daytona.snapshot.get(snap.id)).name, name);
    const page = await daytona.snapshot.list(1, 100);
    assert.ok(page.items.some((x) => x.id === snap.id));
    await assert.rejects(daytona.snapshot.activate(snap), /already active/);

    const sb = await daytona.create({ snapshot: name }, { timeout: 120 });
    created.push(sb);
    assert.equal(sb.state, "started");
    assert.equal(sb.snapshot, name);
    assert.match((await sb.process.executeCommand("jq -n '{a: 1} | .a'")).result.trim(), /^1$/);
    assert.equal((await sb.process.executeCommand("echo $GREETING")).result.trim(), "hi there");
    assert.equal((await sb.process.executeCommand("cat /srv/index.html")).result.trim(), `hello from ${tag}`);
    assert.equal(
      (await sb.process.executeCommand("stat -c %s /opt/big.bin")).result.trim(),
      String(6 * 1024 * 1024),
    );
    // The entrypoint runs in the background (started comes first, as in Daytona); its port
    // answers through the preview link.
    const link = await sb.getPreviewLink(8080);
    const body = await eventually(async () => {
      const r = await fetch(`${link.url}index.html`, {
        headers: { "x-daytona-preview-token": link.token },
      }).catch(() => undefined);
      return r?.status === 200 ? r.text() : undefined;
    }, 30_000);
    assert.equal(body.trim(), `hello from ${tag}`);

    // The same name again is Daytona's 409; delete removes it.
    await assert.rejects(
      daytona.snapshot.create({ name, image: Image.base("base") }),
      (e: unknown) => e instanceof DaytonaError && /already exists/.test(e.message),
    );
    await daytona.snapshot.delete(snap);
    await assert.rejects(daytona.snapshot.get(name), (e: unknown) => e instanceof DaytonaNotFoundError);
  });

  test("a failing step → build_failed with the step's error; registry images are refused clearly", async () => {
    const name = `bad-${tag}`;
    const logs: string[] = [];
    await assert.rejects(
      bounded(
        daytona.snapshot.create(
          { name, image: Image.base("base").runCommands("echo about to fail && exit 3") },
          { onLogs: (l) => logs.push(l) },
        ),
        120_000,
        "failing build",
      ),
      (e: unknown) =>
        e instanceof DaytonaError &&
        /Failed to create snapshot\. Name: bad-.* Reason: .*(exit|status|code).*3/.test(e.message),
    );
    assert.match(logs.join("\n"), /about to fail/);
    const snap = await daytona.snapshot.get(name);
    assert.equal(snap.state, "build_failed");
    assert.ok(snap.errorReason);
    await assert.rejects(daytona.create({ snapshot: name }), /is build_failed/);
    await daytona.snapshot.delete(name);

    await assert.rejects(
      daytona.snapshot.create({ name: `reg-${tag}`, image: Image.debianSlim("3.12") }),
      (e: unknown) => e instanceof DaytonaError && /registry image/.test(e.message),
    );
    await assert.rejects(
      daytona.snapshot.create({ name: `reg2-${tag}`, image: "python:3.12-slim" }),
      (e: unknown) => e instanceof DaytonaError && /registry image/.test(e.message),
    );
    // imageName naming a dnah template is that template, active at once.
    const alias = await daytona.snapshot.create({ name: `alias-${tag}`, image: "base" });
    assert.equal(alias.state, "active");
    await daytona.snapshot.delete(alias);
  });

  test("create({image}) builds (from cached layers here), starts, and a second create reuses the template", async () => {
    assert.ok(siteImage, "test 1 made the image");
    const sb = await daytona.create({ image: siteImage, envVars: { EXTRA: "x" } }, { timeout: 240 });
    created.push(sb);
    assert.equal(sb.state, "started");
    assert.match(sb.snapshot ?? "", /^daytona-img-[0-9a-f]{40}$/);
    assert.equal((await sb.process.executeCommand("cat /srv/index.html")).result.trim(), `hello from ${tag}`);
    assert.equal((await sb.process.executeCommand("echo $GREETING $EXTRA")).result.trim(), "hi there x");
    const logUrl = (await s.json<{ url: string }>(`/api/sandbox/${sb.id}/build-logs-url`)).body.url;
    const log = await (await s.api(new URL(logUrl).pathname)).text();
    assert.match(log, /COPY|cached/i);
    const again = await daytona.create({ image: siteImage }, { timeout: 60 });
    created.push(again);
    assert.equal(again.snapshot, sb.snapshot);
  });

  test("the S3 store checks signatures and organizations", async () => {
    const access = (await s.json<Record<string, string>>("/api/object-storage/push-access")).body;
    assert.ok(access.region);
    const base = `${access.storageUrl}/${access.bucket}`;
    const unsigned = await fetch(`${base}/?list-type=2&prefix=${access.organizationId}%2F`);
    assert.equal(unsigned.status, 403);
    assert.match(await unsigned.text(), /<Code>AccessDenied<\/Code>/);
    const forged = await fetch(`${base}/?list-type=2&prefix=x`, {
      headers: {
        authorization: `AWS4-HMAC-SHA256 Credential=${access.accessKey}/20260101/local/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=${"0".repeat(64)}`,
        "x-amz-date": new Date().toISOString().replace(/[-:]/g, "").replace(/\.\d+/, ""),
        "x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
      },
    });
    assert.equal(forged.status, 403);
    assert.match(await forged.text(), /SignatureDoesNotMatch/);
  });
});
