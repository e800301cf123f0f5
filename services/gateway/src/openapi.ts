import swagger from "@fastify/swagger";
import type { FastifyInstance } from "fastify";
import { COMPONENT_SCHEMAS } from "./rest/schemas.js";
import { TEMPLATE_SCHEMAS } from "./rest/template-schemas.js";

/** Where the committed copy lives (test/openapi.test.ts keeps it equal to the live one). */
export const OPENAPI_FILE = "docs/openapi.json";
const V1 = "/v1/";
/** The document's version: the gateway package's. */
const API_VERSION = "0.1.0";

const DESCRIPTION = [
  "The native REST API of dnah, a self-hostable sandbox platform (one microVM per sandbox).",
  "Generated from the gateway's route schemas. Every `/v1` route is here. The E2B",
  "(`/sandboxes`, `/v2/sandboxes`, envd traffic) and Daytona (`/api/…`, `/toolbox/…`)",
  "compatibility routes, the Connect service `dnah.sandbox.v1.SandboxService` and `/mcp` are",
  "not: they follow those SDKs' and protocols' own documents. Bodies are strict: types are",
  "never coerced and unknown fields are a 400. Errors are `{code, message}`.",
].join(" ");

/**
 * Registers @fastify/swagger (OpenAPI 3.1.0) on the root app. Call before the `/v1` routes:
 * it records routes as they are added. Only `/v1` routes are documented; the shared shapes
 * become `components.schemas` under their `$id`.
 */
export async function registerOpenApi(app: FastifyInstance): Promise<void> {
  for (const s of [...COMPONENT_SCHEMAS, ...TEMPLATE_SCHEMAS]) app.addSchema(s);
  await app.register(swagger, {
    openapi: {
      openapi: "3.1.0",
      info: { title: "dnah REST API", version: API_VERSION, description: DESCRIPTION },
      components: {
        securitySchemes: {
          apiKey: {
            type: "http",
            scheme: "bearer",
            description: "A dnah API key (`X-API-Key: <key>` is accepted too).",
          },
        },
      },
      security: [{ apiKey: [] }],
      tags: [
        {
          name: "sandboxes",
          description: "Create, list, pause, resume, archive, delete; lifecycle and events.",
        },
        { name: "exec", description: "Run commands, buffered or streamed as NDJSON." },
        { name: "files", description: "Read, write, list and watch files in the sandbox." },
        { name: "share", description: "Bulk transfer to the sandbox's share folder (/mnt/dnah-share)." },
        { name: "snapshots", description: "Signed snapshots, forks and restores." },
        {
          name: "templates",
          description: "Build your own templates (steps or a Dockerfile subset), cached per step.",
        },
      ],
    },
    refResolver: { buildLocalReference: (json, _baseUri, _fragment, i) => String(json.$id ?? `def-${i}`) },
    transform: ({ schema, url }) => {
      if (!url.startsWith(V1)) return { schema: { ...schema, hide: true }, url };
      // `/share/*`: the wildcard becomes the path parameter `path`.
      if (!url.endsWith("/*")) return { schema, url };
      const params = schema?.params as { properties?: Record<string, unknown> } | undefined;
      const { "*": rest, ...others } = params?.properties ?? {};
      return {
        schema: {
          ...schema,
          params: {
            ...params,
            required: [...Object.keys(others), "path"],
            properties: { ...others, path: rest ?? { type: "string" } },
          },
        },
        url: `${url.slice(0, -1)}:path`,
      };
    },
  });
}

/**
 * In the `/v1` scope, route schemas document and never act: the no-op validator leaves
 * bodies, queries and params as they came (Fastify's Ajv would coerce "5" to 5 and strip
 * unknown fields, changing what body.ts refuses and its messages), and the plain serializer
 * sends answers as the handlers built them (a response schema would drop unlisted fields).
 */
export function docsOnlySchemas(scope: FastifyInstance): void {
  scope.setValidatorCompiler(() => () => true);
  scope.setSerializerCompiler(() => (data) => JSON.stringify(data));
}

/** GET /openapi.json: the document of the running app, built once from its routes. */
export async function openApiRoutes(app: FastifyInstance): Promise<void> {
  app.get("/openapi.json", { schema: { hide: true } }, async (_req, reply) =>
    reply.type("application/json").send(app.swagger()),
  );
}
