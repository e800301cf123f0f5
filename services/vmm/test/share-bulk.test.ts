import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { silentLogger } from "@dnah/platform";
import Fastify, { type FastifyInstance } from "fastify";
import { extract, pack } from "tar-stream";
import { addRange, firstGap, parseContentRange } from "../src/share/chunks.js";
import { ShareQuota } from "../src/share/quota.js";
import { shareRoutes } from "../src/share/routes.js";
import { tarEntrySegments } from "../src/share/tar.js";
import { UploadStore, uploadsDirOf } from "../src/share/uploads.js";

const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");
const KIB = 1024;

/** A tar made of these entries (tar-stream, in memory: the tests' tars are small). */
async function tarOf(
  entries: Array<{
    name: string;
    type?: "file" | "directory" | "symlink" | "link" | "fifo";
    body?: string;
    linkname?: string;
    mode?: number;
  }>,
): Promise<Buffer> {
  const p = pack();
  const parts: Buffer[] = [];
  // Read while entries are added: a full pack holds back the next entry's callback.
  const read = (async () => {
    for await (const c of p) parts.push(c as Buffer);
  })();
  for (const e of entries) {
    await new Promise<void>((resolve, reject) => {
      const { body, ...h } = e;
      p.entry({ ...h, size: body === undefined ? 0 : Buffer.byteLength(body) }, body ?? "", (err) =>
        err ? reject(err) : resolve(),
      );
    });
  }
  p.finalize();
  await read;
  return Buffer.concat(parts);
}

/** name → [type, mode, body or link target] of a tar (pure reading, for comparisons). */
async function listTar(buf: Buffer): Promise<Map<string, [string, number, string]>> {
  const out = new Map<string, [string, number, string]>();
  const ex = extract();
  ex.end(buf);
  for await (const e of ex) {
    const parts: Buffer[] = [];
    for await (const c of e) parts.push(c as Buffer);
    const h = e.header;
    out.set(h.name, [
      h.type,
      h.mode & 0o777,
      h.type === "symlink" ? h.linkname : Buffer.concat(parts).toString(),
    ]);
  }
  return out;
}

describe("chunk ranges (pure)", () => {
  test("Content-Range is parsed and bounded", () => {
    assert.deepEqual(parseContentRange("bytes 0-9/100", undefined), { start: 0, end: 9, total: 100 });
    assert.deepEqual(parseContentRange("bytes 90-99/100", 100), { start: 90, end: 99, total: 100 });
    assert.throws(() => parseContentRange(undefined, 100), /needs 'Content-Range/);
    assert.throws(() => parseContentRange("bytes 0-9/*", 100), /known total/);
    assert.throws(() => parseContentRange("bytes 9-0/100", 100), /after its end/);
    assert.throws(
      () => parseContentRange("bytes 90-100/100", 100),
      (e: { status: number }) => e.status === 416,
    );
    assert.throws(() => parseContentRange("bytes 0-9/50", 100), /is 100 bytes, not 50/);
  });

  test("ranges merge when they overlap or touch; the first gap is found", () => {
    let r = addRange([], 20, 29);
    r = addRange(r, 0, 9);
    assert.deepEqual(r, [
      [0, 9],
      [20, 29],
    ]);
    assert.deepEqual(firstGap(r, 30), [10, 19]);
    r = addRange(r, 10, 19);
    assert.deepEqual(r, [[0, 29]]);
    assert.equal(firstGap(r, 30), undefined);
    assert.deepEqual(firstGap(r, 40), [30, 39]);
    assert.deepEqual(
      addRange(
        [
          [0, 4],
          [10, 14],
          [20, 24],
        ],
        3,
        21,
      ),
      [[0, 24]],
    );
    assert.equal(firstGap([], 0), undefined);
  });

  test("tar entry names: relative, no '..', '.' dropped", () => {
    assert.deepEqual(tarEntrySegments("./a/b/"), ["a", "b"]);
    assert.deepEqual(tarEntrySegments("./"), []);
    assert.throws(() => tarEntrySegments("/etc/x"), /absolute/);
    assert.throws(() => tarEntrySegments("a/../../x"), /'\.\.'/);
  });
});

describe("share bulk routes on a folder (chunked uploads, tar, quota)", () => {
  const base = `/tmp/dnah-share-bulk-${randomBytes(4).toString("hex")}`;
  const root = join(base, "sb1", "share");
  const QUOTA = 256 * KIB;
  let app: FastifyInstance;
  let url: string;

  const call = (method: string, path: string, body?: Buffer, headers: Record<string, string> = {}) =>
    fetch(`${url}/share/sb1/${path}`, {
      method,
      ...(body && { body }),
      headers: { "content-type": "application/octet-stream", ...headers },
    });
  const json = async <T = Record<string, unknown>>(r: Response) => ({
    status: r.status,
    body: (await r.json()) as T,
  });
  /** What the share holds (names, recursive), and whether the uploads folder is empty. */
  const tree = (dir = root): string[] => readdirSync(dir, { recursive: true, encoding: "utf8" }).sort();
  const pending = () => (existsSync(uploadsDirOf(root)) ? readdirSync(uploadsDirOf(root)) : []);

  before(async () => {
    mkdirSync(root, { recursive: true });
    app = Fastify({ forceCloseConnections: true });
    await shareRoutes(app, {
      shareDirOf: (id) => (id === "sb1" ? root : undefined),
      maxUploadBytes: 200 * KIB,
      quotaBytes: QUOTA,
      logger: silentLogger(),
    });
    url = await app.listen({ host: "127.0.0.1", port: 0 });
  });
  after(async () => {
    await app?.close();
    rmSync(base, { recursive: true, force: true });
  });

  test("plain PUT: sha256 only when given or asked for; durable on request; bad options are 400", async () => {
    const data = randomBytes(50 * KIB + 3);
    assert.deepEqual(await json(await call("PUT", "opt/a.bin", data)), {
      status: 200,
      body: { path: "/opt/a.bin", sizeBytes: data.length },
    });
    assert.deepEqual(readFileSync(join(root, "opt/a.bin")), data);
    for (const q of ["?digest=sha256", "?digest=sha256&durable=true", "?sha256"])
      assert.deepEqual(await json(await call("PUT", `opt/a.bin${q}`, data)), {
        status: 200,
        body: { path: "/opt/a.bin", sizeBytes: data.length, sha256: sha(data) },
      });
    assert.deepEqual(
      await json(await call("PUT", "opt/a.bin", data, { "x-dnah-digest": "sha256", "x-dnah-durable": "1" })),
      { status: 200, body: { path: "/opt/a.bin", sizeBytes: data.length, sha256: sha(data) } },
    );
    assert.equal((await call("PUT", `opt/a.bin?sha256=${"0".repeat(64)}`, data)).status, 422);
    assert.equal((await call("PUT", "opt/a.bin?digest=md5", data)).status, 400);
    assert.equal((await call("PUT", "opt/a.bin?durable=maybe", data)).status, 400);
    assert.deepEqual(readFileSync(join(root, "opt/a.bin")), data, "refused uploads left the file as it was");
    assert.deepEqual(tree(join(root, "opt")), ["a.bin"], "no temporary file left");
    // Chunked: the same on `complete`.
    for (const [q, digest] of [
      ["", false],
      ["&digest=sha256&durable=true", true],
    ] as const) {
      const U = (await json<{ uploadId: string }>(await call("POST", "opt/c.bin?uploads"))).body.uploadId;
      const put = await call("PUT", `opt/c.bin?uploadId=${U}`, data, {
        "content-range": `bytes 0-${data.length - 1}/${data.length}`,
      });
      assert.equal(put.status, 200);
      assert.deepEqual(await json(await call("POST", `opt/c.bin?uploadId=${U}&complete${q}`)), {
        status: 200,
        body: { path: "/opt/c.bin", sizeBytes: data.length, ...(digest ? { sha256: sha(data) } : {}) },
      });
      assert.deepEqual(readFileSync(join(root, "opt/c.bin")), data);
    }
    rmSync(join(root, "opt"), { recursive: true });
  });

  test("chunked: 3 chunks in parallel out of order, resumable state, complete renames into place", async () => {
    const data = randomBytes(100 * KIB + 7);
    const start = await json<{ uploadId: string; path: string; size: number; expiresAt: string }>(
      await call("POST", "up/big.bin?uploads", undefined, {
        "x-dnah-size": String(data.length),
        "x-dnah-sha256": sha(data),
      }),
    );
    assert.equal(start.status, 201, JSON.stringify(start.body));
    assert.equal(start.body.path, "/up/big.bin");
    assert.equal(start.body.size, data.length);
    assert.ok(Date.parse(start.body.expiresAt) > Date.now() + 23 * 3600_000);
    const U = start.body.uploadId;
    const cuts = [0, 40 * KIB, 80 * KIB, data.length];
    const chunk = (i: number) =>
      call("PUT", `up/big.bin?uploadId=${U}`, data.subarray(cuts[i], cuts[i + 1]), {
        "content-range": `bytes ${cuts[i]}-${cuts[i + 1]! - 1}/${data.length}`,
      });
    // Chunk 1 first, then 2 and 0 together: the file is not there until complete.
    assert.equal((await chunk(1)).status, 200);
    const st = await json<{ received: number[][]; size: number }>(
      await call("GET", `up/big.bin?uploadId=${U}`),
    );
    assert.deepEqual(st.body.received, [[cuts[1], cuts[2]! - 1]]);
    const [a, b] = await Promise.all([chunk(2), chunk(0)]);
    assert.deepEqual([a.status, b.status], [200, 200]);
    assert.equal(existsSync(join(root, "up/big.bin")), false, "nothing at the target before complete");
    const done = await json(await call("POST", `up/big.bin?uploadId=${U}&complete`));
    assert.deepEqual(done, {
      status: 200,
      body: { path: "/up/big.bin", sizeBytes: data.length, sha256: sha(data) },
    });
    assert.deepEqual(readFileSync(join(root, "up/big.bin")), data);
    assert.equal(statSync(join(root, "up/big.bin")).uid, 1000);
    assert.deepEqual(pending(), [], "no upload state left");
    assert.equal((await call("GET", `up/big.bin?uploadId=${U}`)).status, 404);
    rmSync(join(root, "up"), { recursive: true });
  });

  test("chunked: bad chunks, a missing range, a wrong checksum and abort are refused clearly", async () => {
    const data = randomBytes(10 * KIB);
    const U = (
      await json<{ uploadId: string }>(
        await call("POST", "x.bin?uploads", undefined, { "x-dnah-sha256": "0".repeat(64) }),
      )
    ).body.uploadId;
    const put = (range: string | undefined, body: Buffer, path = "x.bin") =>
      call("PUT", `${path}?uploadId=${U}`, body, range === undefined ? {} : { "content-range": range });
    assert.equal((await put(undefined, data)).status, 400);
    assert.equal(
      (await put("bytes 0-99/10240", data.subarray(0, 50))).status,
      400,
      "body shorter than its range",
    );
    assert.equal(
      (await put("bytes 0-9/10240", data.subarray(0, 50))).status,
      400,
      "body longer than its range",
    );
    assert.equal(
      (await put("bytes 0-99/10240", data.subarray(0, 100), "other.bin")).status,
      400,
      "another path",
    );
    assert.equal((await put("bytes 0-99/999999999", data.subarray(0, 100))).status, 413);
    assert.equal((await put(`bytes 0-${5 * KIB - 1}/${data.length}`, data.subarray(0, 5 * KIB))).status, 200);
    assert.equal((await put("bytes 0-99/20000", data.subarray(0, 100))).status, 416, "size is known now");
    assert.equal((await put(`bytes 10240-10240/${data.length}`, Buffer.from("x"))).status, 416);
    const missing = await json<{ message: string }>(await call("POST", `x.bin?uploadId=${U}&complete`));
    assert.equal(missing.status, 409);
    assert.match(missing.body.message, /bytes 5120-10239 of 10240 have not been received/);
    assert.equal(
      (await put(`bytes ${5 * KIB}-${data.length - 1}/${data.length}`, data.subarray(5 * KIB))).status,
      200,
    );
    const bad = await json<{ message: string }>(await call("POST", `x.bin?uploadId=${U}&complete`));
    assert.equal(bad.status, 422);
    assert.match(bad.body.message, /nothing was written/);
    assert.equal(existsSync(join(root, "x.bin")), false);
    assert.deepEqual(pending(), []);
    assert.equal((await call("POST", "x.bin?uploadId=nothex&complete")).status, 400);

    const V = (await json<{ uploadId: string }>(await call("POST", "y.bin?uploads"))).body.uploadId;
    assert.equal((await call("DELETE", `y.bin?uploadId=${V}`)).status, 204);
    assert.deepEqual(pending(), []);
    assert.equal((await call("DELETE", `y.bin?uploadId=${V}`)).status, 404);
    assert.equal((await call("DELETE", "y.bin")).status, 400);
    assert.equal((await call("POST", "y.bin")).status, 400);
  });

  test("expired uploads are refused and swept", async () => {
    const quota = new ShareQuota(QUOTA);
    const store = new UploadStore(200 * KIB, quota, 1);
    const m = await store.create(root, "old.bin", 10, undefined);
    await new Promise((r) => setTimeout(r, 5));
    assert.equal(await store.sweep([root]), 1);
    assert.deepEqual(pending(), []);
    await assert.rejects(store.get(root, m.uploadId, "old.bin"), /no upload/);
  });

  test("tar: a folder goes out and back in with contents, modes, nested folders and a link", async () => {
    mkdirSync(join(root, "proj/src/deep"), { recursive: true });
    writeFileSync(join(root, "proj/README"), "hello\n");
    writeFileSync(join(root, "proj/src/run.sh"), "#!/bin/sh\necho hi\n");
    chmodSync(join(root, "proj/src/run.sh"), 0o755);
    writeFileSync(join(root, "proj/src/deep/empty"), "");
    chmodSync(join(root, "proj/src/deep"), 0o750);
    symlinkSync("../README", join(root, "proj/src/readme-link"));
    symlinkSync("/etc/hostname", join(root, "proj/outside-link"));
    utimesSync(join(root, "proj/README"), new Date(1_000_000_000_000), new Date(1_000_000_000_000));
    const r = await call("GET", "proj?format=tar");
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-type"), "application/x-tar");
    const tarball = Buffer.from(await r.arrayBuffer());
    const listed = await listTar(tarball);
    assert.deepEqual(listed.get("README"), ["file", 0o644, "hello\n"]);
    assert.deepEqual(listed.get("src/run.sh"), ["file", 0o755, "#!/bin/sh\necho hi\n"]);
    assert.deepEqual(listed.get("src/deep"), ["directory", 0o750, ""]);
    assert.deepEqual(listed.get("src/readme-link"), ["symlink", 0o777, "../README"]);
    assert.deepEqual(listed.get("outside-link"), ["symlink", 0o777, "/etc/hostname"], "stored, not followed");

    const put = await json(await call("PUT", "copy/of?format=tar", tarball));
    assert.equal(put.status, 200, JSON.stringify(put.body));
    const copy = join(root, "copy/of");
    assert.deepEqual(tree(copy), tree(join(root, "proj")));
    assert.equal(readFileSync(join(copy, "src/run.sh"), "utf8"), "#!/bin/sh\necho hi\n");
    assert.equal(statSync(join(copy, "src/run.sh")).mode & 0o777, 0o755);
    assert.equal(statSync(join(copy, "src/deep")).mode & 0o777, 0o750);
    assert.equal(statSync(join(copy, "README")).mtimeMs, 1_000_000_000_000);
    assert.equal(statSync(join(copy, "README")).uid, 1000);
    assert.equal(readlinkSync(join(copy, "src/readme-link")), "../README");
    assert.equal(lstatSync(join(copy, "src/readme-link")).uid, 1000);
    // Into an existing folder: merged, files replaced.
    const again = await tarOf([
      { name: "README", body: "new\n" },
      { name: "src/added.txt", body: "a" },
    ]);
    assert.equal((await call("PUT", "copy/of?format=tar", again)).status, 200);
    assert.equal(readFileSync(join(copy, "README"), "utf8"), "new\n");
    assert.ok(existsSync(join(copy, "src/run.sh")) && existsSync(join(copy, "src/added.txt")));
    // The whole share, from its root.
    const all = await call("GET", "?format=tar");
    assert.equal(all.status, 200);
    assert.ok((await listTar(Buffer.from(await all.arrayBuffer()))).has("proj/README"));
    assert.equal((await call("GET", "proj/README?format=tar")).status, 403, "a file is not a folder");
    assert.equal((await call("GET", "proj?format=zip")).status, 400);
    rmSync(join(root, "proj"), { recursive: true });
    rmSync(join(root, "copy"), { recursive: true });
  });

  test("tar: escapes, links written through, hard links and devices refuse the whole tar, nothing written", async () => {
    const outside = join(base, "outside");
    mkdirSync(outside, { recursive: true });
    mkdirSync(join(root, "t"));
    symlinkSync(outside, join(root, "t/share-link"));
    const cases: Array<[string, Buffer, number, RegExp]> = [
      [
        "../x",
        await tarOf([
          { name: "ok.txt", body: "ok" },
          { name: "../x", body: "x" },
        ]),
        400,
        /'\.\.'/,
      ],
      ["/etc/x", await tarOf([{ name: "/etc/x", body: "x" }]), 400, /absolute/],
      [
        "link then through it",
        await tarOf([
          { name: "l", type: "symlink", linkname: outside },
          { name: "l/x", body: "pwned" },
        ]),
        403,
        /link/,
      ],
      [
        "link then over it",
        await tarOf([
          { name: "m", type: "symlink", linkname: join(outside, "y") },
          { name: "m", body: "pwned" },
        ]),
        403,
        /symbolic link/,
      ],
      ["hard link", await tarOf([{ name: "h", type: "link", linkname: "/etc/passwd" }]), 400, /hard link/],
      ["fifo", await tarOf([{ name: "f", type: "fifo" }]), 400, /fifo/],
      ["not a tar", Buffer.from("x".repeat(1024)), 500, /./],
    ];
    for (const [what, body, status, msg] of cases) {
      const r = await json<{ message: string }>(await call("PUT", "t/dest?format=tar", body));
      if (what === "not a tar") assert.ok(r.status >= 400, `${what}: ${r.status}`);
      else {
        assert.equal(r.status, status, `${what}: ${JSON.stringify(r.body)}`);
        assert.match(r.body.message, msg, what);
      }
      assert.deepEqual(tree(join(root, "t")), ["share-link"], `${what}: nothing written`);
      assert.deepEqual(readdirSync(outside), [], `${what}: nothing outside`);
      assert.deepEqual(pending(), [], `${what}: no staging left`);
    }
    // A link already in the share is not passed through either.
    const through = await call("PUT", "t?format=tar", await tarOf([{ name: "share-link/x", body: "pwned" }]));
    assert.equal(through.status, 409);
    assert.deepEqual(readdirSync(outside), []);
    assert.equal(
      (await call("PUT", "t/share-link?format=tar", await tarOf([{ name: "x", body: "p" }]))).status,
      403,
    );
    assert.deepEqual(readdirSync(outside), []);
    rmSync(join(root, "t"), { recursive: true });
  });

  test("quota: plain, chunked and tar uploads past it are 507 and leave nothing", async () => {
    writeFileSync(join(root, "filler"), randomBytes(QUOTA - 10 * KIB));
    await new Promise((r) => setTimeout(r, 5_100)); // past the usage cache's TTL
    const msg = new RegExp(`share quota of ${QUOTA} bytes exceeded`);
    const plain = await json<{ message: string }>(await call("PUT", "p.bin", randomBytes(20 * KIB)));
    assert.equal(plain.status, 507);
    assert.match(plain.body.message, msg);
    // Streamed without a length: refused mid-stream, the temporary file removed.
    const streamed = await fetch(`${url}/share/sb1/s.bin`, {
      method: "PUT",
      body: new ReadableStream({
        start(c) {
          for (let i = 0; i < 20; i++) c.enqueue(randomBytes(KIB));
          c.close();
        },
      }),
      duplex: "half",
    } as RequestInit);
    assert.equal(streamed.status, 507);
    const chunked = await call("POST", "c.bin?uploads", undefined, { "x-dnah-size": String(20 * KIB) });
    assert.equal(chunked.status, 507);
    const tar = await call(
      "PUT",
      "td?format=tar",
      await tarOf([{ name: "big", body: "x".repeat(20 * KIB) }]),
    );
    assert.equal(tar.status, 507);
    assert.deepEqual(tree(), ["filler"]);
    assert.deepEqual(pending(), []);
    assert.equal(
      (await call("PUT", "fits.bin", randomBytes(KIB))).status,
      200,
      "under the quota still works",
    );
    rmSync(join(root, "filler"));
    rmSync(join(root, "fits.bin"));
  });
});
