import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  BuildTemplateRequest,
  BuildTemplateResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import { getTemplate, hostLoads, type Queryable, type TemplateRow } from "../db/queries.js";
import {
  type BuildRow,
  getBuild,
  insertBuild,
  insertTemplate,
  lockTemplate,
  lockTemplateNames,
  namesTaken,
  runningBuildOf,
  startRebuild,
  startWaitingBuild,
  storedTemplateFiles,
  supersedeWaitingBuilds,
} from "../db/template-queries.js";
import {
  AlreadyExistsError,
  InvalidArgumentError,
  PermissionDeniedError,
  TemplateNotFoundError,
  WrongStateError,
} from "../domain/errors.js";
import { newBuildId } from "../domain/ids.js";
import {
  type BuildSpec,
  checkAliases,
  checkOwner,
  checkStart,
  checkSteps,
  checkTemplateName,
  chooseBuildHost,
  contextHashes,
  isVisible,
} from "../domain/templates.js";
import { checkCount, requireId } from "../domain/validate.js";
import { startBuild } from "../template-builds.js";
import { toBuildRecord, toTemplateRecord } from "../template-records.js";

const DEFAULT_BASE = "base";

type Response = MessageInitShape<typeof BuildTemplateResponseSchema>;

/**
 * Creates or updates the template `name` (owned by the caller) and starts a build of it on a
 * host that holds its base; answers at once, the build goes on in the background. With
 * `reserve`, only the template and a 'waiting' build are recorded (E2B's builder asks for a
 * build id before it sends the steps); a later call with that `build_id` starts it.
 */
export async function buildTemplate(ctx: Context, req: BuildTemplateRequest): Promise<Response> {
  const owner = checkOwner(req.owner);
  const name = checkTemplateName("name", req.name);
  const aliases = checkAliases(req.aliases, name);
  checkCount("cpu_count", req.cpuCount);
  checkCount("memory_mib", req.memoryMib);
  if (req.reserve) {
    if (req.buildId !== "") throw new InvalidArgumentError("reserve and build_id do not go together");
    if (req.steps.length > 0 || req.start !== undefined)
      throw new InvalidArgumentError("a reserved build takes its steps when it starts (build_id)");
    return reserve(ctx, req, owner, name, aliases);
  }
  const waiting = req.buildId === "" ? undefined : requireId("build_id", req.buildId);
  const steps = checkSteps(req.steps);
  const start = checkStart(req.start);

  const baseRef = req.baseTemplateId === "" ? DEFAULT_BASE : req.baseTemplateId;
  const base = await getTemplate(ctx.db, baseRef);
  if (base === undefined || !isVisible(base, owner))
    throw new TemplateNotFoundError(baseRef, `base template '${baseRef}' not found`);
  if (base.status !== "ready")
    throw new WrongStateError(`base template '${base.id}' has no successful build yet`);
  const hashes = contextHashes(steps);
  const stored = await storedTemplateFiles(ctx.db, hashes);
  const missing = hashes.find((h) => !stored.has(h));
  if (missing !== undefined)
    throw new TemplateNotFoundError(missing, `build context ${missing} is not uploaded (PutTemplateFiles)`);

  const buildId = waiting ?? newBuildId();
  const { template, build, vmmUrl } = await ctx.db.transaction(async (tx) => {
    const cur = await claimName(tx, name, aliases, owner, buildId);
    if (base.id === name) throw new InvalidArgumentError(`template '${name}' cannot be built from itself`);
    // A reserved build keeps the sizes it was reserved with unless this call gives others.
    let reserved: Pick<BuildSpec, "cpuCount" | "memoryMib"> | undefined;
    if (waiting !== undefined) {
      const w = cur && (await getBuild(tx, name, waiting));
      if (w === undefined)
        throw new TemplateNotFoundError(name, `build '${waiting}' of template '${name}' not found`);
      if (w.status !== "waiting") throw new WrongStateError(`build '${waiting}' is ${w.status}, not waiting`);
      reserved = w.spec;
    }
    const { now, hosts } = await hostLoads(tx);
    const host = chooseBuildHost(hosts, now, ctx.cfg.hostDeadAfterMs, {
      templateId: name,
      baseTemplateId: base.id,
      baseIsBuilt: base.readyBuildId !== null,
      policy: ctx.cfg.placementPolicy,
      cpuOvercommit: ctx.cfg.cpuOvercommit,
      minFreeDiskMib: ctx.cfg.minFreeDiskMib,
    });
    const spec: BuildSpec = {
      baseTemplateId: base.id,
      steps,
      start,
      // 0: the template's current size (when it has a good build), or its base's.
      cpuCount: req.cpuCount || reserved?.cpuCount || (cur?.readyBuildId ? cur.cpuCount : 0) || base.cpuCount,
      memoryMib:
        req.memoryMib || reserved?.memoryMib || (cur?.readyBuildId ? cur.memoryMib : 0) || base.memoryMib,
      force: req.force,
    };
    const template = await upsertTemplate(tx, cur, {
      id: name,
      aliases,
      owner,
      public: req.public,
      cpuCount: spec.cpuCount,
      memoryMib: spec.memoryMib,
      baseTemplateId: base.id,
      latestBuildId: buildId,
    });
    const build =
      waiting !== undefined
        ? await startWaitingBuild(tx, waiting, { hostId: host.hostId, spec })
        : await insertBuild(tx, {
            id: buildId,
            templateId: name,
            status: "building",
            hostId: host.hostId,
            spec,
          });
    return { template, build: build!, vmmUrl: host.vmmUrl };
  });
  ctx.templateCache.clear();
  ctx.logger.info(
    { "template.id": name, "build.id": buildId, "host.id": build.hostId, steps: steps.length },
    "template build started",
  );
  startBuild(ctx, { buildId, templateId: name, hostId: build.hostId, vmmUrl, spec: build.spec });
  return { template: toTemplateRecord(template), build: toBuildRecord(build) };
}

/** Records the template and a 'waiting' build, to be started later by its id. */
async function reserve(
  ctx: Context,
  req: BuildTemplateRequest,
  owner: string,
  name: string,
  aliases: string[],
): Promise<Response> {
  const buildId = newBuildId();
  const { template, build } = await ctx.db.transaction(async (tx) => {
    const cur = await claimName(tx, name, aliases, owner, buildId);
    const spec: BuildSpec = {
      baseTemplateId: "",
      steps: [],
      start: null,
      cpuCount: req.cpuCount,
      memoryMib: req.memoryMib,
      force: req.force,
    };
    // Sizes are known once the base is: a new template gets placeholders until its build starts.
    const template = await upsertTemplate(tx, cur, {
      id: name,
      aliases,
      owner,
      public: req.public,
      cpuCount: req.cpuCount || 1,
      memoryMib: req.memoryMib || 512,
      baseTemplateId: null,
      latestBuildId: buildId,
    });
    const build: BuildRow = await insertBuild(tx, {
      id: buildId,
      templateId: name,
      status: "waiting",
      hostId: "",
      spec,
    });
    return { template, build };
  });
  ctx.templateCache.clear();
  ctx.logger.info({ "template.id": name, "build.id": buildId }, "template build reserved");
  return { template: toTemplateRecord(template), build: toBuildRecord(build) };
}

/**
 * Under the template-name lock: the caller may (re)build `name` with these aliases — not a
 * built-in, not another key's, no build of it running, no name taken by another template.
 * Reserved builds other than `buildId` are superseded. Returns the current row, if any.
 */
async function claimName(
  tx: Queryable,
  name: string,
  aliases: readonly string[],
  owner: string,
  buildId: string,
): Promise<TemplateRow | undefined> {
  await lockTemplateNames(tx);
  const cur = await lockTemplate(tx, name);
  if (cur?.builtin)
    throw new PermissionDeniedError(`template '${name}' is built in; build your own template from it`);
  if (cur !== undefined && cur.owner !== owner)
    throw new AlreadyExistsError(`template name '${name}' is taken`);
  if (cur !== undefined) {
    const running = await runningBuildOf(tx, name);
    if (running !== undefined)
      throw new WrongStateError(
        `template '${name}' is being built (build ${running.id}); cancel that build or wait for it`,
      );
    await supersedeWaitingBuilds(tx, name, buildId, buildId);
  }
  const taken = await namesTaken(tx, [name, ...aliases], name);
  if (taken.length > 0) throw new AlreadyExistsError(`name '${taken[0]!.name}' is taken by another template`);
  return cur;
}

function upsertTemplate(
  tx: Queryable,
  cur: TemplateRow | undefined,
  t: Parameters<typeof insertTemplate>[1],
): Promise<TemplateRow> {
  return cur === undefined
    ? insertTemplate(tx, t)
    : startRebuild(tx, t.id, { aliases: t.aliases, public: t.public, latestBuildId: t.latestBuildId });
}
