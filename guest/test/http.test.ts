import assert from "node:assert/strict";
import { mkdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { gunzipSync, gzipSync } from "node:zlib";
import { Code, ConnectError } from "@connectrpc/connect";
import { fileSignature } from "../src/auth.js";
import { collect, startGuest, type TestGuest } from "./helpers.js";

let g: TestGuest;
before(async () => {
  g = await startGuest();
});
after(() => g.close());

const ALL_BYTES = Buffer.from(Array.from({ length: 256 }, (_, i) => i));

function multipart(parts: { field: string; filename: string; data: Buffer }[]): {
  body: Buffer;
  type: string;
} {
  const boundary = "----dnahBoundary7MA4YWxkTrZu0gW";
  const chunks: Buffer[] = [];
  for (const p of parts) {
    chunks.push(
      Buffer.from(
        `--${boundary}\r\nContent-Disposition: form-data; name="${p.field}"; filename="${p.filename}"\r\n` +
          "Content-Type: application/octet-stream\r\n\r\n",
      ),
      p.data,
      Buffer.from("\r\n"),
    );
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return { body: Buffer.concat(chunks), type: `multipart/form-data; boundary=${boundary}` };
}

describe("plain HTTP", () => {
  test("GET /health → 204, no-store, X-Envd-Version", async () => {
    const r = await g.http("GET", "/health");
    assert.equal(r.status, 204);
    assert.equal(r.headers["cache-control"], "no-store");
    assert.equal(r.headers["x-envd-version"], "0.6.13");
    assert.equal(r.body.length, 0);
  });

  test("unknown path → 404 JSON, wrong method → 405", async () => {
    const r = await g.http("GET", "/nope");
    assert.equal(r.status, 404);
    assert.equal(JSON.parse(r.body.toString()).code, 404);
    assert.equal((await g.http("DELETE", "/files")).status, 405);
  });

  test("multipart upload: several files at full paths, parents created; download is binary-safe", async () => {
    const a = join(g.dir, "up", "dir", "sub", "m1.bin");
    const b = join(g.dir, "up", "other", "m2.txt");
    const { body, type } = multipart([
      { field: "file", filename: a, data: ALL_BYTES },
      { field: "file", filename: b, data: Buffer.from("second") },
    ]);
    const r = await g.http("POST", "/files", { headers: { "content-type": type }, body });
    assert.equal(r.status, 200, r.body.toString());
    assert.deepEqual(JSON.parse(r.body.toString()), [
      { path: a, name: "m1.bin", type: "file" },
      { path: b, name: "m2.txt", type: "file" },
    ]);
    assert.deepEqual(await readFile(a), ALL_BYTES);
    assert.equal(await readFile(b, "utf8"), "second");

    const d = await g.http("GET", `/files?path=${encodeURIComponent(a)}`);
    assert.equal(d.status, 200);
    assert.equal(d.headers["content-type"], "application/octet-stream");
    assert.equal(d.headers["content-length"], "256");
    assert.match(String(d.headers["content-disposition"]), /inline; filename=m1\.bin/);
    assert.deepEqual(d.body, ALL_BYTES);

    const z = await g.http("GET", `/files?path=${encodeURIComponent(a)}`, {
      headers: { "accept-encoding": "gzip, deflate" },
    });
    assert.equal(z.headers["content-encoding"], "gzip");
    assert.deepEqual(gunzipSync(z.body), ALL_BYTES);

    const range = await g.http("GET", `/files?path=${encodeURIComponent(a)}`, {
      headers: { range: "bytes=10-19" },
    });
    assert.equal(range.status, 206);
    assert.deepEqual(range.body, ALL_BYTES.subarray(10, 20));
  });

  test("multipart with ?path= writes there; duplicate destinations are refused", async () => {
    const target = join(g.dir, "single", "s.txt");
    const one = multipart([{ field: "file", filename: "ignored.txt", data: Buffer.from("one") }]);
    const r = await g.http("POST", `/files?path=${encodeURIComponent(target)}`, {
      headers: { "content-type": one.type },
      body: one.body,
    });
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(await readFile(target, "utf8"), "one");
    const two = multipart([
      { field: "file", filename: "x", data: Buffer.from("1") },
      { field: "file", filename: "y", data: Buffer.from("2") },
    ]);
    const dup = await g.http("POST", `/files?path=${encodeURIComponent(target)}`, {
      headers: { "content-type": two.type },
      body: two.body,
    });
    assert.equal(dup.status, 400);
    assert.match(JSON.parse(dup.body.toString()).message, /cannot upload multiple files to the same path/);
  });

  test("octet-stream upload, plain and gzip-encoded; relative path under home", async () => {
    const target = join(g.dir, "raw", "r.bin");
    const r = await g.http("POST", `/files?path=${encodeURIComponent(target)}`, {
      headers: { "content-type": "application/octet-stream" },
      body: ALL_BYTES,
    });
    assert.equal(r.status, 200, r.body.toString());
    assert.deepEqual(JSON.parse(r.body.toString()), [{ path: target, name: "r.bin", type: "file" }]);
    assert.deepEqual(await readFile(target), ALL_BYTES);

    const gz = await g.http("POST", `/files?path=${encodeURIComponent(target)}`, {
      headers: { "content-type": "application/octet-stream", "content-encoding": "gzip" },
      body: gzipSync(Buffer.from("compressed!")),
    });
    assert.equal(gz.status, 200, gz.body.toString());
    assert.equal(await readFile(target, "utf8"), "compressed!");

    const noPath = await g.http("POST", "/files", {
      headers: { "content-type": "application/octet-stream" },
      body: "x",
    });
    assert.equal(noPath.status, 400);

    const rel = `dnah-guest-upload-${process.pid}.txt`;
    const relUp = await g.http("POST", `/files?path=${rel}`, {
      headers: { "content-type": "application/octet-stream" },
      body: "rel",
    });
    const [entry] = JSON.parse(relUp.body.toString()) as { path: string }[];
    assert.ok(entry?.path.endsWith(`/${rel}`));
    const fs = g.fs();
    assert.equal((await fs.stat({ path: rel })).entry?.path, entry?.path);
    await fs.remove({ path: rel });
  });

  test("metadata: X-Metadata-* headers become user.e2b.* xattrs, read back by Stat and ListDir", async () => {
    const dir = join(g.dir, "meta");
    const target = join(dir, "m.txt");
    const up = await g.http("POST", `/files?path=${encodeURIComponent(target)}`, {
      headers: {
        "content-type": "application/octet-stream",
        "X-Metadata-Owner": "alice",
        "x-metadata-kind": "report",
      },
      body: "with metadata",
    });
    assert.equal(up.status, 200, up.body.toString());
    assert.deepEqual(JSON.parse(up.body.toString()), [
      { path: target, name: "m.txt", type: "file", metadata: { owner: "alice", kind: "report" } },
    ]);
    const fs = g.fs(true);
    assert.deepEqual((await fs.stat({ path: target })).entry?.metadata, { owner: "alice", kind: "report" });
    const listed = await fs.listDir({ path: dir });
    assert.deepEqual(listed.entries[0]?.metadata, { owner: "alice", kind: "report" });

    const again = await g.http("POST", `/files?path=${encodeURIComponent(target)}`, {
      headers: { "content-type": "application/octet-stream", "X-Metadata-Kind": "draft" },
      body: "rewritten",
    });
    assert.deepEqual(JSON.parse(again.body.toString())[0].metadata, { kind: "draft" });
    const plain = await g.http("POST", `/files?path=${encodeURIComponent(target)}`, {
      headers: { "content-type": "application/octet-stream" },
      body: "no metadata",
    });
    assert.equal(JSON.parse(plain.body.toString())[0].metadata, undefined);
    assert.deepEqual((await fs.stat({ path: target })).entry?.metadata, {});

    const bad = await g.http("POST", `/files?path=${encodeURIComponent(target)}`, {
      headers: { "content-type": "application/octet-stream", "X-Metadata-Big": "x".repeat(5000) },
      body: "x",
    });
    assert.equal(bad.status, 400);
    assert.match(JSON.parse(bad.body.toString()).message, /invalid metadata/);
  });

  test("GET /files errors: 404 JSON when missing, 400 for a directory, 401 for an unknown user", async () => {
    const missing = await g.http("GET", `/files?path=${encodeURIComponent(join(g.dir, "missing"))}`);
    assert.equal(missing.status, 404);
    const body = JSON.parse(missing.body.toString());
    assert.equal(body.code, 404);
    assert.match(body.message, /does not exist/);
    await mkdir(join(g.dir, "adir"), { recursive: true });
    assert.equal((await g.http("GET", `/files?path=${encodeURIComponent(join(g.dir, "adir"))}`)).status, 400);
    assert.equal((await g.http("GET", `/files?path=/etc/hostname&username=no-such-user-x`)).status, 401);
  });

  test("POST /files into a directory path → 400; unsupported content type → 400", async () => {
    await mkdir(join(g.dir, "isdir"), { recursive: true });
    const r = await g.http("POST", `/files?path=${encodeURIComponent(join(g.dir, "isdir"))}`, {
      headers: { "content-type": "application/octet-stream" },
      body: "x",
    });
    assert.equal(r.status, 400);
    const t = await g.http("POST", `/files?path=${encodeURIComponent(join(g.dir, "t"))}`, {
      headers: { "content-type": "text/plain" },
      body: "x",
    });
    assert.equal(t.status, 400);
  });

  test("GET /envs and GET /metrics", async () => {
    const envs = JSON.parse((await g.http("GET", "/envs")).body.toString());
    assert.equal(envs.E2B_SANDBOX, "true");
    const m = JSON.parse((await g.http("GET", "/metrics")).body.toString());
    for (const k of [
      "ts",
      "cpu_count",
      "cpu_used_pct",
      "mem_total",
      "mem_used",
      "mem_total_mib",
      "mem_used_mib",
      "disk_used",
      "disk_total",
    ]) {
      assert.equal(typeof m[k], "number", k);
    }
    assert.ok(m.cpu_count > 0 && m.mem_total > 0 && m.disk_total > 0);
  });

  test("/init: bad JSON → 400, oversized → 413, envVars merge", async () => {
    assert.equal((await g.http("POST", "/init", { body: "{nope" })).status, 400);
    assert.equal(
      (await g.http("POST", "/init", { body: JSON.stringify({ envVars: { A: 1 } }) })).status,
      400,
    );
    assert.equal((await g.http("POST", "/init", { body: Buffer.alloc(2 * 1024 * 1024, 32) })).status, 413);
    assert.equal(
      (await g.http("POST", "/init", { body: JSON.stringify({ envVars: { ONE: "1" } }) })).status,
      204,
    );
    const r = await g.http("POST", "/init", { body: JSON.stringify({ envVars: { TWO: "2" } }) });
    assert.equal(r.status, 204);
    assert.equal(r.headers["x-envd-version"], "0.6.13");
    const envs = JSON.parse((await g.http("GET", "/envs")).body.toString());
    assert.equal(envs.ONE, "1");
    assert.equal(envs.TWO, "2");
  });
});

describe("access token", () => {
  let t: TestGuest;
  const token = "s3cret-token";
  before(async () => {
    t = await startGuest({}, { accessToken: token });
  });
  after(() => t.close());

  test("RPCs and /envs need X-Access-Token once /init set one: 401 JSON otherwise", async () => {
    const env = await t.http("GET", "/envs");
    assert.equal(env.status, 401);
    assert.deepEqual(JSON.parse(env.body.toString()), {
      code: 401,
      message: "unauthorized access, please provide a valid access token or method signing if supported",
    });
    try {
      await t.fs().stat({ path: "/" });
      assert.fail("expected 401");
    } catch (err) {
      assert.equal(ConnectError.from(err).code, Code.Unauthenticated);
    }
    try {
      await collect(t.process().start({ process: { cmd: "true" }, stdin: false }));
      assert.fail("expected 401");
    } catch (err) {
      assert.equal(ConnectError.from(err).code, Code.Unauthenticated);
    }
    const ok = await t.fs(false, { "X-Access-Token": token }).stat({ path: "/" });
    assert.equal(ok.entry?.path, "/");
    assert.equal((await t.http("GET", "/health")).status, 204);
  });

  test("/files: header token, or a valid unexpired signature", async () => {
    const path = join(t.dir, "signed.txt");
    await writeFile(path, "signed content");
    assert.equal((await t.http("GET", `/files?path=${encodeURIComponent(path)}`)).status, 401);
    assert.equal(
      (
        await t.http("GET", `/files?path=${encodeURIComponent(path)}`, {
          headers: { "X-Access-Token": "wrong" },
        })
      ).status,
      401,
    );
    const withHeader = await t.http("GET", `/files?path=${encodeURIComponent(path)}`, {
      headers: { "X-Access-Token": token },
    });
    assert.equal(withHeader.body.toString(), "signed content");

    const sig = fileSignature(path, "read", "", token, undefined);
    const signed = await t.http(
      "GET",
      `/files?path=${encodeURIComponent(path)}&signature=${encodeURIComponent(sig)}`,
    );
    assert.equal(signed.status, 200);
    assert.equal(signed.body.toString(), "signed content");

    const exp = Math.floor(Date.now() / 1000) + 60;
    const sigExp = fileSignature(path, "write", t.user, token, exp);
    const up = await t.http(
      "POST",
      `/files?path=${encodeURIComponent(path)}&username=${t.user}&signature=${encodeURIComponent(sigExp)}&signature_expiration=${exp}`,
      { headers: { "content-type": "application/octet-stream" }, body: "rewritten" },
    );
    assert.equal(up.status, 200, up.body.toString());
    assert.equal(await readFile(path, "utf8"), "rewritten");

    const past = Math.floor(Date.now() / 1000) - 5;
    const expired = fileSignature(path, "read", "", token, past);
    const late = await t.http(
      "GET",
      `/files?path=${encodeURIComponent(path)}&signature=${encodeURIComponent(expired)}&signature_expiration=${past}`,
    );
    assert.equal(late.status, 401);
    assert.match(JSON.parse(late.body.toString()).message, /expired/);
    assert.equal((await stat(path)).size, "rewritten".length);
  });

  test("/init cannot replace the token without proving the current one", async () => {
    assert.equal(
      (await t.http("POST", "/init", { body: JSON.stringify({ accessToken: "stolen" }) })).status,
      401,
    );
    assert.equal(
      (await t.http("POST", "/init", { body: JSON.stringify({ envVars: { X: "1" } }) })).status,
      401,
    );
    const same = await t.http("POST", "/init", {
      body: JSON.stringify({ accessToken: token, envVars: { X: "1" } }),
    });
    assert.equal(same.status, 204);
  });
});
