import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { connect } from "node:net";
import { after, before, describe, test } from "node:test";
import { type DescField, type DescMessage, ScalarType } from "@bufbuild/protobuf";
import { SandboxService } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { Filesystem } from "@dnah/proto/filesystem/filesystem_pb";
import { Process } from "@dnah/proto/process/process_pb";
import { startTestStack, type TestStack } from "../e2e/harness.js";
import { leak, type RawAnswer, type RawRequest, rawBytes, rawRequest } from "./http.js";
import { type RouteEntry, routeTable } from "./route-table.js";
import { type AreaTally, record, summaryLines, tally } from "./summary.js";

/**
 * Bad input over every surface of the gateway: native REST (from docs/openapi.json), Connect
 * `dnah.sandbox.v1.SandboxService`, the E2B control API and envd behind it, the Daytona API and
 * toolbox. Every case is invalid by construction, so every answer must be a 4xx with a JSON (or
 * the surface's documented) error body and no internals; no case may hang or kill a service.
 *
 * Deterministic: cases come from a seeded PRNG (DNAH_FUZZ_SEED, printed). Each run sweeps every
 * route with every family once, then draws DNAH_FUZZ_CASES more (default bounded for CI).
 */
const SEED = Number(process.env.DNAH_FUZZ_SEED ?? 20261203) >>> 0;
const EXTRA_CASES = Number(process.env.DNAH_FUZZ_CASES ?? 400);
/** The stack's body limits, small so "over the limit" costs little to send. */
const JSON_LIMIT = 16 * 1024;
const FILE_LIMIT = 64 * 1024;
const CASE_TIMEOUT_MS = 10_000;

/** mulberry32: tiny, seedable, good enough to pick cases. */
function prng(seed: number) {
  let a = seed;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    int: (n: number) => Math.floor(next() * n),
    pick: <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)] as T,
    bytes: (n: number) => Buffer.from(Array.from({ length: n }, () => Math.floor(next() * 256))),
  };
}
type Rng = ReturnType<typeof prng>;

/** A fuzz case: what to send, and which answers count as the surface's documented error. */
interface Case {
  readonly label: string;
  readonly req?: RawRequest;
  /** Bytes for a raw socket (requests node:http refuses to build). */
  readonly raw?: string;
  /** Connect streaming: HTTP 200 with an end-of-stream error frame is the documented answer. */
  readonly connectStream?: boolean;
  /** The exact statuses this case must get (oversized requests: 413, 431), beyond "a 4xx". */
  readonly expect?: readonly number[];
}

// ---- inputs -----------------------------------------------------------------------------------

const MALFORMED_JSON = [
  "{",
  '{"a":',
  "[1,2",
  "nul",
  "{'a':1}",
  '{"a":1}}',
  '{"a":NaN}',
  '{"a":1,}',
  "\u0000{}",
  '{"a":"\\ud800\\u"}',
  '{"a" 1}',
  "\ufeff{\u0000}",
  "}{",
  '{"__proto__":',
];
/** Values of the wrong type for a field declared as `type`. */
const WRONG_FOR: Record<string, unknown[]> = {
  string: [42, true, null, {}, [], { $gt: "" }, ["x"]],
  integer: ["1", 1.5, -1, null, {}, [], "NaN", 2 ** 64],
  number: ["1", null, {}, [], true, -1],
  boolean: ["true", 1, null, {}, []],
  object: ["x", 42, [], null, true, { k: 42 }, { k: { nested: "x" } }],
  array: ["x", 42, {}, null],
};
/** Path and id segments, percent-encoded as sent. */
const ODD_SEGMENTS = [
  "%00",
  "a%00b",
  "%ED%A0%80", // a lone surrogate's UTF-8 bytes (invalid UTF-8)
  "%C0%AE%C0%AE", // overlong "..": invalid UTF-8
  "%E0%A4%A",
  encodeURIComponent("\u202eevil\u202c"), // RTL override
  encodeURIComponent("a\u200b\u200db\ufeff"), // zero-width and BOM
  encodeURIComponent("e\u0301\u0301\u0301\u0301"),
  encodeURIComponent("𝔡𝔫𝔞𝔥"),
  "..%2F..%2F..%2Fetc%2Fpasswd",
  "%2e%2e",
  "..",
  "%252e%252e%252f",
  "x".repeat(2000),
  "%FF%FE",
];
/** encodeURIComponent, except a lone surrogate (which it refuses) is sent as its raw UTF-8 bytes. */
const enc = (x: string) => {
  try {
    return encodeURIComponent(x);
  } catch {
    return x
      .split("")
      .map((ch) => (/[\ud800-\udfff]/.test(ch) ? "%ED%A0%80" : encodeURIComponent(ch)))
      .join("");
  }
};
const ODD_STRINGS = [
  "\u0000",
  "/tmp/a\u0000b",
  "\ud800",
  "\udfff\ud800",
  "\u202e/etc/passwd",
  "\u200b",
  "../../../../etc/shadow",
  "/../".repeat(200),
];

// ---- surfaces -----------------------------------------------------------------------------------

interface Target {
  readonly surface: "native" | "connect" | "e2b" | "daytona" | "toolbox" | "envd" | "other";
  readonly method: string;
  /** A concrete path with a real id of the surface. */
  readonly path: string;
  /** The path with a made-up id, for destructive routes and unknown-id cases. */
  readonly unknownPath: string;
  /** The request body's JSON schema when the route documents one. */
  readonly schema?: JsonSchema;
  readonly streaming?: boolean;
  /** Connect: the request message, for wrong types per field. */
  readonly input?: DescMessage;
}
interface JsonSchema {
  type?: string;
  properties?: Record<string, JsonSchema>;
}

const SAFE_TO_HIT_FOR_REAL = (method: string, path: string) =>
  // Anything that could succeed and destroy or change state goes to a made-up id instead.
  !(
    method === "DELETE" ||
    /\/(pause|archive|stop|resume|start|kill|timeout|fork|snapshots?|restore|labels|autostop|autoarchive|autodelete|connect|last-activity|terminal|watch)(\/|$|\?)/.test(
      path,
    )
  );

describe("fuzz: bad input over every surface gets a clear 4xx; nothing dies", () => {
  let s: TestStack;
  let rng: Rng;
  const ids = { native: "", e2b: "", daytona: "", envdToken: "", witness: "" };
  let targets: Target[] = [];
  const areas = new Map<string, AreaTally>();
  const area = (name: string) => {
    let a = areas.get(name);
    if (a === undefined) {
      a = tally(name);
      areas.set(name, a);
    }
    return a;
  };

  before(async () => {
    s = await startTestStack({
      DNAH_POOL_SIZE: "0",
      DNAH_RATE_LIMIT_PER_MINUTE: "0",
      DNAH_JSON_BODY_LIMIT_BYTES: String(JSON_LIMIT),
      DNAH_FILE_LIMIT_BYTES: String(FILE_LIMIT),
    });
    rng = prng(SEED);
    const native = () =>
      s
        .json<{ sandboxId: string }>("/v1/sandboxes", { method: "POST", body: "{}" })
        .then((r) => r.body.sandboxId);
    ids.native = await native();
    // Never a fuzz target: proves at the end that the chain gateway → vmm → guest still works.
    ids.witness = await native();
    const e2b = await s.json<{ sandboxID: string; envdAccessToken: string }>("/sandboxes", {
      method: "POST",
      body: JSON.stringify({ templateID: "base", secure: true }),
    });
    ids.e2b = e2b.body.sandboxID;
    ids.envdToken = e2b.body.envdAccessToken;
    ids.daytona = (await s.json<{ id: string }>("/api/sandbox", { method: "POST", body: "{}" })).body.id;
    targets = buildTargets(routeTable(s.gatewayApp));
  });
  after(async () => {
    await s?.close();
  });

  function buildTargets(routes: RouteEntry[]): Target[] {
    const openapi = JSON.parse(readFileSync(new URL("../../docs/openapi.json", import.meta.url), "utf8")) as {
      paths: Record<
        string,
        Record<string, { requestBody?: { content?: Record<string, { schema?: JsonSchema }> } }>
      >;
    };
    const out: Target[] = [];
    // Native REST: the documented API, with its body schemas.
    for (const [p, ops] of Object.entries(openapi.paths))
      for (const [m, op] of Object.entries(ops)) {
        const method = m.toUpperCase();
        const concrete = p
          .replace("{id}", ids.native)
          .replace("{idOrName}", "snap-made-up")
          .replace("{path}", "f.txt");
        const schema = op.requestBody?.content?.["application/json"]?.schema;
        out.push({
          surface: "native",
          method,
          path: SAFE_TO_HIT_FOR_REAL(method, concrete)
            ? concrete
            : p.replace("{id}", "madeup").replace("{idOrName}", "nope").replace("{path}", "f.txt"),
          unknownPath: p.replace("{id}", "madeup").replace("{idOrName}", "nope").replace("{path}", "f.txt"),
          ...(schema === undefined ? {} : { schema }),
        });
      }
    // Every route of the other surfaces, as the router holds them.
    for (const r of routes) {
      const surface =
        r.url.startsWith("/sandboxes") ||
        r.url.startsWith("/v2/") ||
        r.url.startsWith("/snapshots") ||
        r.url.startsWith("/templates")
          ? "e2b"
          : r.url.startsWith("/api/")
            ? "daytona"
            : r.url.startsWith("/toolbox/")
              ? "toolbox"
              : r.url.startsWith("/mcp") ||
                  r.url === "/health" ||
                  r.url.endsWith(".txt") ||
                  r.url === "/openapi.json"
                ? "other"
                : undefined;
      if (surface === undefined) continue;
      const real = surface === "e2b" ? ids.e2b : ids.daytona;
      const fill = (id: string) =>
        r.url
          .replace(/:(id|sandboxId|idOrName)(?=\/|$)/g, id)
          .replace(/:port/g, "3000")
          .replace(/:interval/g, "5")
          .replace(/:(\w+)/g, "made-up-$1")
          .replace(/\*$/, "x");
      const concrete = fill(real);
      out.push({
        surface,
        method: r.method,
        path: SAFE_TO_HIT_FOR_REAL(r.method, concrete) ? concrete : fill("madeup"),
        unknownPath: fill("madeup"),
      });
    }
    for (const m of SandboxService.methods)
      out.push({
        surface: "connect",
        method: "POST",
        path: `/${SandboxService.typeName}/${m.name}`,
        unknownPath: `/${SandboxService.typeName}/${m.name}`,
        streaming: m.methodKind !== "unary",
        input: m.input,
      });
    // envd's Connect services (E2B's wire contract), reached through the gateway with the token.
    for (const svc of [Process, Filesystem])
      for (const m of svc.methods)
        out.push({
          surface: "envd",
          method: "POST",
          path: `/${svc.typeName}/${m.name}`,
          unknownPath: `/${svc.typeName}/${m.name}`,
          streaming: m.methodKind !== "unary",
          input: m.input,
        });
    return out;
  }

  const auth = (t: Target): Record<string, string> =>
    t.surface === "envd"
      ? { "e2b-sandbox-id": ids.e2b, "x-access-token": ids.envdToken }
      : { authorization: `Bearer ${s.key}` };
  const hasBody = (t: Target) => ["POST", "PUT", "PATCH"].includes(t.method);
  const isJsonRoute = (t: Target) =>
    hasBody(t) && !(t.surface === "native" && t.method === "PUT") && !t.path.includes("/share/");

  // ---- case families: each returns a case for a target, or undefined when it does not apply ----

  type Family = (t: Target, r: Rng) => Case | undefined;
  const json = (t: Target, body: string | Buffer, extra: Record<string, string> = {}): RawRequest => ({
    method: t.method,
    path: t.path,
    headers: {
      ...auth(t),
      "content-type":
        t.surface === "connect" || t.surface === "envd" ? "application/json" : "application/json",
      ...extra,
    },
    body,
  });

  const families: Record<string, Family> = {
    "malformed JSON": (t, r) =>
      isJsonRoute(t) && !t.streaming
        ? { label: "malformed JSON", req: json(t, r.pick(MALFORMED_JSON)) }
        : undefined,
    "wrong types": (t, r) => {
      if (t.surface === "connect" || t.surface === "envd") {
        if (t.streaming) return undefined;
        const fields = (t.input?.fields ?? []).filter((f) => wrongJson(f, r) !== undefined);
        // A field of the message with a value of another type, or a message that is no object.
        if (fields.length === 0 || r.next() < 0.2)
          return {
            label: "Connect JSON, not an object",
            req: json(t, r.pick(["[]", "42", '"s"', "true", "[{}]"])),
          };
        const f = r.pick(fields);
        return {
          label: `Connect JSON, wrong type for ${f.jsonName}`,
          req: json(t, JSON.stringify({ [f.jsonName]: wrongJson(f, r) })),
        };
      }
      if (!isJsonRoute(t)) return undefined;
      const props = t.schema?.properties;
      if (props !== undefined && Object.keys(props).length > 0 && r.next() < 0.8) {
        const [name, p] = r.pick(Object.entries(props));
        const bad = r.pick(WRONG_FOR[p.type ?? "string"] ?? WRONG_FOR.string ?? []);
        // Sometimes with an extra field as well: the schemas allow no extra properties.
        const body = r.next() < 0.3 ? { [name]: bad, ["x-extra" + r.int(9)]: "x" } : { [name]: bad };
        return { label: `wrong type for ${name}`, req: json(t, JSON.stringify(body)) };
      }
      if (t.surface === "native" && t.schema !== undefined)
        return {
          label: "extra field",
          req: json(t, JSON.stringify({ ["unexpected_" + r.int(99)]: r.pick([1, "x", null]) })),
        };
      if (t.schema === undefined && t.surface === "native") return undefined;
      // Surfaces without a published schema: top-level types no route accepts.
      return { label: "non-object JSON body", req: json(t, r.pick(["[]", "42", '"s"', "[{}]"])) };
    },
    "deep nesting": (t, r) => {
      if (!isJsonRoute(t) || t.streaming) return undefined;
      const depth = 2000 + r.int(3000);
      const nested = "[".repeat(depth) + "]".repeat(depth);
      // Only where the nesting lands in a field the route reads (an object field gets arrays),
      // or as the whole message (Connect, envd): elsewhere an unread field may be ignored.
      if (t.surface === "connect" || t.surface === "envd")
        return { label: `message nested ${depth} deep`, req: json(t, nested) };
      const field = t.schema?.properties
        ? r.pick(Object.keys(t.schema.properties))
        : t.surface === "e2b" && /^\/(v2\/)?sandboxes$/.test(t.path) && t.method === "POST"
          ? "metadata"
          : t.surface === "daytona" && t.path === "/api/sandbox" && t.method === "POST"
            ? "labels"
            : undefined;
      if (field === undefined) return undefined;
      return { label: `${field} nested ${depth} deep`, req: json(t, `{"${field}":${nested}}`) };
    },
    "huge body": (t, r) => {
      // Shares and template build contexts take large files by design (their own limits);
      // envd has its own, larger, limit.
      const ownLimit = t.path.includes("/share/") || /\/templates\/(files|[^/]+\/files)\//.test(t.path);
      if (!hasBody(t) || ownLimit || t.surface === "envd") return undefined;
      // Connect reads bodies up to the larger of the two limits.
      const limit = isJsonRoute(t) && t.surface !== "connect" ? JSON_LIMIT : FILE_LIMIT;
      const size = limit + 1 + r.int(limit);
      const body = isJsonRoute(t) ? `{"x":"${"a".repeat(size)}"}` : Buffer.alloc(size, 0x61);
      const type =
        t.surface === "connect"
          ? t.streaming
            ? "application/connect+proto"
            : "application/proto"
          : isJsonRoute(t)
            ? "application/json"
            : "application/octet-stream";
      // The size check comes after the id check: a made-up id may get its 404 first.
      const madeUp = /madeup|nope/.test(t.path);
      return {
        label: `body of ${size} bytes over a ${limit} limit`,
        ...(t.streaming ? { connectStream: true } : {}),
        ...(madeUp || t.streaming
          ? {}
          : // Connect maps its resource_exhausted to 429; E2B's table answers 400 (as E2B does).
            { expect: t.surface === "connect" ? [413, 429] : t.surface === "e2b" ? [400, 413] : [413] }),
        req: {
          method: t.method,
          path: t.path.includes("/files") && t.method === "PUT" ? `${t.path}?path=/tmp/huge` : t.path,
          headers: { ...auth(t), "content-type": type },
          body: t.streaming ? frame(Buffer.from(body)) : body,
        },
      };
    },
    "huge header": (t, r) => ({
      label: "a 20 KiB header",
      expect: [431],
      req: {
        method: t.method,
        path: t.path,
        headers: { ...auth(t), [`x-big-${r.int(9)}`]: "h".repeat(20_000 + r.int(4000)) },
      },
    }),
    "many headers": (t) => {
      const headers: Record<string, string> = { ...auth(t) };
      for (let i = 0; i < 3000; i++) headers[`x-h${i}`] = "v";
      return { label: "3000 headers", expect: [431], req: { method: t.method, path: t.path, headers } };
    },
    "odd id": (t, r) => {
      if (t.surface === "connect" || t.surface === "envd") return undefined;
      const seg = r.pick(ODD_SEGMENTS);
      const real = [ids.native, ids.e2b, ids.daytona].find((id) => t.path.includes(id));
      const path = real !== undefined ? t.path.replace(real, seg) : t.unknownPath.replace("madeup", seg);
      if (path === t.path || path === t.unknownPath) return undefined;
      return {
        label: `id ${seg.slice(0, 40)}`,
        req: { method: t.method, path, headers: auth(t), ...(hasBody(t) ? { body: "{}" } : {}) },
      };
    },
    "odd query": (t, r) => {
      if (t.surface === "connect" || t.surface === "envd" || t.surface === "other") return undefined;
      // A real id only for native file paths (which must stay inside the sandbox's root);
      // elsewhere a made-up id, so that an ignored parameter cannot turn the case into a success.
      const realFiles = t.surface === "native" && t.method === "GET" && /\/files(\/list)?$/.test(t.path);
      if (!realFiles && !/madeup|nope|made-up/.test(t.unknownPath)) return undefined;
      if (realFiles && r.next() < 0.7) {
        const value = r.pick([
          "%00",
          "a%00b",
          "%ED%A0%80",
          "%C0%AE%C0%AE",
          "%E0%A4%A",
          ...ODD_STRINGS.map(enc),
        ]);
        return {
          label: `?path=${value.slice(0, 30)}`,
          req: { method: "GET", path: `${t.path}?path=${value}`, headers: auth(t) },
        };
      }
      const name = r.pick([
        "path",
        "state",
        "limit",
        "cols",
        "rows",
        "sandboxId",
        "recursive",
        "sha256",
        "uploadId",
        "follow",
        "pattern",
      ]);
      const value = r.next() < 0.5 ? r.pick(ODD_SEGMENTS) : enc(r.pick(ODD_STRINGS));
      // Only ids that must fail: a made-up one, or a real one with an invalid path value.
      const base = t.unknownPath;
      return {
        label: `?${name}=${value.slice(0, 30)}`,
        req: {
          method: t.method,
          path: `${base}?${name}=${value}`,
          headers: auth(t),
          ...(hasBody(t) ? { body: "{}", headers: { ...auth(t), "content-type": "application/json" } } : {}),
        },
      };
    },
    "deep path": (t, r) => {
      const tail = r.pick([
        "/..".repeat(2000),
        "/a".repeat(3000),
        "/%2e%2e".repeat(1000),
        "/..%2f".repeat(1000),
        "//".repeat(2000),
        `/${"\u00e9".repeat(1)}${"/x".repeat(1500)}`,
      ]);
      return {
        label: `path + ${tail.slice(0, 12)}… (${tail.length})`,
        req: {
          method: t.method,
          path: encodeURI(t.unknownPath + tail).replace(/%25/g, "%"),
          headers: auth(t),
        },
      };
    },
    "URL too long": (t) => ({
      label: "a 40 KiB URL",
      expect: [414, 431],
      req: { method: t.method, path: `${t.unknownPath}?q=${"u".repeat(40_000)}`, headers: auth(t) },
    }),
    "wrong content type": (t, r) => {
      if (!hasBody(t) || t.surface === "envd" || t.surface === "connect") return undefined;
      // The toolbox parses multipart for bulk-upload only; its JSON routes read an unparsed
      // multipart body as no body (a lenient default, reported), so they get the other types.
      const multipartOk = t.surface !== "toolbox" || t.path.endsWith("/bulk-upload");
      const type = r.pick([
        "application/xml",
        "text/html",
        "image/png",
        ...(multipartOk ? ["multipart/form-data; boundary=zz"] : []),
        "application/x-www-form-urlencoded",
        "application/json; charset=utf-16",
      ]);
      const body = type.startsWith("multipart")
        ? r.pick([
            "--zz\r\ngarbage\r\n--zz",
            // A file part cut off before its closing boundary.
            '--zz\r\nContent-Disposition: form-data; name="files[0].path"\r\n\r\n/tmp/cut\r\n--zz\r\nContent-Disposition: form-data; name="files[0].file"; filename="/tmp/cut"\r\n\r\nabc',
            '--zz\r\nContent-Disposition: form-data; name="files[0].file"; filename="/tmp/\u0000"\r\n\r\nabc\r\n--zz--',
          ])
        : type.includes("form")
          ? "a=1&b"
          : "<x>\u0000</x>";
      return {
        label: `content-type ${type}`,
        req: {
          method: t.method,
          path: isJsonRoute(t) ? t.path : t.unknownPath,
          headers: { ...auth(t), "content-type": type },
          body,
        },
      };
    },
    "NUL in request line": (t) => ({
      label: "raw NUL in the request line",
      raw: `${t.method} ${t.unknownPath}/a\u0000b HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.key}\r\n\r\n`,
    }),
    "NUL in header": (t, r) => ({
      label: "raw NUL in a header value",
      raw: `${t.method} ${t.path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${s.key}\r\nX-${r.pick(["Sandbox", "Trace", "E2b-Sandbox-Id"])}: a\u0000b\r\n\r\n`,
    }),
    "bad header bytes": (t, r) => ({
      label: "invalid header syntax",
      raw: `${t.method} ${t.path} HTTP/1.1\r\nHost: x\r\n${r.pick(["Bad Header: 1", "X-A:\r\n b", ":\r\n", "X-A: \u00ff\u00fe", "Content-Length: -1", "Content-Length: 1\r\nContent-Length: 2", "Transfer-Encoding: chunked\r\nContent-Length: 3"])}\r\nAuthorization: Bearer ${s.key}\r\n\r\nabc`,
    }),
    "garbage protobuf": (t, r) => {
      if (t.surface !== "connect" && t.surface !== "envd") return undefined;
      // Field 0 / wire type 7 as the first tag: no message decodes from this, whatever follows.
      const body = Buffer.concat([Buffer.from([0x07]), r.bytes(1 + r.int(200))]);
      return t.streaming
        ? {
            label: "garbage protobuf frame (streaming)",
            connectStream: true,
            req: {
              method: "POST",
              path: t.path,
              headers: { ...auth(t), "content-type": "application/connect+proto" },
              body: frame(body),
            },
          }
        : {
            label: "garbage protobuf",
            req: {
              method: "POST",
              path: t.path,
              headers: { ...auth(t), "content-type": "application/proto" },
              body,
            },
          };
    },
    "truncated protobuf": (t, r) => {
      if (t.surface !== "connect" && t.surface !== "envd") return undefined;
      // Field 1, length-delimited, declares 40 bytes and carries fewer.
      const body = Buffer.concat([Buffer.from([0x0a, 0x28]), r.bytes(1 + r.int(30))]);
      return t.streaming
        ? {
            label: "truncated frame (streaming)",
            connectStream: true,
            req: {
              method: "POST",
              path: t.path,
              headers: { ...auth(t), "content-type": "application/connect+proto" },
              body: frame(body).subarray(0, 5 + r.int(body.length)),
            },
          }
        : {
            label: "truncated protobuf",
            req: {
              method: "POST",
              path: t.path,
              headers: { ...auth(t), "content-type": "application/proto" },
              body,
            },
          };
    },
    "Connect wrong content type": (t, r) =>
      t.surface === "connect" || t.surface === "envd"
        ? {
            label: "Connect with text/plain",
            req: {
              method: "POST",
              path: t.path,
              headers: {
                ...auth(t),
                "content-type": r.pick(["text/plain", "application/xml", "application/grpc-web+xml"]),
              },
              body: "{}",
            },
          }
        : undefined,
    "NUL in a field": (t, r) => {
      const nul = r.pick(["a\u0000b", "\u0000", "x".repeat(50) + "\u0000"]);
      const props = t.schema?.properties;
      if (props !== undefined && isJsonRoute(t)) {
        const strings = Object.entries(props).filter(([, p]) => p.type === "string" || p.type === "object");
        if (strings.length === 0) return undefined;
        const [name, p] = r.pick(strings);
        const value = p.type === "string" ? nul : r.pick([{ k: nul }, { [nul]: "v" }]);
        return { label: `NUL in ${name}`, req: json(t, JSON.stringify({ [name]: value })) };
      }
      if (t.method === "POST" && /^\/(v2\/)?sandboxes$/.test(t.path)) {
        const body = r.pick([
          { templateID: `ba${nul}se` },
          { templateID: "base", metadata: { k: nul } },
          { templateID: "base", envVars: { [`A${nul}`]: "x" } },
        ]);
        return { label: `NUL in ${Object.keys(body).at(-1)}`, req: json(t, JSON.stringify(body)) };
      }
      if (t.method === "POST" && t.path === "/api/sandbox") {
        const body = r.pick([{ name: nul }, { labels: { k: nul } }, { env: { A: nul } }, { snapshot: nul }]);
        return { label: `NUL in ${Object.keys(body)[0]}`, req: json(t, JSON.stringify(body)) };
      }
      if (t.surface === "toolbox" && t.method === "GET" && /\/files(\/info|\/find|\/search)?$/.test(t.path))
        return {
          label: "NUL in ?path",
          req: { method: "GET", path: `${t.path}?path=a%00b&pattern=%00`, headers: auth(t) },
        };
      return undefined;
    },
    "empty oneof": (t) =>
      // A process selector that names no process (neither pid nor tag) is the caller's mistake.
      t.surface === "envd" && !t.streaming && t.input?.fields.some((f) => f.jsonName === "process")
        ? { label: "process selector without pid or tag", req: json(t, '{"process":{}}') }
        : undefined,
    "envd target": (t, r) =>
      t.surface === "envd"
        ? {
            label: "odd E2b-Sandbox-Id / port",
            req: {
              method: "POST",
              path: t.path,
              headers: {
                "content-type": "application/json",
                "x-access-token": ids.envdToken,
                ...r.pick([
                  { "e2b-sandbox-id": "UPPER" },
                  { "e2b-sandbox-id": "x".repeat(300) },
                  { "e2b-sandbox-id": "a-b" },
                  { "e2b-sandbox-id": ids.e2b, "e2b-sandbox-port": "99999" },
                  { "e2b-sandbox-id": ids.e2b, "e2b-sandbox-port": "-1" },
                  { "e2b-sandbox-id": ids.e2b, "e2b-sandbox-port": "abc" },
                  { "e2b-sandbox-id": "%00" },
                ]),
              },
              body: "{}",
            },
          }
        : undefined,
  };

  /** A JSON value of the wrong type for a Connect field (undefined: any JSON fits it). */
  function wrongJson(f: DescField, r: Rng): unknown {
    switch (f.fieldKind) {
      case "scalar":
        if (f.scalar === ScalarType.STRING) return r.pick([42, true, {}, []]);
        if (f.scalar === ScalarType.BOOL) return r.pick(["yes", {}, [], 2]);
        if (f.scalar === ScalarType.BYTES) return r.pick(["!!not base64!!", 42, {}]);
        return r.pick(["abc", {}, [], true, 1.5, "1e999"]);
      case "enum":
        return r.pick(["NOT_A_VALUE", {}, 1.5, true]);
      case "message":
        return f.message.typeName.startsWith("google.protobuf.") && /Value|Any/.test(f.message.typeName)
          ? undefined
          : r.pick([42, "x", [], true]);
      case "list":
        return r.pick(["x", 42, {}]);
      case "map":
        return r.pick([42, "x", [], { k: {} }]);
    }
  }

  function frame(payload: Buffer): Buffer {
    const f = Buffer.alloc(5 + payload.length);
    f.writeUInt32BE(payload.length, 1);
    payload.copy(f, 5);
    return f;
  }

  /** Why an answer fails the case, or undefined when it held. */
  function judge(c: Case, status: number, body: Buffer): string | undefined {
    const text = body.toString("utf8");
    const l = leak(text);
    if (l !== undefined) return l;
    // envd answers a process selector naming no process with `unimplemented` (501), exactly as
    // E2B's envd does (wire compatibility); the SDK never sends one. Counted as held, reported.
    if (status === 501 && /invalid input type for process selector/.test(text)) return undefined;
    if (status >= 500) return `answered ${status}: ${text.slice(0, 200)}`;
    if (c.connectStream && status === 200) {
      // Connect streaming's documented error: one end-of-stream frame (flag 0x02) holding `error`.
      if (body.length < 5 || (body[0]! & 0x02) === 0)
        return `stream without an end frame: ${text.slice(0, 120)}`;
      const end = body.subarray(5, 5 + body.readUInt32BE(1)).toString("utf8");
      if (!/"error"\s*:/.test(end)) return `end frame without an error: ${end.slice(0, 120)}`;
      // The stream's equivalent of a 5xx.
      return /"code"\s*:\s*"(internal|unknown)"/.test(end)
        ? `stream ended with ${end.slice(0, 160)}`
        : undefined;
    }
    if (status < 400) return `accepted with ${status}: ${text.slice(0, 200)}`;
    if (c.expect !== undefined && !c.expect.includes(status))
      return `answered ${status}, not ${c.expect.join("/")}: ${text.slice(0, 160)}`;
    if (text.trim() === "") return undefined;
    try {
      JSON.parse(text);
    } catch {
      return `non-JSON error body: ${text.slice(0, 120)}`;
    }
    return undefined;
  }

  /** Cases the server answered by closing the connection (counted as held; reported). */
  let cuts = 0;

  async function run(t: Target | undefined, familyName: string, c: Case): Promise<void> {
    const a = area(`fuzz: ${t?.surface ?? "raw"}`);
    const where = `${c.req?.method ?? "RAW"} ${(c.req?.path ?? t?.path ?? "").slice(0, 80)} [${familyName}: ${c.label}]`;
    try {
      if (c.raw !== undefined) {
        const text = await rawBytes(s.url, c.raw, CASE_TIMEOUT_MS);
        const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
        const headEnd = text.indexOf("\r\n\r\n");
        // A closed connection without an answer is a refusal too (the parser gave up on it).
        if (m === null) {
          record(a, text === "" ? undefined : `${where}: unparseable answer: ${text.slice(0, 80)}`);
          if (text === "") cuts++;
          return;
        }
        const why = judge(
          c,
          Number(m[1]),
          Buffer.from(headEnd >= 0 ? text.slice(headEnd + 4) : "", "latin1"),
        );
        record(a, why === undefined ? undefined : `${where}: ${why}`);
        return;
      }
      const ans: RawAnswer = await rawRequest(s.url, {
        ...(c.req as RawRequest),
        timeoutMs: CASE_TIMEOUT_MS,
      });
      const why = judge(c, ans.status, ans.body);
      record(a, why === undefined ? undefined : `${where}: ${why}`);
    } catch (err) {
      // A connection the server cut after a 413/431 can surface as a reset: look for the answer.
      const msg = (err as Error).message;
      const cut =
        /ECONNRESET|EPIPE|socket hang up/.test(msg) &&
        (familyName === "huge body" ||
          familyName.startsWith("huge") ||
          familyName === "URL too long" ||
          familyName === "many headers");
      if (cut) cuts++;
      record(a, cut ? undefined : `${where}: ${msg}`);
    }
  }

  test(`sweep every route with every family, then ${EXTRA_CASES} seeded cases (seed ${SEED})`, async (t) => {
    t.diagnostic(
      `fuzz seed ${SEED} (DNAH_FUZZ_SEED), extra cases ${EXTRA_CASES} (DNAH_FUZZ_CASES), ${targets.length} targets`,
    );
    const names = Object.keys(families);
    for (const target of targets)
      for (const name of names) {
        const c = families[name]!(target, rng);
        if (c !== undefined) await run(target, name, c);
      }
    for (let i = 0; i < EXTRA_CASES; i++) {
      const target = rng.pick(targets);
      const name = rng.pick(names);
      const c = families[name]!(target, rng);
      if (c !== undefined) await run(target, name, c);
    }
    let failures = 0;
    for (const a of areas.values()) {
      for (const line of summaryLines(a, 10)) t.diagnostic(line);
      failures += a.failures.length;
    }
    const all = [...areas.values()];
    t.diagnostic(
      `hardening | fuzz: total | tried ${all.reduce((n, a) => n + a.tried, 0)} | held ${all.reduce((n, a) => n + a.held, 0)} | failures ${failures}`,
    );
    t.diagnostic(
      `fuzz: ${cuts} cases were answered by the server closing the connection (oversized or unparseable requests)`,
    );
    if (process.env.DNAH_FUZZ_PRINT_ALL) for (const a of all) for (const f of a.failures) t.diagnostic(f);
    assert.equal(
      failures,
      0,
      all
        .flatMap((a) => a.failures)
        .slice(0, 30)
        .join("\n"),
    );
  });

  test("slowloris: a header sent a byte per 100 ms blocks no one", async (t) => {
    const server = s.gatewayApp.server;
    const sock = connect(Number(new URL(s.url).port), "127.0.0.1");
    await new Promise<void>((resolve) => sock.once("connect", () => resolve()));
    let closed = false;
    sock.on("close", () => {
      closed = true;
    });
    sock.on("error", () => undefined);
    const slow = `GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ${"s".repeat(12)}`;
    let served = 0;
    for (let i = 0; i < slow.length && !closed; i++) {
      sock.write(slow[i]!);
      await new Promise((r) => setTimeout(r, 100));
      // Meanwhile, others are served: every 10 bytes, a full request on another connection.
      if (i % 10 === 9) {
        const h = await rawRequest(s.url, { method: "GET", path: "/health", timeoutMs: CASE_TIMEOUT_MS });
        assert.equal(h.status, 200);
        served++;
      }
    }
    sock.destroy();
    t.diagnostic(
      `slowloris: ${served} requests served while one connection dribbled its header; the server cuts headers after headersTimeout=${server.headersTimeout} ms (checked every connectionsCheckingInterval), requestTimeout=${server.requestTimeout} ms`,
    );
    record(area("fuzz: slowloris"), served > 0 ? undefined : "no request served during the slow header");
    for (const line of summaryLines(area("fuzz: slowloris"))) t.diagnostic(line);
    // Node's HTTP server bounds header time; it must not be switched off.
    assert.ok(
      server.headersTimeout > 0 && server.headersTimeout <= 120_000,
      `headersTimeout ${server.headersTimeout}`,
    );
  });

  test("every service still answers afterwards", async () => {
    assert.equal((await fetch(`${s.url}/health`)).status, 200);
    const r = await s.json<{ stdout: string }>(`/v1/sandboxes/${ids.witness}/exec`, {
      method: "POST",
      body: '{"command":"echo alive"}',
    });
    assert.equal(r.body.stdout, "alive\n");
    // The fuzzed sandboxes too, on each surface.
    const n = await s.json<{ stdout: string }>(`/v1/sandboxes/${ids.native}/exec`, {
      method: "POST",
      body: '{"command":"echo alive"}',
    });
    assert.equal(n.status, 200, JSON.stringify(n.body));
    const envd = await rawRequest(s.url, {
      method: "POST",
      path: "/process.Process/List",
      headers: {
        "e2b-sandbox-id": ids.e2b,
        "x-access-token": ids.envdToken,
        "content-type": "application/json",
      },
      body: "{}",
    });
    assert.equal(envd.status, 200, envd.body.toString());
    const tb = await s.api(`/toolbox/${ids.daytona}/version`);
    assert.equal(tb.status, 200);
    for (const u of [s.schedulerUrl, s.vmmUrl, s.snapshotUrl]) {
      const res = await fetch(`${u}/`);
      assert.ok(res.status < 500, `${u} answered ${res.status}`);
    }
  });
});
