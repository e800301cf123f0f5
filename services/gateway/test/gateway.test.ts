import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { SandboxService } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { Gateway } from "../src/index.js";
import { freshDb, startGateway, type TestDb } from "./helpers.js";

const FIXED_KEY = "gateway-test-key-0123456789";
const FILE_LIMIT = 64 * 1024;
const JSON_LIMIT = 16 * 1024;

describe("gateway over HTTP (scheduler unreachable)", () => {
  let t: TestDb;
  let gw: Gateway;
  let base: string;
  const auth = { authorization: `Bearer ${FIXED_KEY}` };
  const json = { ...auth, "content-type": "application/json" };

  before(async () => {
    t = await freshDb("gw_http");
    gw = await startGateway(t.db, {
      apiKey: FIXED_KEY,
      fileLimitBytes: FILE_LIMIT,
      jsonBodyLimitBytes: JSON_LIMIT,
    });
    base = gw.url;
  });
  after(async () => {
    await gw.close();
    await t.drop();
  });

  /** Fetches and returns status, headers and the parsed JSON body. */
  async function call(path: string, init: RequestInit = {}) {
    const res = await fetch(base + path, init);
    const text = await res.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    return { status: res.status, headers: res.headers, body };
  }

  /** Every error is exactly {code, message}, as JSON. */
  function assertError(r: Awaited<ReturnType<typeof call>>, status: number, code: string, message?: RegExp) {
    assert.equal(r.status, status, JSON.stringify(r.body));
    assert.match(r.headers.get("content-type") ?? "", /^application\/json/);
    const body = r.body as { code: string; message: string };
    assert.deepEqual(Object.keys(body).sort(), ["code", "message"]);
    assert.equal(body.code, code);
    if (message !== undefined) assert.match(body.message, message);
  }

  it("reports the fixed key as the dev key", () => {
    assert.equal(gw.apiKey, FIXED_KEY);
  });

  it("serves /health without a key", async () => {
    const r = await call("/health");
    assert.equal(r.status, 200);
    assert.deepEqual(r.body, { status: "ok" });
  });

  describe("authentication", () => {
    it("401s a REST call without a key", async () => {
      const r = await call("/v1/sandboxes");
      assertError(r, 401, "unauthenticated");
      assert.equal(
        (r.body as { message: string }).message,
        "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'",
      );
      assert.match(r.headers.get("www-authenticate") ?? "", /^Bearer/);
    });

    it("401s a REST call with an unknown key, in either header", async () => {
      assertError(
        await call("/v1/sandboxes", { headers: { authorization: "Bearer dnah_nope" } }),
        401,
        "unauthenticated",
        /^invalid API key$/,
      );
      assertError(
        await call("/v1/sandboxes", { headers: { "x-api-key": "dnah_nope" } }),
        401,
        "unauthenticated",
        /^invalid API key$/,
      );
    });

    it("treats a non-Bearer Authorization as no key", async () => {
      const basic = `Basic ${Buffer.from(`${FIXED_KEY}:`).toString("base64")}`;
      assertError(
        await call("/v1/sandboxes", { headers: { authorization: basic } }),
        401,
        "unauthenticated",
        /missing/,
      );
    });

    it("accepts the key in Authorization (any case) or X-API-Key (any case)", async () => {
      // Past auth, the unreachable scheduler answers: 503, not 401.
      for (const headers of [
        { authorization: `Bearer ${FIXED_KEY}` },
        { Authorization: `bearer ${FIXED_KEY}` },
        { "x-api-key": FIXED_KEY },
        { "X-Api-Key": FIXED_KEY },
      ]) {
        assertError(await call("/v1/sandboxes", { headers }), 503, "unavailable");
      }
    });

    it("401s unknown routes without a key (no route probing)", async () => {
      assertError(await call("/v1/nothing-here"), 401, "unauthenticated");
    });

    it("401s Connect unary calls without or with a bad key", async () => {
      const transport = createConnectTransport({ baseUrl: base, httpVersion: "1.1" });
      const client = createClient(SandboxService, transport);
      for (const headers of [{}, { authorization: "Bearer wrong" }]) {
        await assert.rejects(client.getSandbox({ sandboxId: "abc" }, { headers }), (err) => {
          assert.ok(err instanceof ConnectError);
          assert.equal(err.code, Code.Unauthenticated);
          return true;
        });
      }
    });

    it("401s Connect streaming calls in the Connect streaming protocol", async () => {
      const transport = createConnectTransport({ baseUrl: base, httpVersion: "1.1", useBinaryFormat: true });
      const client = createClient(SandboxService, transport);
      await assert.rejects(
        (async () => {
          for await (const _ of client.execStream({ sandboxId: "abc", command: "true" })) {
            // nothing is expected
          }
        })(),
        (err) => {
          assert.ok(err instanceof ConnectError);
          assert.equal(err.code, Code.Unauthenticated);
          assert.equal(err.rawMessage, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'");
          return true;
        },
      );
    });

    it("401s gRPC-web calls with a grpc-status", async () => {
      const client = createClient(
        SandboxService,
        createGrpcWebTransport({ baseUrl: base, httpVersion: "1.1" }),
      );
      await assert.rejects(client.getSandbox({ sandboxId: "abc" }), (err) => {
        assert.ok(err instanceof ConnectError);
        assert.equal(err.code, Code.Unauthenticated);
        assert.equal(err.rawMessage, "missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key'");
        return true;
      });
    });
  });

  describe("request errors keep the {code, message} shape", () => {
    it("400s malformed JSON", async () => {
      const r = await call("/v1/sandboxes", { method: "POST", headers: json, body: '{"templateId":' });
      assertError(r, 400, "invalid_argument", /not valid JSON/);
    });

    it("400s a body that is not an object, wrong field types and unknown fields", async () => {
      const cases: [unknown, RegExp][] = [
        [[1, 2], /must be a JSON object/],
        ["text", /must be a JSON object/],
        [{ templateId: 5 }, /'templateId' must be a string/],
        [{ metadata: "a=b" }, /'metadata' must be an object of string values/],
        [{ metadata: { a: 1 } }, /'metadata.a' must be a string/],
        [{ envVars: { A: null } }, /'envVars.A' must be a string/],
        [{ envVars: { "1BAD": "x" } }, /not a valid environment variable name/],
        [
          { metadata: Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, "v"])) },
          /at most 64/,
        ],
        [{ templateId: "../etc" }, /invalid template id/],
        [{ template: "base" }, /unknown field 'template'/],
      ];
      for (const [body, message] of cases) {
        const r = await call("/v1/sandboxes", { method: "POST", headers: json, body: JSON.stringify(body) });
        assertError(r, 400, "invalid_argument", message);
      }
    });

    it("400s wrong exec bodies", async () => {
      const cases: [unknown, RegExp][] = [
        [{}, /'command' is required/],
        [{ command: ["ls"] }, /'command' must be a string/],
        [{ command: "" }, /command must not be empty/],
        [{ command: "ls", timeoutMs: "5" }, /'timeoutMs' must be an integer/],
        [{ command: "ls", timeoutMs: -1 }, /'timeoutMs' must be an integer/],
        [{ command: "ls", timeoutMs: 1.5 }, /'timeoutMs' must be an integer/],
        [{ command: "ls", user: "root; rm" }, /invalid user name/],
        [{ command: "ls", cwd: "/../x" }, /escapes the sandbox root/],
        [{ command: "ls", envs: { A: 1 } }, /'envs.A' must be a string/],
      ];
      for (const path of ["/v1/sandboxes/abc/exec", "/v1/sandboxes/abc/exec/stream"]) {
        for (const [body, message] of cases) {
          const r = await call(path, { method: "POST", headers: json, body: JSON.stringify(body) });
          assertError(r, 400, "invalid_argument", message);
        }
      }
    });

    it("400s an invalid sandbox id", async () => {
      assertError(
        await call("/v1/sandboxes/bad%20id", { headers: auth }),
        400,
        "invalid_argument",
        /invalid sandbox id/,
      );
    });

    it("413s a JSON body over the limit", async () => {
      const body = JSON.stringify({ metadata: { a: "x".repeat(JSON_LIMIT) } });
      assertError(
        await call("/v1/sandboxes", { method: "POST", headers: json, body }),
        413,
        "payload_too_large",
      );
    });

    it("413s a file over the limit", async () => {
      const r = await call("/v1/sandboxes/abc/files?path=/tmp/f", {
        method: "PUT",
        headers: { ...auth, "content-type": "application/octet-stream" },
        body: Buffer.alloc(FILE_LIMIT + 1),
      });
      assertError(r, 413, "payload_too_large");
    });

    it("415s an unsupported content type on JSON routes", async () => {
      for (const type of ["text/plain", "application/xml", "application/x-www-form-urlencoded"]) {
        const r = await call("/v1/sandboxes", {
          method: "POST",
          headers: { ...auth, "content-type": type },
          body: "a=b",
        });
        assertError(r, 415, "unsupported_media_type", new RegExp(type.replace("/", "\\/")));
      }
    });

    it("404s unknown routes as JSON", async () => {
      assertError(
        await call("/v1/nothing-here", { headers: auth }),
        404,
        "not_found",
        /GET \/v1\/nothing-here/,
      );
      assertError(await call("/", { headers: auth }), 404, "not_found");
      assertError(await call("/v1/sandboxes", { method: "PATCH", headers: auth }), 404, "not_found");
    });

    it("400s bad file paths before touching anything", async () => {
      for (const path of ["/../../x", "../../../x", "", "a%00b"]) {
        assertError(
          await call(`/v1/sandboxes/abc/files?path=${path}`, { headers: auth }),
          400,
          "invalid_argument",
        );
        assertError(
          await call(`/v1/sandboxes/abc/files/list?path=${path}`, { headers: auth }),
          path === "" ? 503 : 400,
          path === "" ? "unavailable" : "invalid_argument",
        );
        const put = await call(`/v1/sandboxes/abc/files?path=${path}`, {
          method: "PUT",
          headers: auth,
          body: "x",
        });
        assertError(put, 400, "invalid_argument");
      }
      assertError(
        await call("/v1/sandboxes/abc/files", { headers: auth }),
        400,
        "invalid_argument",
        /'path' is required/,
      );
      assertError(
        await call("/v1/sandboxes/abc/files?path=a&path=b", { headers: auth }),
        400,
        "invalid_argument",
        /given once/,
      );
    });

    it("400s unknown list filters", async () => {
      assertError(
        await call("/v1/sandboxes?owner=me", { headers: auth }),
        400,
        "invalid_argument",
        /metadata\.<key>/,
      );
    });
  });

  describe("an unreachable scheduler", () => {
    it("is 503 unavailable on every REST route, not a crash", async () => {
      const routes: [string, string, RequestInit?][] = [
        [
          "POST",
          "/v1/sandboxes",
          { headers: json, body: JSON.stringify({ templateId: "base", metadata: { a: "b" } }) },
        ],
        ["POST", "/v1/sandboxes", { headers: auth }],
        ["GET", "/v1/sandboxes?metadata.owner=me", { headers: auth }],
        ["GET", "/v1/sandboxes/abc", { headers: auth }],
        ["DELETE", "/v1/sandboxes/abc", { headers: auth }],
        ["POST", "/v1/sandboxes/abc/exec", { headers: json, body: JSON.stringify({ command: "echo hi" }) }],
        [
          "POST",
          "/v1/sandboxes/abc/exec/stream",
          { headers: json, body: JSON.stringify({ command: "echo hi" }) },
        ],
        ["PUT", "/v1/sandboxes/abc/files?path=a.txt", { headers: auth, body: "hello" }],
        ["GET", "/v1/sandboxes/abc/files?path=a.txt", { headers: auth }],
        ["GET", "/v1/sandboxes/abc/files/list?path=/tmp", { headers: auth }],
      ];
      for (const [method, path, init] of routes) {
        const r = await call(path, { ...init, method });
        assertError(r, 503, "unavailable", /^scheduler unavailable/);
      }
      // Still alive.
      assert.equal((await call("/health")).status, 200);
    });

    it("is Connect unavailable on the Connect surface", async () => {
      const client = createClient(
        SandboxService,
        createConnectTransport({ baseUrl: base, httpVersion: "1.1", useBinaryFormat: true }),
      );
      const headers = { "x-api-key": FIXED_KEY };
      const calls: (() => Promise<unknown>)[] = [
        () => client.createSandbox({}, { headers }),
        () => client.getSandbox({ sandboxId: "abc" }, { headers }),
        () => client.listSandboxes({}, { headers }),
        () => client.deleteSandbox({ sandboxId: "abc" }, { headers }),
        () => client.exec({ sandboxId: "abc", command: "true" }, { headers }),
        () =>
          client.writeFile({ sandboxId: "abc", path: "/tmp/x", content: new Uint8Array([1]) }, { headers }),
        () => client.readFile({ sandboxId: "abc", path: "/tmp/x" }, { headers }),
        () => client.listFiles({ sandboxId: "abc", path: "/tmp" }, { headers }),
        async () => {
          for await (const _ of client.execStream({ sandboxId: "abc", command: "true" }, { headers })) {
            // nothing is expected
          }
        },
      ];
      for (const c of calls) {
        await assert.rejects(c(), (err) => {
          assert.ok(err instanceof ConnectError);
          assert.equal(err.code, Code.Unavailable, err.message);
          assert.match(err.rawMessage, /^scheduler unavailable/);
          return true;
        });
      }
    });

    it("reports Connect validation errors through the same table", async () => {
      const client = createClient(
        SandboxService,
        createConnectTransport({ baseUrl: base, httpVersion: "1.1" }),
      );
      await assert.rejects(client.readFile({ sandboxId: "abc", path: "/../x" }, { headers: auth }), (err) => {
        assert.ok(err instanceof ConnectError);
        assert.equal(err.code, Code.InvalidArgument);
        assert.equal(err.rawMessage, "path escapes the sandbox root");
        return true;
      });
      await assert.rejects(client.exec({ sandboxId: "abc", command: "" }, { headers: auth }), (err) => {
        assert.ok(err instanceof ConnectError);
        assert.equal(err.code, Code.InvalidArgument);
        return true;
      });
    });
  });

  it("echoes a sane X-Request-Id and makes one otherwise", async () => {
    const given = await call("/health", { headers: { "x-request-id": "trace-123" } });
    assert.equal(given.headers.get("x-request-id"), "trace-123");
    const made = await call("/health", { headers: { "x-request-id": "bad id with spaces" } });
    assert.match(made.headers.get("x-request-id") ?? "", /^[0-9a-f-]{36}$/);
  });

  it("keeps a request without Content-Type working on JSON routes", async () => {
    // A body-less POST (curl -X POST) is an empty create request.
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${base}/v1/sandboxes`, { method: "POST", headers: auth }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      req.end();
    });
    assert.equal(status, 503);
  });
});

describe("gateway without a fixed key", () => {
  it("creates a dev key once, then reports none on the next start", async () => {
    const t = await freshDb("gw_devkey");
    try {
      const first = await startGateway(t.db);
      const key = first.apiKey;
      assert.match(key ?? "", /^dnah_[0-9A-Za-z]{40}$/);
      const ok = await fetch(`${first.url}/v1/sandboxes`, { headers: { "x-api-key": key ?? "" } });
      assert.equal(ok.status, 503);
      await first.close();

      const second = await startGateway(t.db);
      assert.equal(second.apiKey, undefined);
      const still = await fetch(`${second.url}/v1/sandboxes`, {
        headers: { authorization: `Bearer ${key}` },
      });
      assert.equal(still.status, 503);
      await second.close();
    } finally {
      await t.drop();
    }
  });
});
