import { create } from "@bufbuild/protobuf";
import {
  DeleteSnapshotRequestSchema,
  ForkSandboxRequestSchema,
  GetSnapshotRequestSchema,
  ListSnapshotKeysRequestSchema,
  ListSnapshotsRequestSchema,
  RestoreSnapshotRequestSchema,
  SnapshotSandboxRequestSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { InvalidArgumentError } from "../errors.js";
import { deleteSnapshot } from "../rpc/delete-snapshot.js";
import { forkSandbox } from "../rpc/fork-sandbox.js";
import { getSnapshot } from "../rpc/get-snapshot.js";
import { listSnapshotKeys } from "../rpc/list-snapshot-keys.js";
import { listSnapshots } from "../rpc/list-snapshots.js";
import { restoreSnapshot } from "../rpc/restore-snapshot.js";
import { snapshotSandbox } from "../rpc/snapshot-sandbox.js";
import { FORK_COUNT } from "../rpc/validate.js";
import { type Json, objectBody, optString, optStringMap, queryParam } from "./body.js";
import type { RestOptions } from "./common.js";
import {
  envVars,
  errorAnswers,
  jsonAnswer,
  jsonBody,
  labels,
  listOf,
  noContent,
  objectOf,
  ref,
  sandboxParams,
  snapshotParams,
} from "./schemas.js";
import { forkResultJson, sandboxJson, snapshotJson, snapshotKeyJson } from "./views.js";

/** `count` of a fork: absent means 1; present, it must be an integer in range (0 is not "1" here). */
function forkCountOf(body: Json): number {
  const v = body.count;
  if (v === undefined) return FORK_COUNT.min;
  if (typeof v !== "number" || !Number.isInteger(v) || v < FORK_COUNT.min || v > FORK_COUNT.max)
    throw new InvalidArgumentError(`'count' must be an integer from ${FORK_COUNT.min} to ${FORK_COUNT.max}`);
  return v;
}

function onlyQuery(query: unknown, allowed: readonly string[]): void {
  for (const k of Object.keys((query ?? {}) as Record<string, unknown>)) {
    if (!allowed.includes(k))
      throw new InvalidArgumentError(
        `unknown query parameter '${k.slice(0, 64)}'${allowed.length > 0 ? `; use ${allowed.join(", ")}` : ""}`,
      );
  }
}

/**
 * POST /v1/sandboxes/:id/snapshot, POST /v1/sandboxes/:id/fork, GET /v1/snapshots,
 * GET/DELETE /v1/snapshots/:idOrName, POST /v1/snapshots/:idOrName/restore,
 * GET /v1/snapshot-keys
 */
export async function snapshotRoutes(app: FastifyInstance, opts: RestOptions): Promise<void> {
  const { deps } = opts;
  const tags = ["snapshots"];
  const snapshotAnswer = (d: string) => jsonAnswer(d, objectOf("snapshot", ref("Snapshot")));

  app.post<{ Params: { id: string } }>(
    "/sandboxes/:id/snapshot",
    {
      bodyLimit: opts.jsonBodyLimitBytes,
      schema: {
        tags,
        operationId: "snapshotSandbox",
        summary: "Take a signed snapshot of a sandbox (it keeps running)",
        params: sandboxParams,
        body: jsonBody({
          name: { type: "string", description: "Unique; usable instead of the id." },
          metadata: labels,
        }),
        response: { 201: snapshotAnswer("The snapshot."), ...errorAnswers(400, 404, 409, 415) },
      },
    },
    async (req, reply) => {
      const body = objectBody(req.body, ["name", "metadata"]);
      const res = await snapshotSandbox(
        deps,
        create(SnapshotSandboxRequestSchema, {
          sandboxId: req.params.id,
          name: optString(body, "name") ?? "",
          metadata: optStringMap(body, "metadata") ?? {},
        }),
      );
      return reply.code(201).send({ snapshot: snapshotJson(res.snapshot!) });
    },
  );

  app.post<{ Params: { id: string } }>(
    "/sandboxes/:id/fork",
    {
      bodyLimit: opts.jsonBodyLimitBytes,
      schema: {
        tags,
        operationId: "forkSandbox",
        summary: "Fork a running sandbox into clones (memory, processes and disk)",
        params: sandboxParams,
        body: jsonBody({
          count: {
            type: "integer",
            minimum: FORK_COUNT.min,
            maximum: FORK_COUNT.max,
            description: "Clones (default 1).",
          },
          metadata: labels,
        }),
        response: {
          201: jsonAnswer(
            "One result per clone.",
            objectOf("results", { type: "array", items: ref("ForkResult") }),
          ),
          ...errorAnswers(400, 404, 409, 415),
        },
      },
    },
    async (req, reply) => {
      const body = objectBody(req.body, ["count", "metadata"]);
      const res = await forkSandbox(
        deps,
        create(ForkSandboxRequestSchema, {
          sandboxId: req.params.id,
          count: forkCountOf(body),
          metadata: optStringMap(body, "metadata") ?? {},
        }),
      );
      return reply.code(201).send({ results: res.results.map(forkResultJson) });
    },
  );

  app.get(
    "/snapshots",
    {
      schema: {
        tags,
        operationId: "listSnapshots",
        summary: "List snapshots",
        querystring: {
          type: "object",
          additionalProperties: false,
          properties: { sandboxId: { type: "string", description: "Only this sandbox's." } },
        },
        response: {
          200: jsonAnswer("The snapshots.", listOf("snapshots", "Snapshot")),
          ...errorAnswers(400),
        },
      },
    },
    async (req) => {
      onlyQuery(req.query, ["sandboxId"]);
      const res = await listSnapshots(
        deps,
        create(ListSnapshotsRequestSchema, { sandboxId: queryParam(req.query, "sandboxId") ?? "" }),
      );
      return { snapshots: res.snapshots.map(snapshotJson) };
    },
  );

  app.get<{ Params: { idOrName: string } }>(
    "/snapshots/:idOrName",
    {
      schema: {
        tags,
        operationId: "getSnapshot",
        summary: "Get a snapshot",
        params: snapshotParams,
        response: { 200: snapshotAnswer("The snapshot."), ...errorAnswers(404) },
      },
    },
    async (req) => {
      const res = await getSnapshot(
        deps,
        create(GetSnapshotRequestSchema, { snapshotId: req.params.idOrName }),
      );
      return { snapshot: snapshotJson(res.snapshot!) };
    },
  );

  app.delete<{ Params: { idOrName: string } }>(
    "/snapshots/:idOrName",
    {
      schema: {
        tags,
        operationId: "deleteSnapshot",
        summary: "Delete a snapshot",
        params: snapshotParams,
        response: { ...noContent, ...errorAnswers(404, 409) },
      },
    },
    async (req, reply) => {
      await deleteSnapshot(deps, create(DeleteSnapshotRequestSchema, { snapshotId: req.params.idOrName }));
      return reply.code(204).send();
    },
  );

  app.post<{ Params: { idOrName: string } }>(
    "/snapshots/:idOrName/restore",
    {
      bodyLimit: opts.jsonBodyLimitBytes,
      schema: {
        tags,
        operationId: "restoreSnapshot",
        summary: "Start a new sandbox from a snapshot",
        params: snapshotParams,
        body: jsonBody({ metadata: labels, envVars }),
        response: {
          201: jsonAnswer("The new sandbox.", objectOf("sandbox", ref("Sandbox"))),
          ...errorAnswers(400, 404, 409, 415),
        },
      },
    },
    async (req, reply) => {
      const body = objectBody(req.body, ["metadata", "envVars"]);
      const res = await restoreSnapshot(
        deps,
        create(RestoreSnapshotRequestSchema, {
          snapshotId: req.params.idOrName,
          metadata: optStringMap(body, "metadata") ?? {},
          envVars: optStringMap(body, "envVars") ?? {},
        }),
      );
      return reply.code(201).send({ sandbox: sandboxJson(res.sandbox!) });
    },
  );

  app.get(
    "/snapshot-keys",
    {
      schema: {
        tags,
        operationId: "listSnapshotKeys",
        summary: "The public keys that verify snapshot signatures",
        response: { 200: jsonAnswer("The keys.", listOf("keys", "SnapshotKey")), ...errorAnswers(400) },
      },
    },
    async (req) => {
      onlyQuery(req.query, []);
      const res = await listSnapshotKeys(deps, create(ListSnapshotKeysRequestSchema, {}));
      return { keys: res.keys.map(snapshotKeyJson) };
    },
  );
}
