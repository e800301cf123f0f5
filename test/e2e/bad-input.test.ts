import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, describe, test } from "node:test";
import { startTestStack, type TestStack } from "./harness.js";

describe("bad input gets a clear 4xx and crashes nothing", () => {
  let s: TestStack;
  let id: string;
  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "1" });
    id = (await s.json<{ sandboxId: string }>("/v1/sandboxes", { method: "POST", body: "{}" })).body
      .sandboxId;
  });
  after(async () => {
    await s?.close();
  });

  const expectError = async (res: Response, status: number, code: string) => {
    assert.equal(res.status, status);
    const body = (await res.json()) as { code: string; message: string };
    assert.equal(body.code, code);
    assert.ok(body.message.length > 0);
    assert.ok(!/\n\s+at /.test(body.message), "stack trace in the error");
  };

  test("auth: missing key, invalid key", async () => {
    await expectError(await fetch(`${s.url}/v1/sandboxes`), 401, "unauthenticated");
    await expectError(
      await fetch(`${s.url}/v1/sandboxes`, { headers: { authorization: "Bearer dnah_wrong" } }),
      401,
      "unauthenticated",
    );
    await expectError(
      await fetch(`${s.url}/v1/sandboxes`, { headers: { "x-api-key": "nope" } }),
      401,
      "unauthenticated",
    );
    assert.equal((await fetch(`${s.url}/v1/sandboxes`, { headers: { "x-api-key": s.key } })).status, 200);
  });

  test("unknown sandbox, unknown template", async () => {
    await expectError(await s.api("/v1/sandboxes/doesnotexist"), 404, "not_found");
    await expectError(await s.api("/v1/sandboxes/doesnotexist", { method: "DELETE" }), 404, "not_found");
    await expectError(
      await s.api("/v1/sandboxes/doesnotexist/exec", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"command":"true"}',
      }),
      404,
      "not_found",
    );
    await expectError(
      await s.api("/v1/sandboxes", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"templateId":"nope"}',
      }),
      404,
      "not_found",
    );
  });

  test("malformed JSON and wrong types", async () => {
    const post = (body: string) =>
      s.api("/v1/sandboxes", { method: "POST", headers: { "content-type": "application/json" }, body });
    await expectError(await post("{not json"), 400, "invalid_argument");
    await expectError(await post('{"metadata": "x"}'), 400, "invalid_argument");
    await expectError(
      await s.api(`/v1/sandboxes/${id}/exec`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: '{"command": 42}',
      }),
      400,
      "invalid_argument",
    );
  });

  test("paths outside the sandbox root are refused", async () => {
    await expectError(
      await s.api(`/v1/sandboxes/${id}/files?path=/../../../etc/shadow`),
      400,
      "invalid_argument",
    );
    await expectError(
      await s.api(`/v1/sandboxes/${id}/files?path=../../../../etc/passwd`),
      400,
      "invalid_argument",
    );
    await expectError(
      await s.api(`/v1/sandboxes/${id}/files?path=${encodeURIComponent("/tmp/a\0b")}`),
      400,
      "invalid_argument",
    );
    await expectError(await s.api(`/v1/sandboxes/${id}/files?path=/home/user/missing.txt`), 404, "not_found");
  });

  test("a malformed URL gets the same JSON error shape", async () => {
    const u = new URL(s.url);
    const [status, body] = await new Promise<[number, string]>((resolve, reject) => {
      const req = request(
        {
          host: u.hostname,
          port: u.port,
          path: "/v1/sandboxes/%E0%A4%A",
          headers: { authorization: `Bearer ${s.key}` },
        },
        (res) => {
          let b = "";
          res.on("data", (c: Buffer) => {
            b += c.toString("utf8");
          });
          res.on("end", () => resolve([res.statusCode ?? 0, b]));
        },
      );
      req.on("error", reject);
      req.end();
    });
    assert.equal(status, 400);
    assert.equal((JSON.parse(body) as { code: string }).code, "invalid_argument");
  });

  test("the services are still healthy afterwards", async () => {
    const r = await s.json<{ stdout: string }>(`/v1/sandboxes/${id}/exec`, {
      method: "POST",
      body: '{"command":"echo alive"}',
    });
    assert.equal(r.body.stdout, "alive\n");
  });
});
