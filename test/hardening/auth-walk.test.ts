import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createApiKey, revokeApiKey } from "@dnah/gateway";
import { SandboxService } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { io } from "socket.io-client";
import { startTestStack, type TestStack } from "../e2e/harness.js";
import { leak, rawRequest, UPGRADE_HEADERS } from "./http.js";
import { type RouteEntry, routeTable } from "./route-table.js";
import { record, summaryLines, tally } from "./summary.js";

/**
 * The routes anyone may call: the health check and the API's own documents. Every other
 * route in the gateway's router must refuse a caller without a valid credential; a route
 * that is in neither group fails the walk, so a new route cannot be forgotten.
 */
const PUBLIC_ROUTES = new Set(["GET /health", "GET /openapi.json", "GET /llms.txt", "GET /llms-full.txt"]);

/** WebSocket routes: their handshake must be refused too, not just their plain GETs. */
const UPGRADE_ROUTES = [
  "/v1/sandboxes/:id/files/watch",
  "/v1/sandboxes/:id/terminal",
  "/toolbox/:sandboxId/process/pty/:sessionId/connect",
  "/toolbox/:sandboxId/process/pty/create-connect",
  "/toolbox/:sandboxId/process/session/:sessionId/command/:commandId/logs",
];

const CONNECT_PREFIX = `/${SandboxService.typeName}/`;

describe("auth walk: every route of the gateway's router refuses a missing, wrong or revoked key", () => {
  let s: TestStack;
  let routes: RouteEntry[];
  const ids = { native: "", e2b: "", daytona: "", envdToken: "" };
  let revoked = "";

  before(async () => {
    s = await startTestStack({ DNAH_POOL_SIZE: "0", DNAH_RATE_LIMIT_PER_MINUTE: "0" });
    routes = routeTable(s.gatewayApp);
    ids.native = (
      await s.json<{ sandboxId: string }>("/v1/sandboxes", { method: "POST", body: "{}" })
    ).body.sandboxId;
    const e2b = await s.json<{ sandboxID: string; envdAccessToken: string }>("/sandboxes", {
      method: "POST",
      body: JSON.stringify({ templateID: "base", secure: true }),
    });
    assert.equal(e2b.status, 201, JSON.stringify(e2b.body));
    ids.e2b = e2b.body.sandboxID;
    ids.envdToken = e2b.body.envdAccessToken;
    const dt = await s.json<{ id: string }>("/api/sandbox", { method: "POST", body: "{}" });
    assert.ok(dt.status < 300, JSON.stringify(dt.body));
    ids.daytona = dt.body.id;
    // A key that was valid and is no more: created, then revoked before its first use.
    const k = await createApiKey(s.db, "hardening-revoked");
    assert.equal(await revokeApiKey(s.db, k.id), true);
    revoked = k.key;
  });
  after(async () => {
    await s?.close();
  });

  /** A concrete path for a route pattern: the real sandbox of its surface, made-up ids elsewhere. */
  const fill = (url: string): string => {
    const surfaceId = url.startsWith("/v1/")
      ? ids.native
      : url.startsWith("/sandboxes") || url.startsWith("/v2/")
        ? ids.e2b
        : ids.daytona;
    return url
      .replace(/^\/preview\/\*$/, `/preview/${ids.daytona}/3000/`)
      .replace(/:(id|sandboxId)(?=\/|$)/g, surfaceId)
      .replace(/^\/api\/sandbox\/:idOrName/, `/api/sandbox/${ids.daytona}`)
      .replace(/:idOrName/g, "snap-made-up")
      .replace(/:port/g, "3000")
      .replace(/:interval/g, "5")
      .replace(/:(\w+)/g, "made-up-$1")
      .replace(/\*$/, "x");
  };

  const credentials = (): [string, Record<string, string>][] => [
    ["no key", {}],
    ["wrong key", { authorization: "Bearer dnah_wrongwrongwrongwrongwrongwrongwrongwrong" }],
    ["revoked key", { authorization: `Bearer ${revoked}` }],
    ["revoked key as X-API-Key", { "x-api-key": revoked }],
  ];

  test("every route is public by name or refuses each bad credential with 401/403", async (t) => {
    const area = tally("auth: route walk");
    const seen = new Set<string>();
    for (const r of routes) {
      const name = `${r.method} ${r.url}`;
      if (seen.has(name)) continue;
      seen.add(name);
      const path = fill(r.url);
      const hasBody = !["GET", "HEAD", "OPTIONS", "TRACE", "DELETE"].includes(r.method);
      if (PUBLIC_ROUTES.has(name)) {
        const a = await rawRequest(s.url, { method: r.method, path });
        record(area, a.status === 200 ? undefined : `${name}: public route answered ${a.status}`);
        continue;
      }
      for (const [label, headers] of credentials()) {
        const a = await rawRequest(s.url, {
          method: r.method,
          path,
          headers: { ...headers, ...(hasBody ? { "content-type": "application/json" } : {}) },
          ...(hasBody ? { body: "{}" } : {}),
        });
        const text = a.body.toString("utf8");
        const refused = a.status === 401 || a.status === 403;
        record(
          area,
          !refused
            ? `${name} (${path}) with ${label}: ${a.status} ${text.slice(0, 120)}`
            : leak(text) === undefined
              ? undefined
              : `${name} with ${label}: ${leak(text)}`,
        );
      }
    }
    for (const line of summaryLines(area)) t.diagnostic(line);
    assert.deepEqual(area.failures, []);
    // Control: with the valid key, the GET routes answer something other than an auth refusal,
    // so the refusals above are about the credential (preview links want their own token).
    for (const r of routes) {
      if (
        r.method !== "GET" ||
        r.url.startsWith("/preview/") ||
        // Daytona's context store takes the SigV4 credentials push-access hands out, not the key.
        r.url.startsWith("/daytona-storage/") ||
        PUBLIC_ROUTES.has(`GET ${r.url}`)
      )
        continue;
      const a = await rawRequest(s.url, {
        method: "GET",
        path: fill(r.url),
        headers: { authorization: `Bearer ${s.key}` },
      });
      assert.ok(a.status !== 401 && a.status !== 403, `GET ${r.url} refused the valid key: ${a.status}`);
    }
    // The walk saw every surface: a broken route-table reader would pass vacuously otherwise.
    for (const prefix of [
      "/v1/",
      "/sandboxes",
      "/v2/",
      "/api/",
      "/toolbox/",
      "/preview/",
      CONNECT_PREFIX,
      "/mcp",
    ])
      assert.ok(
        routes.some((r) => r.url.startsWith(prefix)),
        `no route under ${prefix}`,
      );
    for (const m of SandboxService.methods)
      assert.ok(
        routes.some((r) => r.url === `${CONNECT_PREFIX}${m.name}`),
        `Connect method ${m.name} missing`,
      );
    for (const p of PUBLIC_ROUTES) assert.ok(seen.has(p), `public route ${p} is not in the router`);
    for (const u of UPGRADE_ROUTES)
      assert.ok(
        routes.some((r) => r.method === "GET" && r.url === u),
        `upgrade route ${u} is not in the router`,
      );
  });

  test("WebSocket and socket.io handshakes without a valid key are refused", async (t) => {
    const area = tally("auth: upgrades");
    for (const u of UPGRADE_ROUTES) {
      for (const [label, headers] of credentials()) {
        const a = await rawRequest(s.url, {
          method: "GET",
          path: fill(u),
          headers: { ...UPGRADE_HEADERS, ...headers },
        });
        record(
          area,
          !a.upgraded && (a.status === 401 || a.status === 403)
            ? undefined
            : `${u} with ${label}: ${a.upgraded ? "upgraded" : a.status}`,
        );
      }
    }
    // socket.io authenticates in its CONNECT packet: a bad token must end in connect_error.
    for (const [label, token] of [
      ["no token", undefined],
      ["wrong token", "dnah_wrong"],
      ["revoked key", revoked],
    ] as const) {
      const sock = io(s.url, {
        path: "/api/socket.io/",
        transports: ["websocket"],
        reconnection: false,
        ...(token === undefined ? {} : { auth: { token } }),
      });
      const outcome = await new Promise<string>((resolve) => {
        sock.once("connect", () => resolve("connected"));
        sock.once("connect_error", (e) => resolve(`refused: ${e.message}`));
      });
      sock.close();
      record(area, outcome.startsWith("refused") ? undefined : `socket.io with ${label}: ${outcome}`);
    }
    for (const line of summaryLines(area)) t.diagnostic(line);
    assert.deepEqual(area.failures, []);
  });

  test("envd through the gateway wants the sandbox's access token, not an API key", async (t) => {
    const area = tally("auth: envd");
    const envd = (headers: Record<string, string>, path = "/process.Process/List", method = "POST") =>
      rawRequest(s.url, {
        method,
        path,
        headers: { "e2b-sandbox-id": ids.e2b, "content-type": "application/json", ...headers },
        ...(method === "POST" ? { body: "{}" } : {}),
      });
    const cases: [string, Record<string, string>, string?, string?][] = [
      ["no token", {}],
      ["wrong token", { "x-access-token": "wrong" }],
      ["the API key instead", { authorization: `Bearer ${s.key}`, "x-api-key": s.key }],
      ["another sandbox's id with this token", { "x-access-token": `${ids.envdToken}x` }],
      ["unsigned file read", {}, "/files?path=/etc/hostname", "GET"],
    ];
    for (const [label, headers, path, method] of cases) {
      const a = await envd(headers, path, method);
      record(
        area,
        a.status === 401 || a.status === 403
          ? undefined
          : `envd ${label}: ${a.status} ${a.body.toString().slice(0, 120)}`,
      );
    }
    // The token does open it: the refusals above are about the credential, not a dead route.
    const ok = await envd({ "x-access-token": ids.envdToken });
    assert.equal(ok.status, 200, ok.body.toString());
    for (const line of summaryLines(area)) t.diagnostic(line);
    assert.deepEqual(area.failures, []);
  });
});
