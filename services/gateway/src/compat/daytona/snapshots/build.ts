import { createHash } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type BuildTemplateResponse,
  type TemplateBuild,
  TemplateBuildStatus,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { InvalidArgumentError } from "../../../errors.js";
import type { Json } from "../../../rest/body.js";
import { buildTemplate } from "../../../rpc/build-template.js";
import { getTemplateBuild } from "../../../rpc/get-template-build.js";
import { putTemplateFiles } from "../../../rpc/put-template-files.js";
import { parseDockerfile } from "../../../templates/dockerfile.js";
import type { DaytonaContext } from "../context.js";
import { contexts } from "./db.js";
import { joinTars } from "./tar.js";

/**
 * A Daytona `buildInfo` (`{dockerfileContent, contextHashes}`, what the SDK's `Image` sends)
 * as a dnah template build: the Dockerfile subset of templates/dockerfile.ts (FROM a dnah
 * template — `Image.base("base")` —, RUN, COPY, ENV, WORKDIR, USER, CMD/ENTRYPOINT), with the
 * context tars the SDK uploaded to the gateway's S3 store joined into one context.
 *
 * ENTRYPOINT/CMD become the template's start command with no ready check: as in Daytona, the
 * sandbox is `started` once its agent answers, and the entrypoint runs in the background (it
 * may not listen yet).
 */
export interface BuildInfo {
  dockerfileContent: string;
  contextHashes: string[];
}

const MD5_RE = /^[0-9a-f]{32}$/;
const MAX_CONTEXTS = 256;
/** The build's state is asked for this often while a caller waits for it. */
const WAIT_POLL_MS = 500;

/** `buildInfo` from a request body; undefined when absent. */
export function buildInfoOf(b: Json): BuildInfo | undefined {
  const v = b.buildInfo;
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "object" || Array.isArray(v))
    throw new InvalidArgumentError("buildInfo must be an object");
  const o = v as Json;
  if (typeof o.dockerfileContent !== "string" || o.dockerfileContent.trim() === "")
    throw new InvalidArgumentError("buildInfo.dockerfileContent must be a non-empty string");
  const hashes = o.contextHashes ?? [];
  if (
    !Array.isArray(hashes) ||
    hashes.length > MAX_CONTEXTS ||
    hashes.some((h) => typeof h !== "string" || !MD5_RE.test(h))
  )
    throw new InvalidArgumentError(
      `buildInfo.contextHashes must be an array of up to ${MAX_CONTEXTS} context hashes`,
    );
  return { dockerfileContent: o.dockerfileContent, contextHashes: hashes as string[] };
}

/** Daytona's entrypoint of a Dockerfile: its last ENTRYPOINT (JSON array, or the text). */
export function entrypointOf(dockerfile: string): string[] | null {
  let last: string | undefined;
  for (const line of dockerfile.split(/\r?\n/)) {
    const m = /^\s*ENTRYPOINT\s+(.*)$/i.exec(line);
    if (m !== null) last = m[1]!.trim();
  }
  if (last === undefined) return null;
  try {
    const v: unknown = JSON.parse(last);
    if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v as string[];
  } catch {
    // Not JSON: the shell form.
  }
  return [last.replace(/^["']|["']$/g, "")];
}

/** A template name for an image built outside a snapshot: equal images (per key) share it. */
export function imageTemplateId(keyId: string, info: BuildInfo): string {
  const h = createHash("sha256")
    .update(
      `dnah-daytona-image\0${keyId}\0${info.dockerfileContent}\0${[...info.contextHashes].sort().join(",")}`,
    )
    .digest("hex");
  return `daytona-img-${h.slice(0, 40)}`;
}

/**
 * Starts the build of template `templateId` (the caller's; created when new) from `info`.
 * `cpu`/`memoryMib` 0 keep the base's.
 */
export async function startBuild(
  ctx: DaytonaContext,
  keyId: string,
  ownerSha256: string,
  templateId: string,
  info: BuildInfo,
  resources: { cpu: number; memoryMib: number },
  signal?: AbortSignal,
): Promise<BuildTemplateResponse> {
  const call = { owner: keyId, ...(signal ? { signal } : {}) };
  let contextSha256: string | undefined;
  if (info.contextHashes.length > 0) {
    const found = await contexts(ctx.db, ownerSha256, info.contextHashes);
    const missing = info.contextHashes.find((h) => !found.has(h));
    if (missing !== undefined)
      throw new InvalidArgumentError(
        `build context ${missing} is not uploaded (push it through /object-storage/push-access first)`,
      );
    const joined = joinTars(info.contextHashes.map((h) => found.get(h)!));
    contextSha256 = createHash("sha256").update(joined).digest("hex");
    await putTemplateFiles(ctx.deps, contextSha256, joined, call);
  }
  const parsed = parseDockerfile(info.dockerfileContent, contextSha256);
  return buildTemplate(
    ctx.deps,
    {
      name: templateId,
      aliases: [],
      public: false,
      from: parsed.from,
      steps: parsed.steps,
      start: parsed.start,
      cpuCount: resources.cpu,
      memoryMib: resources.memoryMib,
      force: false,
    },
    call,
  );
}

/** Whether a build is still going. */
export function building(b: TemplateBuild | undefined): boolean {
  return b?.status === TemplateBuildStatus.BUILDING || b?.status === TemplateBuildStatus.WAITING;
}

/** Waits for a build to end (polling the scheduler); the build as it ended. */
export async function waitForBuild(
  ctx: DaytonaContext,
  keyId: string,
  templateId: string,
  buildId: string,
  signal: AbortSignal,
): Promise<TemplateBuild> {
  for (;;) {
    const res = await getTemplateBuild(
      ctx.deps,
      { templateId, buildId, logsOffset: LOGS_NONE },
      { owner: keyId, signal },
    );
    if (!building(res.build)) return res.build!;
    await sleep(WAIT_POLL_MS, undefined, { signal });
  }
}

/** A log offset past any build's log: asks for the build's state only (the scheduler's offset is an int4). */
export const LOGS_NONE = 2 ** 31 - 1;
