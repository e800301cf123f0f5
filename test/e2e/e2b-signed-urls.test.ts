import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Sandbox } from "e2b";
import { Sandbox as Sandbox250 } from "e2b-2-50";
import { startTestStack, type TestStack } from "./harness.js";

/**
 * Signed file URLs (`uploadUrl` / `downloadUrl`): with `E2B_SANDBOX_URL` they carry no sandbox
 * id, so the gateway routes them by the signature; the agent still checks it and its expiry.
 */
describe("e2b SDK: signed file URLs without a sandbox id", () => {
  let s: TestStack;
  let opts: { apiKey: string; apiUrl: string; sandboxUrl: string };
  const created: string[] = [];

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    opts = { apiKey: s.key, apiUrl: s.url, sandboxUrl: s.url };
  });
  after(async () => {
    for (const id of created) await Sandbox.kill(id, opts).catch(() => undefined);
    await s?.close();
  });

  async function upload(url: string, content: string): Promise<Response> {
    const form = new FormData();
    form.append("file", new Blob([content]), "ignored-name.txt");
    return fetch(url, { method: "POST", body: form });
  }

  test("upload and download round trip on two sandboxes; each URL reaches its own sandbox", async () => {
    const a = await Sandbox.create(opts);
    created.push(a.sandboxId);
    const b = await Sandbox.create(opts);
    created.push(b.sandboxId);
    for (const [sbx, text] of [
      [a, "for a\n"],
      [b, "for b\n"],
    ] as const) {
      const up = await sbx.uploadUrl("/tmp/signed/up.txt");
      assert.ok(!up.includes(sbx.sandboxId), "the URL names no sandbox");
      const res = await upload(up, text);
      assert.equal(res.status, 200, await res.clone().text());
      const written = (await res.json()) as { path: string }[];
      assert.equal(written[0]?.path, "/tmp/signed/up.txt");
      assert.equal(await sbx.files.read("/tmp/signed/up.txt"), text);
      const down = await fetch(await sbx.downloadUrl("/tmp/signed/up.txt", { useSignatureExpiration: 120 }));
      assert.equal(down.status, 200);
      assert.equal(await down.text(), text);
    }
  });

  test("tampered, expired and wrong-operation signatures are refused", async () => {
    const sbx = await Sandbox.create(opts);
    created.push(sbx.sandboxId);
    await sbx.files.write("/tmp/secret.txt", "secret\n");
    const good = new URL(await sbx.downloadUrl("/tmp/secret.txt"));
    assert.equal((await fetch(good)).status, 200);

    const tampered = new URL(good);
    const sig = tampered.searchParams.get("signature")!;
    tampered.searchParams.set("signature", sig.slice(0, -2) + (sig.endsWith("AA") ? "BB" : "AA"));
    const t = await fetch(tampered);
    assert.equal(t.status, 401);
    assert.deepEqual(await t.json(), { code: 401, message: "invalid signature" });

    // Signed for another path.
    const other = new URL(good);
    other.searchParams.set("path", "/etc/shadow");
    assert.equal((await fetch(other)).status, 401);

    // A download signature used to upload.
    const asUpload = await upload(good.toString(), "overwrite\n");
    assert.equal(asUpload.status, 401);
    assert.equal(await sbx.files.read("/tmp/secret.txt"), "secret\n");

    // Expired: routed by its (valid) signature, refused by the agent.
    const expired = await fetch(await sbx.downloadUrl("/tmp/secret.txt", { useSignatureExpiration: -30 }));
    assert.equal(expired.status, 401);
    assert.match(((await expired.json()) as { message: string }).message, /expired/);

    // Unsigned /files without a sandbox id is not sandbox traffic (the API answers).
    const unsigned = await fetch(`${s.url}/files?path=/tmp/secret.txt`);
    assert.notEqual(unsigned.status, 200);
  });

  test("a paused sandbox's URL answers 502; a killed one's is refused", async () => {
    const sbx = await Sandbox.create(opts);
    created.push(sbx.sandboxId);
    await sbx.files.write("/tmp/p.txt", "p\n");
    const url = await sbx.downloadUrl("/tmp/p.txt");
    assert.equal(await sbx.pause(), true);
    const paused = await fetch(url);
    assert.equal(paused.status, 502);
    assert.deepEqual(await paused.json(), {
      sandboxId: sbx.sandboxId,
      message: "The sandbox was not found",
      code: 502,
    });
    await Sandbox.connect(sbx.sandboxId, opts);
    assert.equal(await (await fetch(url)).text(), "p\n");
    await sbx.kill();
    const killed = await fetch(url);
    // 502 while the gateway's candidate list (cached ~1 s) still has it, then 401.
    assert.ok([401, 502].includes(killed.status), String(killed.status));
  });

  test("e2b 2.50 with secure: true", async () => {
    const old = await Sandbox250.create({ ...opts, secure: true });
    created.push(old.sandboxId);
    const res = await upload(await old.uploadUrl("/tmp/v1.txt"), "v1\n");
    assert.equal(res.status, 200);
    assert.equal(await (await fetch(await old.downloadUrl("/tmp/v1.txt"))).text(), "v1\n");
  });
});
