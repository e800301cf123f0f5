import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import {
  CreateSandboxRequestSchema,
  DeleteSandboxRequestSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { type Template, TemplateBuildStatus } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { FastifyInstance } from "fastify";
import { GatewayError, InvalidArgumentError } from "../../../errors.js";
import type { Json } from "../../../rest/body.js";
import { abortOnDisconnect } from "../../../rest/common.js";
import { createSandbox, DEFAULT_TEMPLATE_ID } from "../../../rpc/create-sandbox.js";
import { deleteSandbox } from "../../../rpc/delete-sandbox.js";
import { getTemplate } from "../../../rpc/get-template.js";
import { checkMetadata } from "../../../rpc/validate.js";
import { daytonaBody, optBool, optInt, optMap, optStr } from "../body.js";
import { type DaytonaContext, requestOrigin } from "../context.js";
import { insertDaytonaSandbox, nameTaken } from "../db.js";
import { organizationIdOf } from "../dto.js";
import {
  DEFAULT_AUTO_ARCHIVE_MIN,
  DEFAULT_AUTO_DELETE_MIN,
  DEFAULT_AUTO_STOP_MIN,
  MAX_INTERVAL_MIN,
  NATIVE_TYPE,
  nativeLifecycleValues,
  normalizeAutoArchive,
  normalizeAutoDelete,
} from "../lifecycle.js";
import { ORG_METADATA_KEY } from "../native.js";
import {
  type BuildInfo,
  buildInfoOf,
  imageTemplateId,
  startBuild,
  waitForBuild,
} from "../snapshots/build.js";
import { findSnapshot, touchSnapshot } from "../snapshots/db.js";
import { current } from "../snapshots/routes.js";
import { fullDto } from "./common.js";

/** The user every template runs commands as (`recipes.ts`). */
export const SANDBOX_USER = "user";
export const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;
const DEFAULT_DISK_GIB = 10;
const LANGUAGE_LABEL = "code-toolbox-language";

/** Fields Daytona has that this server cannot honour: refused rather than silently dropped. */
function refuseUnsupported(b: Json): void {
  if (b.buildInfo !== undefined && b.buildInfo !== null && optStr(b, "snapshot"))
    throw new InvalidArgumentError("give either snapshot or buildInfo, not both");
  const gpu = optInt(b, "gpu", 0, 64);
  if ((gpu ?? 0) > 0 || (Array.isArray(b.gpuType) && b.gpuType.length > 0))
    throw new InvalidArgumentError("GPUs are not supported");
  if (Array.isArray(b.volumes) ? b.volumes.length > 0 : b.volumes !== undefined && b.volumes !== null)
    throw new InvalidArgumentError("volumes are not supported");
  if ((optInt(b, "autoPauseInterval", 0, MAX_INTERVAL_MIN) ?? 0) > 0)
    throw new InvalidArgumentError("autoPauseInterval is not supported; use autoStopInterval");
  if ((optInt(b, "ttlMinutes", 0, MAX_INTERVAL_MIN) ?? 0) > 0)
    throw new InvalidArgumentError(
      "ttlMinutes is not supported; use autoStopInterval and autoDeleteInterval",
    );
  if (Array.isArray(b.secrets) ? b.secrets.length > 0 : b.secrets !== undefined && b.secrets !== null)
    throw new InvalidArgumentError("secrets are not supported; pass values in env");
  if (optStr(b, "linkedSandbox") !== undefined)
    throw new InvalidArgumentError("linkedSandbox is not supported");
  if (optBool(b, "kvm") === true) throw new InvalidArgumentError("kvm is not supported");
}

/**
 * `POST /sandbox` (spec §5.2): creates a native sandbox from the template named by `snapshot`
 * (default `base`) and records the Daytona view of it, already `started`. Network settings
 * (`networkBlockAll`, `networkAllowList`, `domainAllowList`) are stored and shown but NOT
 * enforced; cpu/memory/disk are validated but the template decides them (the DTO shows what
 * the sandbox really has; disk is not limited). The intervals are the native lifecycle's,
 * set here (lifecycle.ts has the mapping); the native sandbox carries the owner's
 * organization id as metadata (`dnah.daytona.org`), so a list page reads it in one call.
 */
export async function createRoute(app: FastifyInstance, ctx: DaytonaContext): Promise<void> {
  app.post("/sandbox", async (req, reply) => {
    const b = daytonaBody(req.body);
    refuseUnsupported(b);
    const info = buildInfoOf(b);
    const name = optStr(b, "name");
    if (name !== undefined && !NAME_RE.test(name))
      throw new InvalidArgumentError(
        "name must be 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit",
      );
    const user = optStr(b, "user");
    if (user !== undefined && user !== SANDBOX_USER)
      throw new InvalidArgumentError(`user must be '${SANDBOX_USER}' (the only user the templates have)`);
    const env = optMap(b, "env") ?? {};
    const labels = optMap(b, "labels") ?? {};
    checkMetadata("labels", labels);
    labels[LANGUAGE_LABEL] ??= "python";
    optInt(b, "cpu", 1, 256);
    optInt(b, "memory", 1, 4096);
    const disk = optInt(b, "disk", 1, 65_536) ?? DEFAULT_DISK_GIB;
    const isPublic = optBool(b, "public") ?? false;
    const networkBlockAll = optBool(b, "networkBlockAll") ?? false;
    const networkAllowList = optStr(b, "networkAllowList");
    for (const k of ["domainAllowList", "outboundProxyUrl", "otelEndpointOverride"]) optStr(b, k);
    optBool(b, "spot");
    const target = optStr(b, "target") ?? "";
    const autoStop = optInt(b, "autoStopInterval", 0, MAX_INTERVAL_MIN) ?? DEFAULT_AUTO_STOP_MIN;
    const autoArchive = normalizeAutoArchive(
      optInt(b, "autoArchiveInterval", 0, MAX_INTERVAL_MIN) ?? DEFAULT_AUTO_ARCHIVE_MIN,
    );
    let autoDelete = normalizeAutoDelete(
      optInt(b, "autoDeleteInterval", -MAX_INTERVAL_MIN, MAX_INTERVAL_MIN) ?? DEFAULT_AUTO_DELETE_MIN,
    );
    if (optBool(b, "ephemeral") === true) autoDelete = 0;

    const owner = req.daytonaOwner;
    if (name !== undefined && (await nameTaken(ctx.db, owner, name)))
      throw new GatewayError("already_exists", `Sandbox with name ${name} already exists`);
    const { snapshot, templateId } =
      info !== undefined
        ? await builtImage(ctx, req.daytonaKeyId, owner, info, abortOnDisconnect(reply))
        : await snapshotTemplate(ctx, req.daytonaKeyId, owner, optStr(b, "snapshot") || DEFAULT_TEMPLATE_ID);
    const res = await createSandbox(
      ctx.deps,
      create(CreateSandboxRequestSchema, {
        templateId,
        metadata: { [ORG_METADATA_KEY]: organizationIdOf(owner) },
        envVars: env,
        type: NATIVE_TYPE,
        ...nativeLifecycleValues({ autoStop, autoArchive, autoDelete }),
      }),
      { owner: req.daytonaKeyId },
    );
    const sb = res.sandbox!;
    let row: Awaited<ReturnType<typeof insertDaytonaSandbox>>;
    try {
      row = await insertDaytonaSandbox(ctx.db, {
        sandbox_id: sb.sandboxId,
        owner_sha256: owner,
        name: name ?? sb.sandboxId,
        snapshot,
        os_user: SANDBOX_USER,
        labels,
        env,
        cpu: sb.cpuCount,
        memory_gib: Math.max(1, Math.round(sb.memoryMib / 1024)),
        disk_gib: disk,
        public: isPublic,
        network_block_all: networkBlockAll,
        network_allow_list: networkAllowList ?? null,
        target,
        state: "started",
        preview_token: randomBytes(24).toString("base64url"),
      });
    } catch (err) {
      await discard(ctx, sb.sandboxId);
      throw err;
    }
    if (row === undefined) {
      // Another create took the name meanwhile.
      await discard(ctx, sb.sandboxId);
      throw new GatewayError("already_exists", `Sandbox with name ${name ?? sb.sandboxId} already exists`);
    }
    ctx.logger.info({ "sandbox.id": sb.sandboxId, snapshot }, "daytona sandbox created");
    ctx.events.created(row, requestOrigin(req), sb);
    return fullDto(req, row, sb);
  });
}

/**
 * The template a `snapshot` names: the caller's Daytona snapshot of that name or id (which
 * must be active), else a dnah template of that name (`base`, one of the key's own).
 */
async function snapshotTemplate(
  ctx: DaytonaContext,
  keyId: string,
  owner: string,
  snapshot: string,
): Promise<{ snapshot: string; templateId: string }> {
  const found = await findSnapshot(ctx.db, owner, snapshot);
  if (found === undefined) return { snapshot, templateId: snapshot };
  const row = await current(ctx, found, keyId);
  if (row.state !== "active") throw new InvalidArgumentError(`Snapshot ${snapshot} is ${row.state}`);
  await touchSnapshot(ctx.db, row.id);
  return { snapshot: row.name, templateId: row.template_id };
}

/**
 * `buildInfo` (`daytona.create({image})`): the image is built as a template of the key's
 * named by its Dockerfile and contexts (equal images share it, so a second create is a cache
 * hit) and the create waits for the build. The sandbox is answered `started` once built and
 * running (no `pending_build` phase: the SDK then just waits; `GET
 * /sandbox/{id}/build-logs-url` gives the build's log afterwards). A failed build is a 400
 * with the build's reason.
 */
async function builtImage(
  ctx: DaytonaContext,
  keyId: string,
  owner: string,
  info: BuildInfo,
  signal: AbortSignal,
): Promise<{ snapshot: string; templateId: string }> {
  const templateId = imageTemplateId(keyId, info);
  let template: Template | undefined;
  try {
    template = await getTemplate(ctx.deps, templateId, { owner: keyId, signal });
  } catch (err) {
    if (!(err instanceof GatewayError && err.kind === "not_found")) throw err;
  }
  if (template?.status === "ready") return { snapshot: templateId, templateId };
  const buildId =
    template?.status === "building"
      ? template.latestBuildId
      : (await startBuild(ctx, keyId, owner, templateId, info, { cpu: 0, memoryMib: 0 }, signal)).build!
          .buildId;
  const build = await waitForBuild(ctx, keyId, templateId, buildId, signal);
  if (build.status !== TemplateBuildStatus.READY)
    throw new InvalidArgumentError(
      `the image build failed (build_failed): ${build.reason || "unknown reason"}`,
    );
  return { snapshot: templateId, templateId };
}

async function discard(ctx: DaytonaContext, sandboxId: string): Promise<void> {
  await deleteSandbox(ctx.deps, create(DeleteSandboxRequestSchema, { sandboxId })).catch((err: unknown) =>
    ctx.logger.error({ err, "sandbox.id": sandboxId }, "cannot delete a sandbox that was not recorded"),
  );
}
