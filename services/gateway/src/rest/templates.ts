import { createHash } from "node:crypto";
import { TemplateBuildStatus } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { FastifyInstance } from "fastify";
import { GatewayError, InvalidArgumentError, PayloadTooLargeError, toErrorResponse } from "../errors.js";
import { buildTemplate, type TemplateBuildInput } from "../rpc/build-template.js";
import { cancelTemplateBuild } from "../rpc/cancel-template-build.js";
import { deleteTemplate } from "../rpc/delete-template.js";
import { getTemplate } from "../rpc/get-template.js";
import { buildLogPages, getTemplateBuild } from "../rpc/get-template-build.js";
import { hasTemplateFiles } from "../rpc/has-template-files.js";
import { listTemplates } from "../rpc/list-templates.js";
import { putTemplateFiles } from "../rpc/put-template-files.js";
import { parseDockerfile } from "../templates/dockerfile.js";
import { filesHash, type Start, startFromJson, stepsFromJson } from "../templates/steps.js";
import { type Json, objectBody, optString, optUint32, queryParam } from "./body.js";
import { abortOnDisconnect, type RestOptions } from "./common.js";
import { errorAnswers, jsonAnswer, jsonBody, listOf, noContent, objectOf, ref, str } from "./schemas.js";
import { START } from "./template-schemas.js";
import {
  BUILD_STATUS_NAMES,
  buildJson,
  logJson,
  logText,
  startLogText,
  templateJson,
} from "./template-views.js";

/** How often a followed log asks the scheduler for new lines while the build runs. */

const BODY_FIELDS = [
  "name",
  "aliases",
  "public",
  "from",
  "steps",
  "dockerfile",
  "contextSha256",
  "start",
  "cpuCount",
  "memoryMib",
  "force",
] as const;

const templateParams = {
  type: "object",
  required: ["id"],
  properties: { id: str("A template's name or alias.") },
};
const buildParams = {
  type: "object",
  required: ["id", "buildId"],
  properties: { id: str("A template's name or alias."), buildId: str("A build's id (bld_…).") },
};
const filesParams = {
  type: "object",
  required: ["sha256"],
  properties: { sha256: str("The sha256 (hex) of the context tar's bytes.") },
};

/**
 * Templates, native REST. A template is built from a dnah template (`from`, or a Dockerfile's
 * FROM) and steps, on a host, in the background: POST answers 202 with the build, whose state
 * and log are read by id (or followed as text). Context tars for COPY are uploaded first,
 * named by their sha256. The caller's API key owns what it builds; private templates are seen
 * by their owner only.
 *
 *   POST   /v1/templates/files/{sha256}      body: the tar (201; 413 over the limit)
 *   HEAD|GET /v1/templates/files/{sha256}    200 when stored, else 404
 *   POST   /v1/templates                     {name, aliases?, public?, from?, steps?, dockerfile?,
 *                                             contextSha256?, start?, cpuCount?, memoryMib?, force?}
 *   GET    /v1/templates                     public, built-in and the caller's own
 *   GET    /v1/templates/{id}                by name or alias
 *   DELETE /v1/templates/{id}
 *   GET    /v1/templates/{id}/builds/{buildId}?logsOffset=N      the build and its log lines
 *   GET    /v1/templates/{id}/builds/{buildId}/logs?follow=true  text/plain, to the build's end
 *   POST   /v1/templates/{id}/builds/{buildId}/cancel
 */
export async function templateRoutes(
  app: FastifyInstance,
  opts: RestOptions & { templateContextMaxBytes: number },
) {
  const { deps } = opts;
  const tags = ["templates"];

  await app.register(async (files) => {
    // The tar is read here, as it arrives, hashed on the way.
    files.removeAllContentTypeParsers();
    files.addContentTypeParser("*", (_req, _payload, done) => done(null, undefined));
    files.post<{ Params: { sha256: string } }>(
      "/templates/files/:sha256",
      {
        schema: {
          tags,
          operationId: "uploadTemplateFiles",
          summary: "Upload a build context tar (plain or gzip), named by its sha256",
          params: filesParams,
          body: {
            description: "The tar's bytes.",
            content: {
              "application/x-tar": { schema: { type: "string", contentMediaType: "application/x-tar" } },
            },
          },
          response: {
            201: jsonAnswer("Stored (or stored already).", {
              type: "object",
              properties: { sha256: str(), sizeBytes: { type: "integer" } },
            }),
            ...errorAnswers(400, 413),
          },
        },
      },
      async (req, reply) => {
        const sha256 = filesHash(req.params.sha256, "sha256");
        const max = opts.templateContextMaxBytes;
        // Over the limit, the rest of the body is read and dropped, so that the client hears
        // the 413 rather than a connection reset mid-upload (the body idle timeout still cuts
        // a stalled one).
        let over = Number(req.headers["content-length"] ?? 0) > max;
        const hash = createHash("sha256");
        const chunks: Buffer[] = [];
        let size = 0;
        for await (const chunk of req.raw as AsyncIterable<Buffer>) {
          size += chunk.length;
          over ||= size > max;
          if (over) continue;
          hash.update(chunk);
          chunks.push(chunk);
        }
        if (over) throw new PayloadTooLargeError(`the build context is larger than ${max} bytes`);
        const actual = hash.digest("hex");
        if (actual !== sha256)
          throw new InvalidArgumentError(`sha256 mismatch: the ${size} bytes sent hash to ${actual}`);
        await putTemplateFiles(deps, sha256, Buffer.concat(chunks, size), {
          owner: req.apiKeyId,
          signal: abortOnDisconnect(reply),
        });
        return reply.code(201).send({ sha256, sizeBytes: size });
      },
    );
  });

  app.get<{ Params: { sha256: string } }>(
    "/templates/files/:sha256",
    {
      schema: {
        tags,
        operationId: "getTemplateFiles",
        summary: "Whether a build context tar is stored (HEAD works too)",
        params: filesParams,
        response: {
          200: jsonAnswer("Stored.", {
            type: "object",
            properties: { sha256: str(), present: { type: "boolean" } },
          }),
          ...errorAnswers(400, 404),
        },
      },
    },
    async (req) => {
      const sha256 = filesHash(req.params.sha256, "sha256");
      if (!(await hasTemplateFiles(deps, sha256, { owner: req.apiKeyId })))
        throw new GatewayError("not_found", `no build context with sha256 ${sha256}`);
      return { sha256, present: true };
    },
  );

  app.post(
    "/templates",
    {
      bodyLimit: opts.jsonBodyLimitBytes,
      schema: {
        tags,
        operationId: "buildTemplate",
        summary: "Create or rebuild a template (from a template and steps, or a Dockerfile)",
        description:
          "Give `from` and `steps`, or a `dockerfile` (FROM a dnah template; RUN, COPY, ENV, WORKDIR, USER, CMD/ENTRYPOINT, ARG, HEALTHCHECK) with `contextSha256` for its COPY. A rebuild reuses every cached step up to the first changed one. FROM a registry image is a 400.",
        body: jsonBody(
          {
            name: str("1-63 of a-z, 0-9, '.', '_', '-': the template's id."),
            aliases: { type: "array", items: { type: "string" }, description: "Other names for it." },
            public: {
              type: "boolean",
              description: "Every API key may start sandboxes from it (default false).",
            },
            from: str("The dnah template it starts from (default base)."),
            steps: { type: "array", items: ref("TemplateStep") },
            dockerfile: str("A Dockerfile (the subset above), instead of from/steps."),
            contextSha256: str("The context tar the Dockerfile's COPY reads from."),
            start: START,
            cpuCount: { type: "integer", description: "Default: the template's current, or its base's." },
            memoryMib: { type: "integer", description: "Default: the template's current, or its base's." },
            force: { type: "boolean", description: "Ignore every cached layer." },
          },
          ["name"],
        ),
        response: {
          202: jsonAnswer("The build started.", {
            type: "object",
            properties: {
              template: ref("Template"),
              build: ref("TemplateBuild"),
              warnings: {
                type: "array",
                items: { type: "string" },
                description: "Dockerfile lines ignored.",
              },
            },
          }),
          ...errorAnswers(400, 403, 404, 409, 415),
        },
      },
    },
    async (req, reply) => {
      const body = objectBody(req.body, BODY_FIELDS);
      const { input, warnings } = buildInput(body);
      const res = await buildTemplate(deps, input, { owner: req.apiKeyId });
      return reply.code(202).send({
        template: templateJson(res.template!, req.apiKeyId),
        build: buildJson(res.build!),
        ...(warnings.length > 0 ? { warnings } : {}),
      });
    },
  );

  app.get(
    "/templates",
    {
      schema: {
        tags,
        operationId: "listTemplates",
        summary: "List the templates this key sees (built-in, public, its own)",
        response: {
          200: jsonAnswer("The templates.", listOf("templates", "Template")),
          ...errorAnswers(400),
        },
      },
    },
    async (req) => {
      onlyQuery(req.query, []);
      const templates = await listTemplates(deps, { owner: req.apiKeyId });
      return { templates: templates.map((t) => templateJson(t, req.apiKeyId)) };
    },
  );

  app.get<{ Params: { id: string } }>(
    "/templates/:id",
    {
      schema: {
        tags,
        operationId: "getTemplate",
        summary: "Get a template by name or alias",
        params: templateParams,
        response: {
          200: jsonAnswer("The template.", objectOf("template", ref("Template"))),
          ...errorAnswers(404),
        },
      },
    },
    async (req) => {
      const t = await getTemplate(deps, req.params.id, { owner: req.apiKeyId });
      return { template: templateJson(t, req.apiKeyId) };
    },
  );

  app.delete<{ Params: { id: string } }>(
    "/templates/:id",
    {
      schema: {
        tags,
        operationId: "deleteTemplate",
        summary: "Delete one of this key's templates (its sandboxes keep running)",
        params: templateParams,
        response: { ...noContent, ...errorAnswers(403, 404) },
      },
    },
    async (req, reply) => {
      await deleteTemplate(deps, req.params.id, { owner: req.apiKeyId });
      return reply.code(204).send();
    },
  );

  app.get<{ Params: { id: string; buildId: string } }>(
    "/templates/:id/builds/:buildId",
    {
      schema: {
        tags,
        operationId: "getTemplateBuild",
        summary: "A build's state and its log lines from logsOffset on (at most 1000)",
        params: buildParams,
        querystring: {
          type: "object",
          properties: {
            logsOffset: { type: "integer", minimum: 0, description: "First log line (default 0)." },
          },
        },
        response: {
          200: jsonAnswer("The build.", {
            type: "object",
            properties: {
              build: ref("TemplateBuild"),
              logs: { type: "array", items: ref("TemplateBuildLog") },
              nextLogsOffset: { type: "integer", description: "Where the next call starts." },
            },
          }),
          ...errorAnswers(400, 404),
        },
      },
    },
    async (req) => {
      onlyQuery(req.query, ["logsOffset"]);
      const res = await getTemplateBuild(
        deps,
        {
          templateId: req.params.id,
          buildId: req.params.buildId,
          logsOffset: uintQuery(req.query, "logsOffset"),
        },
        { owner: req.apiKeyId },
      );
      return {
        build: buildJson(res.build!),
        logs: res.logs.map(logJson),
        nextLogsOffset: res.nextLogsOffset,
      };
    },
  );

  app.get<{ Params: { id: string; buildId: string } }>(
    "/templates/:id/builds/:buildId/logs",
    {
      schema: {
        tags,
        operationId: "templateBuildLogs",
        summary: "A build's log as text; follow=true streams it until the build ends",
        params: buildParams,
        querystring: {
          type: "object",
          properties: {
            follow: { type: "string", enum: ["true", "false"], description: "Stream until the build ends." },
            offset: { type: "integer", minimum: 0, description: "First log line (default 0)." },
          },
        },
        response: {
          200: {
            description:
              "One line per log line (warnings and errors prefixed); when followed, a last `dnah: build <id> <status>` line.",
            content: { "text/plain": { schema: { type: "string" } } },
          },
          ...errorAnswers(400, 404),
        },
      },
    },
    async (req, reply) => {
      onlyQuery(req.query, ["follow", "offset"]);
      const follow = boolQuery(req.query, "follow");
      const signal = abortOnDisconnect(reply);
      const call = { owner: req.apiKeyId, signal };
      const which = { templateId: req.params.id, buildId: req.params.buildId };
      // The first page before the answer starts: an unknown build is still a plain 404.
      const pages = buildLogPages(deps, which, uintQuery(req.query, "offset"), {
        ...call,
        follow,
        running: (b) => b?.status === TemplateBuildStatus.BUILDING,
        signal,
      });
      let step = await pages.next();
      const res = startLogText(reply, req.requestId);
      try {
        for (; !step.done; step = await pages.next()) for (const l of step.value.logs) res.write(logText(l));
        if (follow) {
          const b = step.value.build!;
          res.write(
            `dnah: build ${b.buildId} ${BUILD_STATUS_NAMES[b.status]}${b.reason ? `: ${b.reason}` : ""}\n`,
          );
        }
      } catch (err) {
        if (!signal.aborted || signal.reason instanceof GatewayError) {
          const e = toErrorResponse(signal.aborted ? signal.reason : err, {
            logger: deps.logger,
            requestId: req.requestId,
          });
          res.write(`dnah: error: ${e.code}: ${e.message}\n`);
        }
      }
      res.end();
    },
  );

  app.post<{ Params: { id: string; buildId: string } }>(
    "/templates/:id/builds/:buildId/cancel",
    {
      schema: {
        tags,
        operationId: "cancelTemplateBuild",
        summary: "Cancel a running build (the template keeps its last good build)",
        params: buildParams,
        response: {
          200: jsonAnswer("The build, cancelled.", objectOf("build", ref("TemplateBuild"))),
          ...errorAnswers(404, 409),
        },
      },
    },
    async (req) => {
      const build = await cancelTemplateBuild(
        deps,
        { templateId: req.params.id, buildId: req.params.buildId },
        { owner: req.apiKeyId },
      );
      return { build: buildJson(build) };
    },
  );
}

/** The POST body as a build: native `from` + `steps`, or a Dockerfile. */
export function buildInput(body: Json): { input: TemplateBuildInput; warnings: string[] } {
  const name = optString(body, "name");
  if (name === undefined || name === "") throw new InvalidArgumentError("'name' is required");
  const dockerfile = optString(body, "dockerfile");
  const contextSha256 =
    body.contextSha256 === undefined ? undefined : filesHash(body.contextSha256, "contextSha256");
  let from: string;
  let steps: TemplateBuildInput["steps"];
  let start: Start | undefined;
  let warnings: string[] = [];
  if (dockerfile !== undefined) {
    if (body.from !== undefined || body.steps !== undefined)
      throw new InvalidArgumentError("give either 'dockerfile' or 'from' and 'steps', not both");
    const parsed = parseDockerfile(dockerfile, contextSha256);
    ({ from, steps, warnings } = parsed);
    start = mergeStart(parsed.start, body.start);
  } else {
    if (contextSha256 !== undefined)
      throw new InvalidArgumentError(
        "'contextSha256' goes with a 'dockerfile'; copy steps name their own filesHash",
      );
    from = optString(body, "from") ?? "base";
    steps = stepsFromJson(body.steps);
    start = startFromJson(body.start);
  }
  return {
    input: {
      name,
      aliases: stringArray(body, "aliases"),
      public: optBool(body, "public") ?? false,
      from,
      steps,
      start,
      cpuCount: optUint32(body, "cpuCount") ?? 0,
      memoryMib: optUint32(body, "memoryMib") ?? 0,
      force: optBool(body, "force") ?? false,
    },
    warnings,
  };
}

/**
 * A Dockerfile's CMD/ENTRYPOINT with the body's `start`: the body may add readiness
 * (readyPort, readyCommand) to it, or give the command when the Dockerfile has none.
 */
function mergeStart(fromFile: Start | undefined, raw: unknown): Start | undefined {
  if (raw === undefined) return fromFile;
  if (fromFile === undefined || typeof raw !== "object" || raw === null || Array.isArray(raw))
    return startFromJson(raw);
  if ((raw as Json).command !== undefined)
    throw new InvalidArgumentError(
      "the start command comes from the Dockerfile's CMD/ENTRYPOINT or 'start', not both",
    );
  const readiness = startFromJson({ ...raw, command: fromFile.command });
  return {
    command: fromFile.command,
    readyPort: readiness!.readyPort,
    readyCommand: readiness!.readyCommand || fromFile.readyCommand,
  };
}

function optBool(o: Json, key: string): boolean | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw new InvalidArgumentError(`'${key}' must be true or false`);
  return v;
}

function stringArray(o: Json, key: string): string[] {
  const v = o[key];
  if (v === undefined) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string"))
    throw new InvalidArgumentError(`'${key}' must be an array of strings`);
  return v as string[];
}

function onlyQuery(query: unknown, allowed: readonly string[]): void {
  for (const k of Object.keys((query ?? {}) as Record<string, unknown>))
    if (!allowed.includes(k))
      throw new InvalidArgumentError(
        `unknown query parameter '${k.slice(0, 64)}'${allowed.length > 0 ? `; use ${allowed.join(", ")}` : ""}`,
      );
}

function uintQuery(query: unknown, key: string): number {
  const v = queryParam(query, key);
  if (v === undefined) return 0;
  if (!/^\d{1,9}$/.test(v))
    throw new InvalidArgumentError(`query parameter '${key}' must be a non-negative integer`);
  return Number(v);
}

function boolQuery(query: unknown, key: string): boolean {
  const v = queryParam(query, key);
  if (v === undefined || v === "false" || v === "0") return false;
  if (v === "true" || v === "1" || v === "") return true;
  throw new InvalidArgumentError(`query parameter '${key}' must be true or false`);
}
