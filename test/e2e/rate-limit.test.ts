import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import { Daytona, DaytonaError, DaytonaRateLimitError } from "@daytonaio/sdk";
import { createApiKey } from "@dnah/gateway";
import { RateLimitError, Sandbox } from "e2b";
import { sandboxClient, startTestStack, type TestStack } from "./harness.js";

/** 360 per minute counted over 5 s windows: 30 requests per window. */
const PER_MINUTE = 360;
const WINDOW_MS = 5_000;
const BUDGET = (PER_MINUTE * WINDOW_MS) / 60_000;

/**
 * Per-credential rate limits (issue 11): the 31st request of a window is a 429 with
 * Retry-After on every surface, in that surface's shape, as the real SDKs read it; another
 * key is untouched at the same moment; the budget comes back after the window.
 */
describe("rate limits: 429 with Retry-After per key, on every surface", () => {
  let s: TestStack;
  let keyA: string;
  let keyB: string;

  before(async () => {
    s = await startTestStack({
      DNAH_POOL_SIZE: "0",
      DNAH_RATE_LIMIT_PER_MINUTE: String(PER_MINUTE),
      DNAH_RATE_LIMIT_WINDOW_MS: String(WINDOW_MS),
    });
    keyA = (await createApiKey(s.db, "rate-limit-a")).key;
    keyB = (await createApiKey(s.db, "rate-limit-b")).key;
  });
  after(async () => {
    await s?.close();
  });

  /** Sends cheap requests with `headers` until one is refused; returns that 429. */
  async function exhaust(headers: Record<string, string>, path = "/v1/rate-limit-probe"): Promise<Response> {
    for (let i = 0; i <= 2 * BUDGET; i++) {
      const r = await fetch(s.url + path, { headers });
      if (r.status === 429) return r;
      await r.arrayBuffer();
    }
    throw new Error(`no 429 after ${2 * BUDGET} requests`);
  }
  const bearer = (key: string) => ({ authorization: `Bearer ${key}` });
  const e2bOpts = (key: string) => ({ apiKey: key, apiUrl: s.url, sandboxUrl: s.url, retries: 0 });
  const daytona = (key: string) => new Daytona({ apiKey: key, apiUrl: `${s.url}/api` });

  function assertRetryAfter(r: Response): number {
    const v = Number(r.headers.get("retry-after"));
    assert.ok(Number.isInteger(v) && v >= 1 && v <= WINDOW_MS / 1000, `Retry-After ${v}`);
    return v;
  }

  test("a fresh key gets exactly its budget, then native REST answers 429 rate_limited", async () => {
    const fresh = (await createApiKey(s.db, "rate-limit-fresh")).key;
    let allowed = 0;
    let refused: Response | undefined;
    while (refused === undefined && allowed <= 2 * BUDGET) {
      const r = await fetch(`${s.url}/v1/sandboxes`, { headers: bearer(fresh) });
      if (r.status === 429) refused = r;
      else {
        assert.equal(r.status, 200);
        await r.arrayBuffer();
        allowed++;
      }
    }
    assert.equal(allowed, BUDGET);
    assert.ok(refused);
    assertRetryAfter(refused);
    assert.equal(refused.headers.get("content-type")?.split(";")[0], "application/json");
    const body = (await refused.json()) as { code: string; message: string };
    assert.equal(body.code, "rate_limited");
    assert.match(body.message, /rate limit exceeded: 30 requests per 5 s .*retry in \d+ s/);
  });

  test("native REST: key A is refused while key B goes through", async () => {
    const r = await exhaust(bearer(keyA));
    assertRetryAfter(r);
    assert.equal(((await r.json()) as { code: string }).code, "rate_limited");
    const a = await fetch(`${s.url}/v1/sandboxes`, { headers: bearer(keyA) });
    assert.equal(a.status, 429);
    await a.arrayBuffer();
    const b = await fetch(`${s.url}/v1/sandboxes`, { headers: bearer(keyB) });
    assert.equal(b.status, 200);
    await b.arrayBuffer();
  });

  test("Connect: unary and server-streaming calls fail with ResourceExhausted", async () => {
    const clientA = sandboxClient({ url: s.url, key: keyA });
    await exhaust(bearer(keyA));
    await assert.rejects(clientA.listSandboxes({}), (e: unknown) => {
      assert.ok(e instanceof ConnectError, String(e));
      assert.equal(e.code, Code.ResourceExhausted);
      assert.match(e.rawMessage, /rate limit exceeded/);
      return true;
    });
    await exhaust(bearer(keyA));
    await assert.rejects(
      (async () => {
        for await (const _ of clientA.execStream({ sandboxId: "none", command: "true" })) {
          // never reached: the limit answers before the sandbox is looked up
        }
      })(),
      (e: unknown) => e instanceof ConnectError && e.code === Code.ResourceExhausted,
    );
    const listed = await sandboxClient({ url: s.url, key: keyB }).listSandboxes({});
    assert.ok(Array.isArray(listed.sandboxes));
  });

  test("E2B control API: the real e2b SDK raises RateLimitError; key B lists", async () => {
    await exhaust(bearer(keyA));
    await assert.rejects(Sandbox.list(e2bOpts(keyA)).nextItems(), (e: unknown) => {
      assert.ok(e instanceof RateLimitError, String(e));
      assert.match(e.message, /rate limit exceeded/);
      return true;
    });
    assert.deepEqual(await Sandbox.list(e2bOpts(keyB)).nextItems(), []);
  });

  test("Daytona API: the real @daytonaio/sdk raises DaytonaRateLimitError (429); key B lists", async () => {
    await exhaust(bearer(keyA));
    await assert.rejects(
      (async () => {
        for await (const _ of daytona(keyA).list()) {
          // nothing to list
        }
      })(),
      (e: unknown) => {
        assert.ok(e instanceof DaytonaRateLimitError, String(e));
        assert.ok(e instanceof DaytonaError);
        assert.equal(e.statusCode, 429);
        assert.equal(e.code, "TOO_MANY_REQUESTS");
        assert.equal(e.source, "DAYTONA_API");
        return true;
      },
    );
    const listed: unknown[] = [];
    for await (const x of daytona(keyB).list()) listed.push(x);
    assert.deepEqual(listed, []);
  });

  test("E2B sandbox traffic is counted per access token: E2B body, or Connect for envd RPCs", async () => {
    const envd = { "e2b-sandbox-id": "nosuchsandbox", "x-access-token": "token-of-one-sandbox" };
    const r = await exhaust(envd, "/files?path=/tmp/x");
    assertRetryAfter(r);
    const body = (await r.json()) as { code: number; message: string };
    assert.equal(body.code, 429);
    assert.match(body.message, /rate limit exceeded/);
    const rpc = await fetch(`${s.url}/process.Process/List`, {
      method: "POST",
      headers: { ...envd, "content-type": "application/json", "connect-protocol-version": "1" },
      body: "{}",
    });
    assert.equal(rpc.status, 429);
    assert.equal(((await rpc.json()) as { code: string }).code, "resource_exhausted");
    // Another sandbox's token is its own count: the request reaches the proxy (no such sandbox).
    const other = await fetch(`${s.url}/files?path=/tmp/x`, {
      headers: { ...envd, "x-access-token": "token-of-another-sandbox" },
    });
    assert.equal(other.status, 502);
    await other.arrayBuffer();
  });

  test("Daytona preview links are counted per preview token, answered in Daytona's shape", async () => {
    const r = await exhaust({ "x-daytona-preview-token": "preview-token-1" }, "/preview/nosuch/3000/");
    assertRetryAfter(r);
    const body = (await r.json()) as Record<string, unknown>;
    assert.equal(body.statusCode, 429);
    assert.equal(body.code, "TOO_MANY_REQUESTS");
    assert.equal(body.source, "DAYTONA_PROXY");
  });

  test("no credential: counted per client IP; health and the API's documents are never limited", async () => {
    const r = await exhaust({});
    assertRetryAfter(r);
    assert.equal(((await r.json()) as { code: string }).code, "rate_limited");
    for (const path of ["/health", "/openapi.json", "/llms.txt"]) {
      const ok = await fetch(s.url + path);
      assert.equal(ok.status, 200, path);
      await ok.arrayBuffer();
    }
    // A key's count is not the IP's: the same client with key B still goes through.
    const b = await fetch(`${s.url}/v1/sandboxes`, { headers: bearer(keyB) });
    assert.equal(b.status, 200);
    await b.arrayBuffer();
  });

  test("after the window key A works again: the e2b SDK waits out Retry-After by itself", async () => {
    const r = await exhaust(bearer(keyA));
    assertRetryAfter(r);
    await r.arrayBuffer();
    // Default retries: the SDK sleeps Retry-After seconds, then the new window lets it through.
    assert.deepEqual(await Sandbox.list({ ...e2bOpts(keyA), retries: 3 }).nextItems(), []);
    const again = await fetch(`${s.url}/v1/sandboxes`, { headers: bearer(keyA) });
    assert.equal(again.status, 200);
    await again.arrayBuffer();
  });
});
