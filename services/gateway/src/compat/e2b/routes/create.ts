import { create } from "@bufbuild/protobuf";
import {
  CreateSandboxRequestSchema,
  GetSnapshotRequestSchema,
  RestoreSnapshotRequestSchema,
  type Sandbox,
  type Snapshot,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { FastifyInstance } from "fastify";
import { InvalidArgumentError, SnapshotNotFoundError, TemplateNotFoundError } from "../../../errors.js";
import { optStringMap, reqString } from "../../../rest/body.js";
import { createSandbox } from "../../../rpc/create-sandbox.js";
import { getSnapshot } from "../../../rpc/get-snapshot.js";
import { restoreSnapshot } from "../../../rpc/restore-snapshot.js";
import { adoptE2bSandbox } from "../adopt.js";
import { e2bBody, optBool, optInt32 } from "../body.js";
import type { E2bContext } from "../context.js";
import { refuseMemoryless } from "../lifecycle.js";
import { e2bTags } from "../template-db.js";
import { DEFAULT_TAG } from "../template-steps.js";
import { DEFAULT_TIMEOUT_S, sandboxJson } from "../views.js";

/**
 * `POST /v2/sandboxes` (SDK 2.51) and `POST /sandboxes` (SDK ≤ 2.50): creates a sandbox, sets
 * its envd access token and answers 201 `Sandbox`. `templateID` names a template or, failing
 * that, a snapshot (id or name: E2B's `Sandbox.create(snapshotId)`), which is then restored
 * after its signature and files are verified. `timeout` is recorded as `endAt`; then
 * timeouts.ts kills the sandbox, or pauses it when `autoPause` is set (SDK `lifecycle:
 * {onTimeout: "pause"}`). `autoPauseMemory: false` and `autoResume.enabled: true` are refused
 * (not supported); the other fields are checked for type only.
 */
export async function createRoute(app: FastifyInstance, ctx: E2bContext): Promise<void> {
  for (const url of ["/v2/sandboxes", "/sandboxes"]) {
    app.post(url, { config: { e2bApi: true } }, async (req, reply) => {
      const body = e2bBody(req.body);
      const templateId = reqString(body, "templateID");
      if (templateId === "") throw new InvalidArgumentError("'templateID' must not be empty");
      const timeout = optInt32(body, "timeout") ?? DEFAULT_TIMEOUT_S;
      if (timeout <= 0) throw new InvalidArgumentError("'timeout' must be a positive number of seconds");
      for (const k of ["secure", "allow_internet_access"]) optBool(body, k);
      const onTimeout = optBool(body, "autoPause") === true ? "pause" : "kill";
      refuseMemoryless(optBool(body, "autoPauseMemory"), "autoPauseMemory");
      refuseAutoResume(body.autoResume);
      const { sandbox, proofToken } = await createOrRestore(
        ctx,
        await resolveTemplateRef(ctx, templateId),
        req.apiKeyId,
        optStringMap(body, "metadata") ?? {},
        optStringMap(body, "envVars") ?? {},
      );
      const token = await adoptE2bSandbox(ctx, sandbox.sandboxId, timeout, onTimeout, proofToken);
      return reply.code(201).send(sandboxJson(sandbox, token));
    });
  }
}

/** `autoResume: {enabled}`: resuming on traffic is not implemented; a paused sandbox answers 502. */
function refuseAutoResume(v: unknown): void {
  if (v === undefined || v === null) return;
  if (typeof v !== "object" || Array.isArray(v))
    throw new InvalidArgumentError("'autoResume' must be an object");
  const enabled = (v as Record<string, unknown>).enabled;
  if (enabled !== undefined && typeof enabled !== "boolean")
    throw new InvalidArgumentError("'autoResume.enabled' must be a boolean");
  if (enabled === true)
    throw new InvalidArgumentError("'autoResume' is not supported: resume a paused sandbox with connect");
}

/**
 * A template first; an unknown template may be a snapshot. When it is not one either, the
 * caller hears about the template (what E2B says). `proofToken`: the source's access token,
 * which a clone restored with its memory still holds.
 */
async function createOrRestore(
  ctx: E2bContext,
  templateId: string,
  owner: string,
  metadata: Record<string, string>,
  envVars: Record<string, string>,
): Promise<{ sandbox: Sandbox; proofToken?: string }> {
  try {
    const res = await createSandbox(
      ctx.deps,
      create(CreateSandboxRequestSchema, { templateId, metadata, envVars }),
      { owner },
    );
    return { sandbox: res.sandbox! };
  } catch (err) {
    // An invalid template id may still be a snapshot name (`team/name@x`); if it is not, the
    // original error stands.
    if (!(err instanceof TemplateNotFoundError) && !(err instanceof InvalidArgumentError)) throw err;
    const snapshot = await findSnapshot(ctx, templateId);
    if (snapshot === undefined) throw err;
    const res = await restoreSnapshot(
      ctx.deps,
      create(RestoreSnapshotRequestSchema, { snapshotId: snapshot.snapshotId, metadata, envVars }),
    );
    return { sandbox: res.sandbox!, proofToken: ctx.tokens.tokenFor(snapshot.sandboxId) };
  }
}

async function findSnapshot(ctx: E2bContext, idOrName: string): Promise<Snapshot | undefined> {
  try {
    return (await getSnapshot(ctx.deps, create(GetSnapshotRequestSchema, { snapshotId: idOrName }))).snapshot;
  } catch (err) {
    // Not a snapshot, or not even spelled like one: the template error stands.
    if (err instanceof SnapshotNotFoundError || err instanceof InvalidArgumentError) return undefined;
    throw err;
  }
}

/**
 * `name:tag` (E2B's template reference) is the template `name` when it has that tag (`default`
 * always); anything else is looked up as it is (a template id or alias, or a snapshot).
 */
async function resolveTemplateRef(ctx: E2bContext, ref: string): Promise<string> {
  const m = /^([a-z0-9][a-z0-9._-]{0,62}):([a-z0-9][a-z0-9._-]{0,62})$/.exec(ref.toLowerCase());
  if (m === null) return ref;
  const [, name, tag] = m as unknown as [string, string, string];
  if (tag === DEFAULT_TAG || (await e2bTags(ctx.db, name)).some((t) => t.tag === tag)) return name;
  return ref;
}
