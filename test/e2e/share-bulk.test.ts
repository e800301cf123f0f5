import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { pack } from "tar-stream";
import { eventually, startTestStack, type TestStack } from "./harness.js";

const MIB = 1024 * 1024;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/** A small tar in memory (read while entries are added: a full pack holds back the next). */
async function tarOf(
  entries: Array<{ name: string; type?: "file" | "directory" | "symlink"; body?: string; linkname?: string }>,
): Promise<Buffer> {
  const p = pack();
  const parts: Buffer[] = [];
  const read = (async () => {
    for await (const c of p) parts.push(c as Buffer);
  })();
  for (const { body, ...h } of entries)
    await new Promise<void>((resolve, reject) =>
      p.entry({ ...h, size: body === undefined ? 0 : Buffer.byteLength(body) }, body ?? "", (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  p.finalize();
  await read;
  return Buffer.concat(parts);
}

/**
 * Bulk transfer on the share through the real stack (gateway → vmm → share folder → a jail
 * sandbox's /mnt/dnah-share): chunked uploads (parallel, out of order, resumed after a dropped
 * chunk, checked), tar streams of folders both ways, and the share quota.
 */
describe("share: chunked uploads, tar streams and the quota", () => {
  let s: TestStack;
  let id: string;
  const QUOTA = 48 * MIB;

  const exec = async (command: string) => {
    const r = await s.json<{ exitCode: number; stdout: string; stderr: string }>(`/v1/sandboxes/${id}/exec`, {
      method: "POST",
      body: JSON.stringify({ command }),
      headers: { "content-type": "application/json" },
    });
    assert.equal(r.status, 200);
    return r.body;
  };
  const share = (path: string, init: RequestInit & { headers?: Record<string, string> } = {}) =>
    s.api(`/v1/sandboxes/${id}/share/${path}`, {
      ...init,
      headers: { "content-type": "application/octet-stream", ...init.headers },
    });

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0", DNAH_SHARE_QUOTA_BYTES: String(QUOTA) });
    const r = await s.json<{ sandboxId: string }>("/v1/sandboxes", {
      method: "POST",
      body: "{}",
      headers: { "content-type": "application/json" },
    });
    assert.equal(r.status, 201);
    id = r.body.sandboxId;
  });
  after(async () => {
    await s?.api(`/v1/sandboxes/${id}`, { method: "DELETE" }).catch(() => {});
    await s?.close();
  });

  test("chunked: 3 parallel out-of-order chunks, one dropped and resumed, a gap and a bad checksum refused", async () => {
    const data = randomBytes(24 * MIB + 123);
    const cuts = [0, 8 * MIB, 16 * MIB, data.length];
    const range = (i: number) => `bytes ${cuts[i]}-${cuts[i + 1]! - 1}/${data.length}`;
    const start = async (path: string, headers: Record<string, string>) => {
      const r = await share(`${path}?uploads`, { method: "POST", headers });
      assert.equal(r.status, 201);
      return ((await r.json()) as { uploadId: string }).uploadId;
    };
    const U = await start("big/data.bin", { "x-dnah-size": String(data.length), "x-dnah-sha256": sha(data) });
    const chunk = (i: number) =>
      share(`big/data.bin?uploadId=${U}`, {
        method: "PUT",
        body: data.subarray(cuts[i], cuts[i + 1]),
        headers: { "content-range": range(i) },
      });

    // Chunk 1 drops part way: the client aborts after sending some of it.
    const ac = new AbortController();
    let sent = 0;
    const dropped = share(`big/data.bin?uploadId=${U}`, {
      method: "PUT",
      signal: ac.signal,
      headers: { "content-range": range(1) },
      body: new ReadableStream({
        pull(c) {
          if (sent >= 2 * MIB) {
            ac.abort();
            return;
          }
          c.enqueue(data.subarray(cuts[1]! + sent, cuts[1]! + sent + MIB));
          sent += MIB;
        },
      }),
      duplex: "half",
    } as RequestInit & { headers: Record<string, string> });
    await assert.rejects(dropped);
    // 2 and 0 in parallel, out of order.
    const [a, b] = await Promise.all([chunk(2), chunk(0)]);
    assert.deepEqual([a.status, b.status], [200, 200]);
    // Resume: ask what is there, send what is missing.
    const state = await eventually(async () => {
      const r = await s.json<{ received: number[][]; size: number }>(
        `/v1/sandboxes/${id}/share/big/data.bin?uploadId=${U}`,
      );
      return r.body.received.length === 2 ? r.body : undefined;
    });
    assert.deepEqual(state.received, [
      [0, cuts[1]! - 1],
      [cuts[2], data.length - 1],
    ]);
    assert.equal(state.size, data.length);
    const gap = await share(`big/data.bin?uploadId=${U}&complete`, { method: "POST" });
    assert.equal(gap.status, 409);
    assert.match(((await gap.json()) as { message: string }).message, /have not been received/);
    assert.equal(
      (await exec("ls -A /mnt/dnah-share/big 2>/dev/null | wc -l")).stdout,
      "0\n",
      "nothing visible yet",
    );
    assert.equal((await chunk(1)).status, 200);
    const done = await share(`big/data.bin?uploadId=${U}&complete`, { method: "POST" });
    assert.equal(done.status, 200);
    assert.deepEqual(await done.json(), { path: "/big/data.bin", sizeBytes: data.length, sha256: sha(data) });
    const inside = await exec(
      "sha256sum /mnt/dnah-share/big/data.bin | cut -d' ' -f1; stat -c %U /mnt/dnah-share/big/data.bin; ls -A /mnt/dnah-share/big",
    );
    assert.equal(inside.stdout, `${sha(data)}\nuser\ndata.bin\n`);

    // A checksum that does not match: refused, nothing written.
    const small = randomBytes(1000);
    const V = await start("big/bad.bin", { "x-dnah-sha256": sha(Buffer.from("other")) });
    const put = await share(`big/bad.bin?uploadId=${V}`, {
      method: "PUT",
      body: small,
      headers: { "content-range": `bytes 0-999/1000` },
    });
    assert.equal(put.status, 200);
    const bad = await share(`big/bad.bin?uploadId=${V}&complete`, { method: "POST" });
    assert.equal(bad.status, 422);
    assert.equal((await exec("ls -A /mnt/dnah-share/big")).stdout, "data.bin\n");
    // A chunk past the end is refused with a clear message.
    const W = await start("big/w.bin", { "x-dnah-size": "10" });
    const past = await share(`big/w.bin?uploadId=${W}`, {
      method: "PUT",
      body: Buffer.from("0123456789ab"),
      headers: { "content-range": "bytes 0-11/10" },
    });
    assert.equal(past.status, 416);
    assert.equal((await share(`big/w.bin?uploadId=${W}`, { method: "DELETE" })).status, 204);
  });

  test("tar: a folder round trip (contents, modes, nested folders, a link) seen in the sandbox", async () => {
    await exec(
      "mkdir -p /mnt/dnah-share/proj/src/deep && printf 'hi\\n' > /mnt/dnah-share/proj/README && printf '#!/bin/sh\\necho run\\n' > /mnt/dnah-share/proj/src/run.sh && chmod 755 /mnt/dnah-share/proj/src/run.sh && printf x > /mnt/dnah-share/proj/src/deep/x && ln -s ../README /mnt/dnah-share/proj/src/readme-link",
    );
    const out = await share("proj?format=tar");
    assert.equal(out.status, 200);
    assert.equal(out.headers.get("content-type"), "application/x-tar");
    const tarball = Buffer.from(await out.arrayBuffer());
    const back = await share("copy?format=tar", { method: "PUT", body: tarball });
    assert.equal(back.status, 200, await back.clone().text());
    const listing = (dir: string) =>
      exec(
        `cd /mnt/dnah-share/${dir} && find . -printf '%p %y %m %l\\n' | sort && cat src/run.sh src/deep/x && readlink src/readme-link && ./src/run.sh`,
      );
    const [a, b] = [await listing("proj"), await listing("copy")];
    assert.equal(b.stdout, a.stdout);
    assert.match(b.stdout, /\.\/src\/run\.sh f 755/);
    assert.match(b.stdout, /\.\/src\/readme-link l 777 \.\.\/README/);
    assert.match(b.stdout, /run\n$/);
  });

  test("tar: '../x', '/etc/x' and a write through a link are refused with nothing written", async () => {
    const cases: Array<[string, Buffer]> = [
      [
        "../x",
        await tarOf([
          { name: "fine.txt", body: "ok" },
          { name: "../x", body: "x" },
        ]),
      ],
      ["/etc/x", await tarOf([{ name: "/etc/dnah-pwned", body: "x" }])],
      [
        "link then through it",
        await tarOf([
          { name: "l", type: "symlink", linkname: "/etc" },
          { name: "l/dnah-pwned", body: "x" },
        ]),
      ],
    ];
    for (const [what, body] of cases) {
      const r = await share("evil?format=tar", { method: "PUT", body });
      assert.ok(r.status === 400 || r.status === 403, `${what}: ${r.status} ${await r.text()}`);
      assert.equal((await exec("test -e /mnt/dnah-share/evil && echo yes || echo no")).stdout, "no\n", what);
    }
    assert.equal((await exec("ls /etc/dnah-pwned /mnt/x 2>/dev/null | wc -l")).stdout, "0\n");
  });

  test("quota: an upload that would take the share past it is 507 and leaves nothing", async () => {
    const used = Number((await exec("du -sb --apparent-size /mnt/dnah-share | cut -f1")).stdout.trim());
    const over = QUOTA - used + MIB;
    await new Promise((r) => setTimeout(r, 5_100)); // the vmm's usage cache sees what the tests wrote
    const plain = await share("q/plain.bin", { method: "PUT", body: randomBytes(over) });
    assert.equal(plain.status, 507);
    assert.match(
      ((await plain.json()) as { message: string }).message,
      new RegExp(`share quota of ${QUOTA} bytes exceeded`),
    );
    const chunked = await share("q/c.bin?uploads", {
      method: "POST",
      headers: { "x-dnah-size": String(over) },
    });
    assert.equal(chunked.status, 507);
    const tar = await share("q?format=tar", {
      method: "PUT",
      body: await tarOf([{ name: "t.bin", body: "x".repeat(over) }]),
    });
    assert.equal(tar.status, 507);
    assert.equal((await exec("ls -A /mnt/dnah-share/q 2>/dev/null | wc -l")).stdout, "0\n");
  });
});
