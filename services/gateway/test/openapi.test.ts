import assert from "node:assert/strict";
import { readFile, writeFile } from "node:fs/promises";
import { after, before, describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Validator } from "@seriousme/openapi-schema-validator";
import { ACTIVITY_ROUTES, type Gateway } from "../src/index.js";
import { OPENAPI_FILE } from "../src/openapi.js";
import { freshDb, startGateway, type TestDb } from "./helpers.js";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));
/** `DNAH_WRITE_OPENAPI=1` rewrites the committed document from the live one instead of failing. */
const WRITE = process.env.DNAH_WRITE_OPENAPI === "1";
const METHODS = ["get", "put", "post", "delete", "patch"] as const;

type Spec = {
  openapi: string;
  paths: Record<string, Record<string, { operationId?: string; responses?: object }>>;
  components: { securitySchemes: Record<string, { type: string; scheme?: string }> };
  security: object[];
};

/** `/v1/sandboxes/:id/share/*` as the document spells it: `/v1/sandboxes/{id}/share/{path}`. */
const docPath = (url: string) => url.replace(/:(\w+)/g, "{$1}").replace(/\/\*$/, "/{path}");

describe("OpenAPI document", () => {
  let t: TestDb;
  let gw: Gateway;
  let spec: Spec;

  before(async () => {
    t = await freshDb("gw_openapi");
    gw = await startGateway(t.db);
    const r = await fetch(`${gw.url}/openapi.json`); // no API key: public
    assert.equal(r.status, 200);
    assert.match(r.headers.get("content-type") ?? "", /^application\/json/);
    spec = (await r.json()) as Spec;
  });
  after(async () => {
    await gw?.close();
    await t?.drop();
  });

  it("is valid OpenAPI 3.1 (a maintained validator), with a bearer API key scheme", async () => {
    assert.equal(spec.openapi, "3.1.0");
    const v = new Validator();
    const res = await v.validate(structuredClone(spec));
    assert.equal(res.valid, true, JSON.stringify(res.errors, null, 1)?.slice(0, 4000));
    assert.equal(v.version, "3.1");
    assert.deepEqual(spec.components.securitySchemes.apiKey, {
      type: "http",
      scheme: "bearer",
      description: "A dnah API key (`X-API-Key: <key>` is accepted too).",
    });
    assert.deepEqual(spec.security, [{ apiKey: [] }]);
  });

  it("has every /v1 route the gateway registered, with its methods, and nothing else", () => {
    // Every route Fastify registers must be in ACTIVITY_ROUTES (the gateway refuses to start
    // otherwise), so its /v1 keys that the router has are exactly the registered /v1 routes.
    const want = new Map<string, Set<string>>();
    for (const key of Object.keys(ACTIVITY_ROUTES)) {
      const [method, url] = key.split(" ", 2) as [string, string];
      if (!url.startsWith("/v1/")) continue;
      assert.ok(gw.app.hasRoute({ method, url }), `${key} is in the table but not registered`);
      const p = docPath(url);
      want.set(p, (want.get(p) ?? new Set()).add(method.toLowerCase()));
    }
    assert.ok(want.size >= 20, `only ${want.size} /v1 paths`);
    const got = new Map(
      Object.entries(spec.paths).map(([p, ops]) => [
        p,
        new Set(Object.keys(ops).filter((m) => (METHODS as readonly string[]).includes(m))),
      ]),
    );
    assert.deepEqual(got, want);
    const ids = new Set<string>();
    for (const [p, ops] of Object.entries(spec.paths))
      for (const [m, op] of Object.entries(ops)) {
        assert.ok(op.operationId, `${m} ${p} has no operationId`);
        assert.ok(!ids.has(op.operationId), `duplicate operationId ${op.operationId}`);
        ids.add(op.operationId);
        assert.ok(op.responses && Object.keys(op.responses).length > 0, `${m} ${p} has no responses`);
      }
    // The compatibility surfaces and Connect are left out.
    assert.ok(Object.keys(spec.paths).every((p) => p.startsWith("/v1/")));
  });

  it("equals the committed docs/openapi.json", async () => {
    const file = `${REPO}${OPENAPI_FILE}`;
    const live = `${JSON.stringify(spec, null, 2)}\n`;
    if (WRITE) await writeFile(file, live);
    const committed = await readFile(file, "utf8").catch(() => "");
    assert.ok(
      committed === live,
      `${OPENAPI_FILE} is stale: run DNAH_WRITE_OPENAPI=1 node --import tsx --test services/gateway/test/openapi.test.ts`,
    );
  });

  it("documents only: the hand-written body checks still decide, with their messages", async () => {
    const post = async (body: string) => {
      const r = await fetch(`${gw.url}/v1/sandboxes`, {
        method: "POST",
        headers: { authorization: `Bearer ${gw.apiKey}`, "content-type": "application/json" },
        body,
      });
      return { status: r.status, body: (await r.json()) as { code: string; message: string } };
    };
    // Ajv would coerce "5" to 5 and strip `ttl`; body.ts refuses both.
    assert.deepEqual(await post(JSON.stringify({ autoStopMinutes: "5" })), {
      status: 400,
      body: {
        code: "invalid_argument",
        message: "'autoStopMinutes' must be an integer from 0 to 4294967295",
      },
    });
    assert.deepEqual(await post(JSON.stringify({ ttl: 3 })), {
      status: 400,
      body: { code: "invalid_argument", message: "unknown field 'ttl'" },
    });
    assert.deepEqual(await post("[1]"), {
      status: 400,
      body: { code: "invalid_argument", message: "request body must be a JSON object" },
    });
    const exec = await fetch(`${gw.url}/v1/sandboxes/sbx1/exec`, {
      method: "POST",
      headers: { authorization: `Bearer ${gw.apiKey}`, "content-type": "application/json" },
      body: "{}",
    });
    assert.deepEqual(await exec.json(), { code: "invalid_argument", message: "'command' is required" });
  });

  it("serves /llms.txt and /llms-full.txt without a key, and the API still wants one", async () => {
    for (const name of ["llms.txt", "llms-full.txt"]) {
      const r = await fetch(`${gw.url}/${name}`);
      assert.equal(r.status, 200, name);
      assert.match(r.headers.get("content-type") ?? "", /^text\/plain/);
      assert.equal(await r.text(), await readFile(`${REPO}docs/${name}`, "utf8"));
    }
    assert.equal((await fetch(`${gw.url}/v1/sandboxes`)).status, 401);
  });
});
