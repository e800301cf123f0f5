import { create } from "@bufbuild/protobuf";
import {
  ArchiveSandboxRequestSchema,
  CreateSandboxRequestSchema,
  DeleteSandboxRequestSchema,
  ExpireAction,
  GetSandboxMetricsRequestSchema,
  GetSandboxRequestSchema,
  LifecycleClock,
  LifecycleType,
  ListSandboxEventsRequestSchema,
  ListSandboxesRequestSchema,
  PauseSandboxRequestSchema,
  ResumeSandboxRequestSchema,
  SandboxState,
  UpdateLifecycleRequestSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { InvalidArgumentError } from "../errors.js";
import { archiveSandbox } from "../rpc/archive-sandbox.js";
import { createSandbox } from "../rpc/create-sandbox.js";
import { deleteSandbox } from "../rpc/delete-sandbox.js";
import { getSandbox } from "../rpc/get-sandbox.js";
import { getSandboxMetrics } from "../rpc/get-sandbox-metrics.js";
import { listSandboxEvents, MAX_EVENTS_LIMIT } from "../rpc/list-sandbox-events.js";
import { listSandboxes } from "../rpc/list-sandboxes.js";
import { pauseSandbox } from "../rpc/pause-sandbox.js";
import { resumeSandbox } from "../rpc/resume-sandbox.js";
import { updateLifecycle } from "../rpc/update-lifecycle.js";
import { type Json, objectBody, optString, optStringMap, optUint32, queryParam } from "./body.js";
import type { RestOptions } from "./common.js";
import {
  envVars,
  errorAnswers,
  jsonAnswer,
  jsonBody,
  LIFECYCLE_PROPERTIES,
  labels,
  listOf,
  noContent,
  ref,
  sandboxAnswer,
  sandboxParams,
} from "./schemas.js";
import { eventJson, metricsJson, sandboxJson } from "./views.js";

const METADATA_QUERY_PREFIX = "metadata.";
/** `?state=` values, as the views spell states. */
const LISTABLE_STATES: Readonly<Record<string, SandboxState>> = {
  starting: SandboxState.STARTING,
  running: SandboxState.RUNNING,
  paused: SandboxState.PAUSED,
  stopped: SandboxState.STOPPED,
  archived: SandboxState.ARCHIVED,
  lost: SandboxState.LOST,
};
const LIFECYCLE_TYPES: Readonly<Record<string, LifecycleType>> = {
  persistent: LifecycleType.PERSISTENT,
  ephemeral: LifecycleType.EPHEMERAL,
};
const LIFECYCLE_FIELDS = [
  "autoStopMinutes",
  "autoArchiveDays",
  "autoDeleteDays",
  "clock",
  "deleteOnStop",
  "expiresInSeconds",
  "onExpire",
] as const;
const CLOCKS: Readonly<Record<string, LifecycleClock>> = {
  state_change: LifecycleClock.STATE_CHANGE,
  last_activity: LifecycleClock.LAST_ACTIVITY,
};
const EXPIRE_ACTIONS: Readonly<Record<string, ExpireAction>> = {
  delete: ExpireAction.DELETE,
  stop: ExpireAction.STOP,
};

/** One of a table's names, as its enum value. */
function optEnum<T>(body: Json, key: string, table: Readonly<Record<string, T>>): T | undefined {
  const name = optString(body, key);
  if (name === undefined) return undefined;
  const v = table[name];
  if (v === undefined)
    throw new InvalidArgumentError(`'${key}' must be one of ${Object.keys(table).join(", ")}`);
  return v;
}

/** A number of days ≥ 0, fractions allowed (the scheduler checks the upper bound). */
function optDays(body: Json, key: string): number | undefined {
  const v = body[key];
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0)
    throw new InvalidArgumentError(`'${key}' must be a number of days, 0 (never) or more`);
  return v;
}

/** The explicit lifecycle values of a body (the scheduler checks the upper bounds). */
function lifecycleValues(body: Json) {
  const deleteOnStop = body.deleteOnStop;
  if (deleteOnStop !== undefined && typeof deleteOnStop !== "boolean")
    throw new InvalidArgumentError("'deleteOnStop' must be a boolean");
  const values = {
    autoStopMinutes: optUint32(body, "autoStopMinutes"),
    autoArchiveDays: optDays(body, "autoArchiveDays"),
    autoDeleteDays: optDays(body, "autoDeleteDays"),
    clock: optEnum(body, "clock", CLOCKS),
    deleteOnStop,
    expiresInSeconds: optUint32(body, "expiresInSeconds"),
    onExpire: optEnum(body, "onExpire", EXPIRE_ACTIONS),
  };
  return Object.fromEntries(Object.entries(values).filter(([, v]) => v !== undefined)) as Partial<
    typeof values
  >;
}

function lifecycleType(body: Json): LifecycleType {
  const t = optString(body, "type");
  if (t === undefined) return LifecycleType.UNSPECIFIED;
  const type = LIFECYCLE_TYPES[t];
  if (type === undefined)
    throw new InvalidArgumentError(`'type' must be one of ${Object.keys(LIFECYCLE_TYPES).join(", ")}`);
  return type;
}
const MAX_STATE_VALUES = 16;

/** `state=a&state=b` or `state=a,b` (or both) as a set of states; unknown names are a 400. */
function parseStates(raw: unknown): SandboxState[] {
  const parts = (Array.isArray(raw) ? raw : [raw]).flatMap((v) => String(v).split(","));
  if (parts.length > MAX_STATE_VALUES)
    throw new InvalidArgumentError(`query parameter 'state': at most ${MAX_STATE_VALUES} values`);
  const states = new Set<SandboxState>();
  for (const p of parts) {
    const s = LISTABLE_STATES[p.trim().toLowerCase()];
    if (s === undefined)
      throw new InvalidArgumentError(
        `query parameter 'state': unknown state '${p.slice(0, 32)}'; use ${Object.keys(LISTABLE_STATES).join(", ")}`,
      );
    states.add(s);
  }
  return [...states];
}

/**
 * POST/GET /v1/sandboxes, GET/DELETE /v1/sandboxes/:id, POST /v1/sandboxes/:id/{pause,resume},
 * GET /v1/sandboxes/:id/metrics, PATCH /v1/sandboxes/:id/lifecycle, GET /v1/sandboxes/:id/events
 */
export async function sandboxRoutes(app: FastifyInstance, opts: RestOptions): Promise<void> {
  const { deps } = opts;

  const tags = ["sandboxes"];
  const byId = (
    operationId: string,
    summary: string,
    answer: object,
    ...errors: Parameters<typeof errorAnswers>
  ) => ({
    schema: {
      tags,
      operationId,
      summary,
      params: sandboxParams,
      response: { ...answer, ...errorAnswers(404, ...errors) },
    },
  });

  const createSchema = {
    tags,
    operationId: "createSandbox",
    summary: "Create a sandbox (from a template; `base` when none is given)",
    body: jsonBody({
      templateId: { type: "string", description: "The template; empty or absent means `base`." },
      metadata: labels,
      envVars,
      type: {
        type: "string",
        enum: ["persistent", "ephemeral"],
        description: "Lifecycle preset (ephemeral: auto-stop 15 min, archive 7 d, delete 30 d).",
      },
      ...LIFECYCLE_PROPERTIES,
    }),
    response: { 201: sandboxAnswer("The new sandbox, running."), ...errorAnswers(400, 404, 415) },
  };
  app.post("/sandboxes", { bodyLimit: opts.jsonBodyLimitBytes, schema: createSchema }, async (req, reply) => {
    const body = objectBody(req.body, ["templateId", "metadata", "envVars", "type", ...LIFECYCLE_FIELDS]);
    const res = await createSandbox(
      deps,
      create(CreateSandboxRequestSchema, {
        templateId: optString(body, "templateId") ?? "",
        metadata: optStringMap(body, "metadata") ?? {},
        envVars: optStringMap(body, "envVars") ?? {},
        type: lifecycleType(body),
        ...lifecycleValues(body),
      }),
      { owner: req.apiKeyId },
    );
    return reply.code(201).send(sandboxJson(res.sandbox!));
  });

  const listSchema = {
    tags,
    operationId: "listSandboxes",
    summary: "List sandboxes",
    description:
      "Filters: `metadata.<key>=<value>` (each key at most once) and `state=<state>` (repeatable or comma-separated). Other parameters are a 400.",
    querystring: {
      type: "object",
      properties: {
        state: {
          type: "string",
          description: "starting, running, paused, stopped, archived, lost (comma-separated).",
        },
      },
      patternProperties: { "^metadata\\..+$": { type: "string" } },
    },
    response: { 200: jsonAnswer("The sandboxes.", listOf("sandboxes", "Sandbox")), ...errorAnswers(400) },
  };
  app.get("/sandboxes", { schema: listSchema }, async (req) => {
    const metadata: Record<string, string> = {};
    let states: SandboxState[] = [];
    for (const [k, v] of Object.entries((req.query ?? {}) as Record<string, unknown>)) {
      if (k === "state") {
        states = parseStates(v);
        continue;
      }
      if (!k.startsWith(METADATA_QUERY_PREFIX) || k.length === METADATA_QUERY_PREFIX.length) {
        throw new InvalidArgumentError(
          `unknown query parameter '${k.slice(0, 64)}'; filter with metadata.<key>=<value> or state=<state>`,
        );
      }
      if (typeof v !== "string")
        throw new InvalidArgumentError(`query parameter '${k.slice(0, 64)}' must be given once`);
      metadata[k.slice(METADATA_QUERY_PREFIX.length)] = v;
    }
    const res = await listSandboxes(deps, create(ListSandboxesRequestSchema, { metadata, states }));
    return { sandboxes: res.sandboxes.map(sandboxJson) };
  });

  app.get<{ Params: { id: string } }>(
    "/sandboxes/:id",
    byId("getSandbox", "Get a sandbox", { 200: sandboxAnswer("The sandbox.") }),
    async (req) => {
      const res = await getSandbox(deps, create(GetSandboxRequestSchema, { sandboxId: req.params.id }));
      return sandboxJson(res.sandbox!);
    },
  );

  app.post<{ Params: { id: string } }>(
    "/sandboxes/:id/pause",
    byId(
      "pauseSandbox",
      "Pause a running sandbox (memory and disk kept)",
      { 200: sandboxAnswer("The sandbox, paused.") },
      409,
    ),
    async (req) => {
      const res = await pauseSandbox(deps, create(PauseSandboxRequestSchema, { sandboxId: req.params.id }));
      return sandboxJson(res.sandbox!);
    },
  );

  app.post<{ Params: { id: string } }>(
    "/sandboxes/:id/archive",
    byId(
      "archiveSandbox",
      "Move a paused sandbox's snapshot to archive storage",
      { 200: sandboxAnswer("The sandbox, archived.") },
      409,
    ),
    async (req) => {
      const res = await archiveSandbox(
        deps,
        create(ArchiveSandboxRequestSchema, { sandboxId: req.params.id }),
      );
      return sandboxJson(res.sandbox!);
    },
  );

  app.post<{ Params: { id: string } }>(
    "/sandboxes/:id/resume",
    byId(
      "resumeSandbox",
      "Resume a paused or archived sandbox",
      { 200: sandboxAnswer("The sandbox, running.") },
      409,
    ),
    async (req) => {
      const res = await resumeSandbox(deps, create(ResumeSandboxRequestSchema, { sandboxId: req.params.id }));
      return sandboxJson(res.sandbox!);
    },
  );

  app.get<{ Params: { id: string } }>(
    "/sandboxes/:id/metrics",
    byId(
      "getSandboxMetrics",
      "A sample of CPU, memory and disk use",
      { 200: jsonAnswer("The sample.", ref("SandboxMetrics")) },
      409,
    ),
    async (req) => {
      const res = await getSandboxMetrics(
        deps,
        create(GetSandboxMetricsRequestSchema, { sandboxId: req.params.id }),
      );
      return metricsJson(res.metrics!);
    },
  );

  app.patch<{ Params: { id: string } }>(
    "/sandboxes/:id/lifecycle",
    {
      bodyLimit: opts.jsonBodyLimitBytes,
      schema: {
        ...byId(
          "updateLifecycle",
          "Change lifecycle values (at least one)",
          { 200: sandboxAnswer("The sandbox.") },
          400,
          415,
        ).schema,
        body: jsonBody(LIFECYCLE_PROPERTIES),
      },
    },
    async (req) => {
      const body = objectBody(req.body, LIFECYCLE_FIELDS);
      const res = await updateLifecycle(
        deps,
        create(UpdateLifecycleRequestSchema, { sandboxId: req.params.id, ...lifecycleValues(body) }),
      );
      return sandboxJson(res.sandbox!);
    },
  );

  app.get<{ Params: { id: string } }>(
    "/sandboxes/:id/events",
    {
      schema: {
        ...byId(
          "listSandboxEvents",
          "The sandbox's recorded transitions, oldest first",
          { 200: jsonAnswer("The events.", listOf("events", "SandboxEvent")) },
          400,
        ).schema,
        querystring: {
          type: "object",
          additionalProperties: false,
          properties: {
            limit: {
              type: "integer",
              minimum: 1,
              maximum: MAX_EVENTS_LIMIT,
              description: "The newest that many (default 100).",
            },
          },
        },
      },
    },
    async (req) => {
      for (const k of Object.keys((req.query ?? {}) as Record<string, unknown>))
        if (k !== "limit")
          throw new InvalidArgumentError(`unknown query parameter '${k.slice(0, 64)}'; use limit`);
      const raw = queryParam(req.query, "limit");
      let limit = 0;
      if (raw !== undefined) {
        if (!/^\d{1,4}$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_EVENTS_LIMIT)
          throw new InvalidArgumentError(
            `query parameter 'limit' must be an integer from 1 to ${MAX_EVENTS_LIMIT}`,
          );
        limit = Number(raw);
      }
      const res = await listSandboxEvents(
        deps,
        create(ListSandboxEventsRequestSchema, { sandboxId: req.params.id, limit }),
      );
      return { events: res.events.map(eventJson) };
    },
  );

  app.delete<{ Params: { id: string } }>(
    "/sandboxes/:id",
    byId("deleteSandbox", "Delete a sandbox", noContent),
    async (req, reply) => {
      await deleteSandbox(deps, create(DeleteSandboxRequestSchema, { sandboxId: req.params.id }));
      return reply.code(204).send();
    },
  );
}
