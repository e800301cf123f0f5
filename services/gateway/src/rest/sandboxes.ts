import { create } from "@bufbuild/protobuf";
import {
  CreateSandboxRequestSchema,
  DeleteSandboxRequestSchema,
  GetSandboxRequestSchema,
  ListSandboxesRequestSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { InvalidArgumentError } from "../errors.js";
import { createSandbox } from "../rpc/create-sandbox.js";
import { deleteSandbox } from "../rpc/delete-sandbox.js";
import { getSandbox } from "../rpc/get-sandbox.js";
import { listSandboxes } from "../rpc/list-sandboxes.js";
import { objectBody, optString, optStringMap } from "./body.js";
import type { RestOptions } from "./common.js";
import { sandboxJson } from "./views.js";

const METADATA_QUERY_PREFIX = "metadata.";

/** POST/GET /v1/sandboxes, GET/DELETE /v1/sandboxes/:id */
export async function sandboxRoutes(app: FastifyInstance, opts: RestOptions): Promise<void> {
  const { deps } = opts;

  app.post("/sandboxes", { bodyLimit: opts.jsonBodyLimitBytes }, async (req, reply) => {
    const body = objectBody(req.body, ["templateId", "metadata", "envVars"]);
    const res = await createSandbox(
      deps,
      create(CreateSandboxRequestSchema, {
        templateId: optString(body, "templateId") ?? "",
        metadata: optStringMap(body, "metadata") ?? {},
        envVars: optStringMap(body, "envVars") ?? {},
      }),
    );
    return reply.code(201).send(sandboxJson(res.sandbox!));
  });

  app.get("/sandboxes", async (req) => {
    const metadata: Record<string, string> = {};
    for (const [k, v] of Object.entries((req.query ?? {}) as Record<string, unknown>)) {
      if (!k.startsWith(METADATA_QUERY_PREFIX) || k.length === METADATA_QUERY_PREFIX.length) {
        throw new InvalidArgumentError(
          `unknown query parameter '${k.slice(0, 64)}'; filter with metadata.<key>=<value>`,
        );
      }
      if (typeof v !== "string")
        throw new InvalidArgumentError(`query parameter '${k.slice(0, 64)}' must be given once`);
      metadata[k.slice(METADATA_QUERY_PREFIX.length)] = v;
    }
    const res = await listSandboxes(deps, create(ListSandboxesRequestSchema, { metadata }));
    return { sandboxes: res.sandboxes.map(sandboxJson) };
  });

  app.get<{ Params: { id: string } }>("/sandboxes/:id", async (req) => {
    const res = await getSandbox(deps, create(GetSandboxRequestSchema, { sandboxId: req.params.id }));
    return sandboxJson(res.sandbox!);
  });

  app.delete<{ Params: { id: string } }>("/sandboxes/:id", async (req, reply) => {
    await deleteSandbox(deps, create(DeleteSandboxRequestSchema, { sandboxId: req.params.id }));
    return reply.code(204).send();
  });
}
