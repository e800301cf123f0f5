import { type Template, TemplateBuildStatus } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { GatewayError, InvalidArgumentError, TemplateNotFoundError } from "../../../errors.js";
import type { Json } from "../../../rest/body.js";
import { buildTemplate, reserveTemplateBuild } from "../../../rpc/build-template.js";
import { getTemplate } from "../../../rpc/get-template.js";
import { getTemplateBuild } from "../../../rpc/get-template-build.js";
import { templateFilesByAlias } from "../../../rpc/has-template-files.js";
import { e2bBody, optInt32 } from "../body.js";
import type { E2bContext } from "../context.js";
import {
  assignE2bTags,
  e2bBuild,
  e2bTags,
  recordE2bBuild,
  removeE2bTags,
  setE2bStepOrigins,
} from "../template-db.js";
import {
  buildTags,
  DEFAULT_TAG,
  failedStep,
  filesHashesOf,
  parseBuildStart,
  parseTemplateName,
  TAG_RE,
  translateSteps,
} from "../template-steps.js";

/** Log lines per status answer (E2B's infra sends at most 100). */
const STATUS_STATES: Partial<Record<TemplateBuildStatus, string>> = {
  [TemplateBuildStatus.WAITING]: "waiting",
  [TemplateBuildStatus.BUILDING]: "building",
  [TemplateBuildStatus.READY]: "ready",
  [TemplateBuildStatus.ERROR]: "error",
  [TemplateBuildStatus.CANCELLED]: "error",
};

/**
 * E2B's template build API (the SDK's `Template.build`, v2 build system; see template-steps.ts
 * for how steps map):
 *
 *   POST /v3/templates                                      → 202 {templateID, buildID, tags, …}
 *   POST /v2/templates/{templateID}/builds/{buildID}        → 202 (empty, Content-Length: 0)
 *   GET  /templates/{templateID}/builds/{buildID}/status    → {status, logEntries, reason?}
 *   GET  /templates/aliases/{alias}                         → 200 {templateID, public} / 404
 *   POST /templates/tags · DELETE /templates/tags · GET /templates/{templateID}/tags
 *
 * A template's E2B id is its dnah name (the alias without `:tag`). Tags name the build they
 * were given to (at its start); a sandbox from `name:tag` starts from the template's current
 * build — dnah keeps one build of a template on its host, not one per tag.
 */
export async function templateRoutes(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  app.post("/v3/templates", { config: { e2bApi: true } }, async (req, reply) => {
    const body = e2bBody(req.body);
    if (typeof body.name !== "string") throw new InvalidArgumentError("'name' must be a string");
    const { name, tag } = parseTemplateName(body.name);
    const tags = buildTags(tag, stringList(body, "tags"));
    const cpuCount = optInt32(body, "cpuCount") ?? 0;
    const memoryMb = optInt32(body, "memoryMB") ?? 0;
    if (cpuCount < 0 || memoryMb < 0)
      throw new InvalidArgumentError("'cpuCount' and 'memoryMB' must be positive");
    const owner = req.apiKeyId;
    const res = await reserveTemplateBuild(ctx.deps, { name, cpuCount, memoryMib: memoryMb }, { owner });
    const buildId = res.build!.buildId;
    await recordE2bBuild(ctx.db, { buildId, templateId: name, owner, tags });
    return reply.code(202).send({
      templateID: name,
      buildID: buildId,
      names: [name],
      aliases: [name],
      tags,
      public: res.template?.public ?? false,
    });
  });

  app.post<{ Params: { templateId: string; buildId: string } }>(
    "/v2/templates/:templateId/builds/:buildId",
    { config: { e2bApi: true } },
    async (req, reply) => {
      const { templateId, buildId } = req.params;
      const owner = req.apiKeyId;
      const rec = await e2bBuild(ctx.db, buildId);
      if (rec === undefined || rec.templateId !== templateId || rec.owner !== owner)
        throw new GatewayError("not_found", `Build '${buildId}' not found`);
      const spec = parseBuildStart(e2bBody(req.body));
      const base = await getTemplate(ctx.deps, spec.from, { owner }).catch((err: unknown) => {
        if (err instanceof GatewayError && err.kind === "not_found")
          throw new InvalidArgumentError(
            `fromTemplate('${spec.from}'): no template of that name; use 'base' or one of yours`,
            { cause: err },
          );
        throw err;
      });
      const hashes = new Map<string, string>();
      await Promise.all(
        filesHashesOf(spec.steps).map(async (h) => {
          const sha = await templateFilesByAlias(ctx.deps, h, { owner });
          if (sha !== undefined) hashes.set(h, sha);
        }),
      );
      const { steps, origins } = translateSteps(spec.steps, {
        builtinBase: base.builtin,
        sha256Of: (h) => hashes.get(h),
      });
      await setE2bStepOrigins(ctx.db, buildId, origins);
      await buildTemplate(
        ctx.deps,
        {
          name: templateId,
          aliases: [],
          public: false,
          from: base.templateId,
          steps,
          start: spec.start,
          cpuCount: 0,
          memoryMib: 0,
          force: spec.force,
          buildId,
        },
        { owner },
      );
      await assignE2bTags(ctx.db, templateId, rec.tags, buildId);
      // An empty 2xx must say so (the SDK parses any other body as JSON).
      return reply.code(202).header("content-length", "0").send();
    },
  );

  app.get<{ Params: { templateId: string; buildId: string }; Querystring: Record<string, string> }>(
    "/templates/:templateId/builds/:buildId/status",
    { config: { e2bApi: true } },
    async (req) => {
      const { templateId, buildId } = req.params;
      const offsetRaw = req.query.logsOffset;
      if (offsetRaw !== undefined && !/^\d{1,9}$/.test(offsetRaw))
        throw new InvalidArgumentError("'logsOffset' must be a non-negative integer");
      const res = await getTemplateBuild(
        ctx.deps,
        { templateId, buildId, logsOffset: Number(offsetRaw ?? 0) },
        { owner: req.apiKeyId },
      );
      const b = res.build!;
      const status = STATUS_STATES[b.status] ?? "error";
      const out: Json = {
        templateID: templateId,
        buildID: buildId,
        status,
        logEntries: res.logs.map((l) => ({
          timestamp: (l.at
            ? new Date(Number(l.at.seconds) * 1000 + Math.floor(l.at.nanos / 1e6))
            : new Date()
          ).toISOString(),
          level: l.level === "warn" || l.level === "error" || l.level === "debug" ? l.level : "info",
          message: l.message,
        })),
        logs: [],
      };
      if (status === "error") {
        const message = b.reason || "the build failed";
        const rec = await e2bBuild(ctx.db, buildId);
        const step = failedStep(message, rec?.origins ?? []);
        out.reason = { message, ...(step !== undefined ? { step } : {}) };
      }
      return out;
    },
  );

  app.get<{ Params: { alias: string } }>(
    "/templates/aliases/:alias",
    { config: { e2bApi: true } },
    async (req) => {
      const { name, tag } = parseTemplateName(req.params.alias);
      const t = await visibleTemplate(ctx, req, name);
      if (
        tag !== undefined &&
        tag !== DEFAULT_TAG &&
        !(await e2bTags(ctx.db, name)).some((x) => x.tag === tag)
      )
        throw new TemplateNotFoundError(req.params.alias);
      return { templateID: t.templateId, public: t.public };
    },
  );

  app.post("/templates/tags", { config: { e2bApi: true } }, async (req, reply) => {
    const body = e2bBody(req.body);
    if (typeof body.target !== "string") throw new InvalidArgumentError("'target' must be a string");
    const { name, tag } = parseTemplateName(body.target);
    const tags = stringList(body, "tags").map((t) => t.trim().toLowerCase());
    if (tags.length === 0 || tags.some((t) => !TAG_RE.test(t)))
      throw new InvalidArgumentError("'tags' must be a non-empty list of tags (a-z, 0-9, '.', '_', '-')");
    const t = await ownTemplate(ctx, req, name);
    const buildId = await buildOfTag(ctx, t, tag ?? DEFAULT_TAG, body.target);
    await assignE2bTags(ctx.db, name, tags, buildId);
    return reply.code(201).send({ buildID: buildId, tags });
  });

  app.delete("/templates/tags", { config: { e2bApi: true } }, async (req, reply) => {
    const body = e2bBody(req.body);
    if (typeof body.name !== "string") throw new InvalidArgumentError("'name' must be a string");
    const { name, tag } = parseTemplateName(body.name);
    if (tag !== undefined) throw new InvalidArgumentError("'name' is the template's name, without a tag");
    const tags = stringList(body, "tags").map((t) => t.trim().toLowerCase());
    if (tags.length === 0) throw new InvalidArgumentError("'tags' must not be empty");
    if (tags.includes(DEFAULT_TAG)) throw new InvalidArgumentError("the 'default' tag cannot be removed");
    await ownTemplate(ctx, req, name);
    await removeE2bTags(ctx.db, name, tags);
    return reply.code(204).send();
  });

  app.get<{ Params: { templateId: string } }>(
    "/templates/:templateId/tags",
    { config: { e2bApi: true } },
    async (req) => {
      const { name } = parseTemplateName(req.params.templateId);
      const t = await visibleTemplate(ctx, req, name);
      const tags = await e2bTags(ctx.db, t.templateId);
      return tags.map((x) => ({ tag: x.tag, buildID: x.buildId, createdAt: x.createdAt.toISOString() }));
    },
  );
}

/** A template the caller may start sandboxes from (its own, public or built in), else 404. */
function visibleTemplate(ctx: E2bContext, req: FastifyRequest, name: string): Promise<Template> {
  return getTemplate(ctx.deps, name, { owner: req.apiKeyId });
}

/** One of the caller's own templates, else 404 (others' are not shown as existing). */
async function ownTemplate(ctx: E2bContext, req: FastifyRequest, name: string): Promise<Template> {
  const t = await visibleTemplate(ctx, req, name);
  if (t.owner !== req.apiKeyId) throw new TemplateNotFoundError(name);
  return t;
}

/** The build a tag names: its record, or the template's ready build for `default`. */
async function buildOfTag(ctx: E2bContext, t: Template, tag: string, target: string): Promise<string> {
  const hit = (await e2bTags(ctx.db, t.templateId)).find((x) => x.tag === tag);
  if (hit !== undefined) return hit.buildId;
  if (tag === DEFAULT_TAG && t.readyBuildId !== "") return t.readyBuildId;
  throw new GatewayError("not_found", `Template '${target}' not found`);
}

function stringList(o: Json, key: string): string[] {
  const v = o[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((x) => typeof x !== "string"))
    throw new InvalidArgumentError(`'${key}' must be an array of strings`);
  return v as string[];
}
