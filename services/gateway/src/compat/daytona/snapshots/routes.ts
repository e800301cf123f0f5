import { randomUUID } from "node:crypto";
import { Code, ConnectError } from "@connectrpc/connect";
import { TemplateBuildStatus } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { GatewayError, InvalidArgumentError, toErrorResponse } from "../../../errors.js";
import { abortOnDisconnect } from "../../../rest/common.js";
import { logText, startLogText } from "../../../rest/template-views.js";
import { cancelTemplateBuild } from "../../../rpc/cancel-template-build.js";
import { deleteTemplate } from "../../../rpc/delete-template.js";
import { getTemplate } from "../../../rpc/get-template.js";
import { buildLogPages, getTemplateBuild } from "../../../rpc/get-template-build.js";
import { isRegistryImage, registryImageMessage } from "../../../templates/dockerfile.js";
import { TEMPLATE_NAME_RE } from "../../../templates/steps.js";
import { daytonaBody, optInt, optStr } from "../body.js";
import { type DaytonaContext, requestOrigin } from "../context.js";
import { organizationIdOf } from "../dto.js";
import { DaytonaHttpError } from "../errors.js";
import { buildInfoOf, building, entrypointOf, LOGS_NONE, startBuild } from "./build.js";
import {
  deleteSnapshotRow,
  findSnapshot,
  insertSnapshot,
  listSnapshots,
  type SnapshotRow,
  setSnapshotBuild,
  settleSnapshot,
} from "./db.js";

/** Daytona's snapshot name rule (spec-daytona-image §3.1). */
const DAYTONA_NAME_RE = /^[a-zA-Z0-9_.\-:]+(\/[a-zA-Z0-9_.\-:]+)*(@sha256:[a-f0-9]{64})?$/;
/** A snapshot that is built is a dnah template of the same name, so it follows that rule too. */
const MAX_LIMIT = 200;
const DEFAULT_LIMIT = 100;
const DEFAULT_DISK_GIB = 10;

type IdParams = { Params: { id: string } };

/**
 * Daytona snapshots (spec-daytona-image §3–§5). A snapshot is a dnah template owned by the
 * caller's API key:
 *
 * - `buildInfo` (the SDK's `Image`): the Dockerfile is built as template `<name>` (a
 *   snapshot's name must therefore be a dnah template name: a-z, 0-9, '.', '_', '-'). The
 *   state is the build's: `building` → `active`, or `build_failed` with the build's reason.
 *   `Image.base("base")` (or `Image.base("code-interpreter")`, or any template the key sees)
 *   is the way to say FROM; a registry image (`python:3.12-slim`, `Image.debianSlim()`) is
 *   a 400.
 * - `imageName` naming a dnah template the key sees (`base`, one of its templates): the
 *   snapshot is that template, `active` at once (with `entrypoint`, a template `<name>` is
 *   built from it with that start command). A registry image is a 400.
 *
 *   POST   /snapshots                      GET /snapshots?page&limit
 *   GET    /snapshots/{idOrName}           DELETE /snapshots/{idOrName}
 *   POST   /snapshots/{idOrName}/activate  GET /snapshots/{idOrName}/build-logs-url
 *   GET    /snapshots/{idOrName}/build-logs?follow=true   text, ends with the build
 */
export async function snapshotRoutes(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  app.post("/snapshots", async (req) => {
    const b = daytonaBody(req.body);
    const name = optStr(b, "name");
    if (name === undefined || name === "") throw new InvalidArgumentError("name is required");
    if (!DAYTONA_NAME_RE.test(name) || name.length > 255)
      throw new InvalidArgumentError(`Invalid snapshot name '${name.slice(0, 100)}'`);
    const info = buildInfoOf(b);
    const imageName = optStr(b, "imageName");
    const entrypoint = entrypointArg(b.entrypoint);
    if (info !== undefined && (imageName !== undefined || entrypoint !== undefined))
      throw new InvalidArgumentError("buildInfo goes without imageName and entrypoint");
    if (info === undefined && imageName === undefined)
      throw new InvalidArgumentError("Must specify an image name when not using a build info entry");
    if ((optInt(b, "gpu", 0, 64) ?? 0) > 0) throw new InvalidArgumentError("GPUs are not supported");
    const cpu = optInt(b, "cpu", 1, 256) ?? 0;
    const memory = optInt(b, "memory", 1, 4096) ?? 0;
    const disk = optInt(b, "disk", 1, 65_536) ?? DEFAULT_DISK_GIB;
    for (const k of ["regionId", "sandboxClass"]) optStr(b, k);

    const owner = req.daytonaOwner;
    const keyId = req.daytonaKeyId;
    if ((await findSnapshot(ctx.db, owner, name)) !== undefined) throw alreadyExists(name);

    let templateId = name;
    const needsBuild = info !== undefined || entrypoint !== undefined;
    let base = imageName;
    if (imageName !== undefined) {
      if (isRegistryImage(imageName)) throw new InvalidArgumentError(registryImageMessage(imageName));
      const t = await visibleTemplate(ctx, imageName, keyId);
      if (t === undefined)
        throw new InvalidArgumentError(
          `imageName '${imageName}': no template of that name; a snapshot's image is a dnah template (base, code-interpreter, or one of yours)`,
        );
      base = t.templateId;
      if (!needsBuild) templateId = t.templateId;
    }
    if (needsBuild) {
      if (!TEMPLATE_NAME_RE.test(name))
        throw new InvalidArgumentError(
          `snapshot name '${name.slice(0, 100)}': a built snapshot is a dnah template, named with 1-63 of a-z, 0-9, '.', '_', '-'`,
        );
      if ((await visibleTemplate(ctx, name, keyId)) !== undefined)
        throw new GatewayError("already_exists", `A template named "${name}" already exists`);
    }
    // The row first: it holds the name while the build starts.
    const row = await insertSnapshot(ctx.db, {
      id: randomUUID(),
      owner_sha256: owner,
      name,
      template_id: templateId,
      build_id: null,
      image_name: imageName ?? null,
      entrypoint: info !== undefined ? entrypointOf(info.dockerfileContent) : (entrypoint ?? null),
      build_info: info ?? null,
      cpu: cpu || 1,
      mem_gib: memory || 1,
      disk_gib: disk,
      state: needsBuild ? "building" : "active",
    });
    if (row === undefined) throw alreadyExists(name);
    if (!needsBuild) return snapshotDto(row);
    try {
      const source = info ?? {
        dockerfileContent: `FROM ${base}\nENTRYPOINT ${JSON.stringify(entrypoint)}\n`,
        contextHashes: [],
      };
      const res = await startBuild(ctx, keyId, owner, templateId, source, {
        cpu,
        memoryMib: memory * 1024,
      });
      const buildId = res.build!.buildId;
      await setSnapshotBuild(ctx.db, row.id, buildId);
      ctx.logger.info(
        { "snapshot.id": row.id, "template.id": templateId, buildId },
        "daytona snapshot build started",
      );
      return snapshotDto({ ...row, build_id: buildId });
    } catch (err) {
      await deleteSnapshotRow(ctx.db, row.id);
      throw err;
    }
  });

  app.get("/snapshots", async (req) => {
    const q = (req.query ?? {}) as Record<string, string | undefined>;
    const page = positiveInt(q.page, "page") ?? 1;
    const limit = Math.min(positiveInt(q.limit, "limit") ?? DEFAULT_LIMIT, MAX_LIMIT);
    if (q.sourceSandboxId !== undefined) return { items: [], total: 0, page, totalPages: 0 };
    const { rows, total } = await listSnapshots(ctx.db, req.daytonaOwner, limit, (page - 1) * limit);
    const items = await Promise.all(rows.map((r) => current(ctx, r, req.daytonaKeyId)));
    return { items: items.map(snapshotDto), total, page, totalPages: Math.ceil(total / limit) };
  });

  app.get<IdParams>("/snapshots/:id", async (req) =>
    snapshotDto(await currentOwned(ctx, req, req.params.id)),
  );

  app.delete<IdParams>("/snapshots/:id", async (req, reply) => {
    const row = await owned(ctx, req, req.params.id);
    const call = { owner: req.daytonaKeyId };
    if (row.build_id !== null) {
      if (row.state === "building")
        await cancelTemplateBuild(
          ctx.deps,
          { templateId: row.template_id, buildId: row.build_id },
          call,
        ).catch((err: unknown) => {
          if (!(err instanceof GatewayError)) throw err;
        });
      await deleteTemplate(ctx.deps, row.template_id, call).catch((err: unknown) => {
        // Gone already is what was wanted.
        if (!(err instanceof GatewayError && err.kind === "not_found")) throw err;
      });
    }
    await deleteSnapshotRow(ctx.db, row.id);
    ctx.logger.info({ "snapshot.id": row.id, "template.id": row.template_id }, "daytona snapshot deleted");
    return reply.code(200).send();
  });

  app.post<IdParams>("/snapshots/:id/activate", async (req) => {
    const row = await currentOwned(ctx, req, req.params.id);
    if (row.state === "active") throw new InvalidArgumentError(`Snapshot ${row.name} is already active`);
    throw new InvalidArgumentError(`Snapshot ${row.name} cannot be activated - it is in ${row.state} state`);
  });

  app.get<IdParams>("/snapshots/:id/build-logs-url", async (req) => {
    const row = await owned(ctx, req, req.params.id);
    return { url: `${requestOrigin(req)}/api/snapshots/${row.id}/build-logs` };
  });

  app.get<IdParams>("/snapshots/:id/build-logs", async (req, reply) => {
    const row = await owned(ctx, req, req.params.id);
    const build = row.build_id === null ? undefined : { templateId: row.template_id, buildId: row.build_id };
    await streamBuildLog(ctx, req, reply, build, `Snapshot ${row.name} is the template ${row.template_id}`);
  });
}

/**
 * A build's log as text (200 whatever happens: the SDK shows the body as log lines), from
 * the start; with `?follow=true` it follows the build and ends when the build does.
 */
export async function streamBuildLog(
  ctx: DaytonaContext,
  req: FastifyRequest,
  reply: FastifyReply,
  build: { templateId: string; buildId: string } | undefined,
  nothingBuilt: string,
): Promise<void> {
  const q = (req.query ?? {}) as Record<string, string | undefined>;
  const follow = q.follow === "true";
  const signal = abortOnDisconnect(reply);
  const res = startLogText(reply, req.requestId);
  if (build === undefined) {
    res.end(`${nothingBuilt}; nothing was built\n`);
    return;
  }
  const call = { owner: req.daytonaKeyId, signal };
  try {
    const pages = buildLogPages(ctx.deps, build, 0, { ...call, follow, running: building, signal });
    let step = await pages.next();
    for (; !step.done; step = await pages.next()) res.write(step.value.logs.map(logText).join(""));
    const b = step.value.build!;
    if (b.status === TemplateBuildStatus.ERROR || b.status === TemplateBuildStatus.CANCELLED)
      res.write(`ERROR: ${b.reason || "the build failed"}\n`);
  } catch (err) {
    if (!signal.aborted) {
      const e = toErrorResponse(err, { logger: ctx.logger, requestId: req.requestId });
      res.write(`ERROR: ${e.message}\n`);
    }
  }
  res.end();
}

function alreadyExists(name: string): GatewayError {
  return new GatewayError(
    "already_exists",
    `Snapshot with name "${name}" already exists for this organization`,
  );
}

function notFound(idOrName: string): DaytonaHttpError {
  return new DaytonaHttpError(404, "NOT_FOUND", `Snapshot ${idOrName.slice(0, 255)} not found`);
}

async function owned(ctx: DaytonaContext, req: FastifyRequest, idOrName: string): Promise<SnapshotRow> {
  if (idOrName === "" || idOrName.length > 255 || idOrName.includes("\0")) throw notFound(idOrName);
  const row = await findSnapshot(ctx.db, req.daytonaOwner, idOrName);
  if (row === undefined) throw notFound(idOrName);
  return row;
}

async function currentOwned(
  ctx: DaytonaContext,
  req: FastifyRequest,
  idOrName: string,
): Promise<SnapshotRow> {
  return current(ctx, await owned(ctx, req, idOrName), req.daytonaKeyId);
}

/** The row with its build's state: a build that has ended is stored as `active` or `build_failed`. */
export async function current(ctx: DaytonaContext, row: SnapshotRow, keyId: string): Promise<SnapshotRow> {
  if (row.state !== "building" || row.build_id === null) return row;
  let build: Awaited<ReturnType<typeof getTemplateBuild>>["build"];
  try {
    ({ build } = await getTemplateBuild(
      ctx.deps,
      { templateId: row.template_id, buildId: row.build_id, logsOffset: LOGS_NONE },
      { owner: keyId },
    ));
  } catch (err) {
    if (!(err instanceof GatewayError && err.kind === "not_found")) throw err;
    // The template went (deleted natively): the snapshot cannot become active.
    return (await settleSnapshot(ctx.db, row.id, "build_failed", "the template was deleted")) ?? row;
  }
  if (building(build)) return row;
  const ok = build?.status === TemplateBuildStatus.READY;
  const reason = ok ? null : build?.reason || "the build failed";
  return (await settleSnapshot(ctx.db, row.id, ok ? "active" : "build_failed", reason)) ?? row;
}

/** A template (by name) the key sees; undefined when there is none. */
async function visibleTemplate(ctx: DaytonaContext, name: string, keyId: string) {
  try {
    return await getTemplate(ctx.deps, name, { owner: keyId });
  } catch (err) {
    if (err instanceof GatewayError && err.kind === "not_found") return undefined;
    if (err instanceof ConnectError && err.code === Code.NotFound) return undefined;
    throw err;
  }
}

function entrypointArg(v: unknown): string[] | undefined {
  if (v === undefined || v === null) return undefined;
  if (!Array.isArray(v) || v.length === 0 || v.some((x) => typeof x !== "string"))
    throw new InvalidArgumentError("entrypoint must be a non-empty array of strings");
  return v as string[];
}

function positiveInt(v: string | undefined, key: string): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[1-9][0-9]{0,8}$/.test(v)) throw new InvalidArgumentError(`${key} must be a positive integer`);
  return Number(v);
}

/** SnapshotDto (spec-daytona-image §4). */
export function snapshotDto(r: SnapshotRow): Record<string, unknown> {
  const at = (d: Date | null) => (d === null ? null : new Date(d).toISOString());
  return {
    id: r.id,
    organizationId: organizationIdOf(r.owner_sha256),
    general: false,
    name: r.name,
    imageName: r.image_name ?? r.template_id,
    state: r.state,
    size: null,
    entrypoint: r.entrypoint,
    cpu: r.cpu,
    gpu: 0,
    mem: r.mem_gib,
    disk: r.disk_gib,
    errorReason: r.error_reason,
    createdAt: at(r.created_at),
    updatedAt: at(r.updated_at),
    lastUsedAt: at(r.last_used_at),
    ...(r.build_info !== null
      ? {
          buildInfo: {
            ...r.build_info,
            createdAt: at(r.created_at),
            updatedAt: at(r.updated_at),
            snapshotRef: r.template_id,
          },
        }
      : {}),
    regionIds: ["local"],
    ref: r.template_id,
    sourceSandboxId: null,
  };
}
