import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { after, before, describe, test } from "node:test";
import { startTestStack, type TestStack } from "./harness.js";

const MIB = 1024 * 1024;
const sha = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/**
 * The files plane's bulk routes, `GET|PUT /v1/sandboxes/{id}/share/<path>`, through the real
 * stack (gateway → vmm → the share folder) and seen from inside a jail sandbox at
 * /mnt/dnah-share: checksums, ranges, paused sandboxes, limits, and paths that try to leave.
 */
describe("share: bulk transfer to and from /mnt/dnah-share", () => {
  let s: TestStack;
  let id: string;
  const big = randomBytes(64 * MIB);

  const exec = async (command: string, user?: string) => {
    const r = await s.json<{ exitCode: number; stdout: string; stderr: string }>(`/v1/sandboxes/${id}/exec`, {
      method: "POST",
      body: JSON.stringify({ command, ...(user && { user }) }),
      headers: { "content-type": "application/json" },
    });
    assert.equal(r.status, 200);
    return r.body;
  };
  const put = (path: string, body: Buffer | ReadableStream, headers: Record<string, string> = {}) =>
    s.api(`/v1/sandboxes/${id}/share/${path}`, {
      method: "PUT",
      body,
      headers: { "content-type": "application/octet-stream", ...headers },
      ...(body instanceof Buffer ? {} : { duplex: "half" }),
    } as RequestInit);

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0", DNAH_SHARE_UPLOAD_MAX_BYTES: String(70 * MIB) });
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

  test("64 MiB up with a checksum, seen in the sandbox, owned by its user; down whole, by range and by checksum", async () => {
    const up = await put("data/big.bin", big, { "x-dnah-sha256": sha(big) });
    assert.equal(up.status, 200, await up.clone().text());
    assert.deepEqual(await up.json(), { path: "/data/big.bin", sizeBytes: big.length, sha256: sha(big) });
    const inside = await exec(
      "sha256sum /mnt/dnah-share/data/big.bin | cut -d' ' -f1; stat -c %U /mnt/dnah-share/data/big.bin; ls -A /mnt/dnah-share/data",
    );
    assert.equal(inside.stdout, `${sha(big)}\nuser\nbig.bin\n`, "no temporary file is left beside it");

    const down = await s.api(`/v1/sandboxes/${id}/share/data/big.bin`);
    assert.equal(down.status, 200);
    assert.equal(down.headers.get("content-length"), String(big.length));
    assert.equal(down.headers.get("accept-ranges"), "bytes");
    assert.equal(sha(Buffer.from(await down.arrayBuffer())), sha(big));

    const part = await s.api(`/v1/sandboxes/${id}/share/data/big.bin`, {
      headers: { range: "bytes=100-199" },
    });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get("content-range"), `bytes 100-199/${big.length}`);
    assert.deepEqual(Buffer.from(await part.arrayBuffer()), big.subarray(100, 200));
    const tail = await s.api(`/v1/sandboxes/${id}/share/data/big.bin`, { headers: { range: "bytes=-10" } });
    assert.deepEqual(Buffer.from(await tail.arrayBuffer()), big.subarray(big.length - 10));
    const outside = await s.api(`/v1/sandboxes/${id}/share/data/big.bin`, {
      headers: { range: `bytes=${big.length}-` },
    });
    assert.equal(outside.status, 416);
    assert.equal(outside.headers.get("content-range"), `bytes */${big.length}`);

    const sum = await s.json(`/v1/sandboxes/${id}/share/data/big.bin?sha256`);
    assert.deepEqual(sum.body, { sizeBytes: big.length, sha256: sha(big) });
  });

  test("a wrong checksum (422), an upload over the limit (413, declared or streamed) and an aborted one leave no file", async () => {
    const small = randomBytes(4096);
    const bad = await put("data/bad.bin", small, { "x-dnah-sha256": "0".repeat(64) });
    assert.equal(bad.status, 422);
    assert.match(((await bad.json()) as { message: string }).message, /nothing was written/);
    const tooBig = await put("data/huge.bin", randomBytes(71 * MIB));
    assert.equal(tooBig.status, 413);
    // Streamed without a length: refused once the limit is crossed.
    let sent = 0;
    const chunk = randomBytes(MIB);
    const endless = new ReadableStream({
      pull(c) {
        if (sent >= 80) return c.close();
        sent++;
        c.enqueue(chunk);
      },
    });
    const streamed = await put("data/streamed.bin", endless);
    assert.equal(streamed.status, 413);
    const listing = await exec("ls -A /mnt/dnah-share/data");
    assert.equal(listing.stdout, "big.bin\n", "no partial or temporary file is visible");
    assert.equal((await s.api(`/v1/sandboxes/${id}/share/data/bad.bin`)).status, 404);
  });

  test("paths cannot leave the share: '..', links (in the middle or at the end), NUL", async () => {
    await exec("ln -s /etc /mnt/dnah-share/etc-link && ln -s /etc/hostname /mnt/dnah-share/host-link");
    const cases: Array<[string, string, number]> = [
      // Encoded slashes: fetch would fold a plain '../' before sending it.
      ["GET", "..%2F..%2F..%2Fetc%2Fhostname", 400],
      ["PUT", "data/..%2F..%2Fx", 400],
      ["GET", "etc-link/hostname", 403],
      ["PUT", "etc-link/dnah-pwned", 403],
      ["GET", "host-link", 403],
      ["GET", "data/a%00b", 400],
    ];
    for (const [method, path, status] of cases) {
      const r =
        method === "GET"
          ? await s.api(`/v1/sandboxes/${id}/share/${path}`)
          : await put(path, Buffer.from("x"));
      assert.equal(r.status, status, `${method} ${path}: ${await r.text()}`);
    }
    // The link target on the host side was not written through.
    assert.equal((await exec("test -e /etc/dnah-pwned && echo yes || echo no")).stdout, "no\n");
  });

  test("works while paused: a host-side upload is there after resume", async () => {
    assert.equal((await s.api(`/v1/sandboxes/${id}/pause`, { method: "POST" })).status, 200);
    const r = await put("while-paused.txt", Buffer.from("written while paused\n"));
    assert.equal(r.status, 200);
    const back = await s.api(`/v1/sandboxes/${id}/share/while-paused.txt`);
    assert.equal(await back.text(), "written while paused\n");
    assert.equal((await s.api(`/v1/sandboxes/${id}/resume`, { method: "POST" })).status, 200);
    assert.equal((await exec("cat /mnt/dnah-share/while-paused.txt")).stdout, "written while paused\n");
  });

  test("unknown sandbox is 404, no key is 401, a stream body without content-length still works", async () => {
    assert.equal((await s.api("/v1/sandboxes/nosuchsandbox/share/x")).status, 404);
    assert.equal((await fetch(`${s.url}/v1/sandboxes/${id}/share/data/big.bin`)).status, 401);
    const r = await put(
      "streamed-ok.bin",
      Readable.toWeb(Readable.from([Buffer.from("a"), Buffer.from("b")])) as ReadableStream,
    );
    assert.equal(r.status, 200);
    assert.equal((await exec("cat /mnt/dnah-share/streamed-ok.bin")).stdout, "ab");
  });
});
