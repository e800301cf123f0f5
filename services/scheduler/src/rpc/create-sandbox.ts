import type { MessageInitShape } from "@bufbuild/protobuf";
import type {
  CreateSandboxRequest,
  CreateSandboxResponseSchema,
} from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { Context } from "../context.js";
import {
  claimPooledSandbox,
  getTemplate,
  insertEvent,
  markFailed,
  type SandboxRow,
  type TemplateRow,
} from "../db/queries.js";
import { TemplateNotFoundError, WrongStateError } from "../domain/errors.js";
import { describeLifecycle, type LifecycleSettings, PRESETS, resolveLifecycle } from "../domain/lifecycle.js";
import { isVisible } from "../domain/templates.js";
import { checkLabels, checkStringMap, requireId } from "../domain/validate.js";
import { boot, deleteVm, errorDetail, logFields, type Owner, reserveSandbox } from "../provision.js";
import { lifecycleOverridesOf, lifecycleTypeOf, toRecord } from "../records.js";

export async function createSandbox(
  ctx: Context,
  req: CreateSandboxRequest,
): Promise<MessageInitShape<typeof CreateSandboxResponseSchema>> {
  const templateId = requireId("template_id", req.templateId);
  checkStringMap("metadata", req.metadata);
  checkStringMap("env_vars", req.envVars, true);
  const template = await resolveTemplate(ctx, templateId);
  if (!isVisible(template, req.owner)) throw new TemplateNotFoundError(templateId);
  if (template.status !== "ready")
    throw new WrongStateError(`template '${template.id}' has no successful build yet`);
  const owner: Owner = {
    metadata: req.metadata,
    envVars: req.envVars,
    lifecycle: lifecycleOf(req, ctx.clock.now()),
    hostLabels: checkLabels("host_labels", req.hostLabels),
  };

  const warm = await claimWarm(ctx, template, owner);
  if (warm !== undefined) {
    await created(ctx, warm, "from the warm pool");
    return { sandbox: toRecord(warm), pooled: true };
  }

  const started = ctx.clock.now();
  const row = await reserveSandbox(ctx, template, owner);
  try {
    const running = await boot(ctx, row);
    ctx.logger.info(
      { ...logFields(row), "template.id": template.id, bootMs: ctx.clock.now() - started },
      "sandbox started cold",
    );
    await created(ctx, running, "cold");
    return { sandbox: toRecord(running), pooled: false };
  } catch (err) {
    ctx.logger.warn({ ...logFields(row), err }, "cold start failed");
    throw err;
  }
}

/**
 * Claims a warm sandbox and hands it the owner's environment. One that cannot be configured
 * is discarded (a cold start follows) rather than handed out without its variables.
 */
async function claimWarm(ctx: Context, template: TemplateRow, owner: Owner): Promise<SandboxRow | undefined> {
  const row = await claimPooledSandbox(ctx.db, template.id, {
    ...owner,
    lifecycle: owner.lifecycle ?? PRESETS.persistent,
    hostDeadAfterMs: ctx.cfg.hostDeadAfterMs,
  });
  if (row === undefined) return undefined;
  ctx.kickRefill();
  if (Object.keys(owner.envVars).length > 0) {
    try {
      await ctx
        .vmm(row.vmmUrl)
        .configureVm({ sandboxId: row.id, envVars: owner.envVars }, { timeoutMs: ctx.cfg.vmmCallTimeoutMs });
    } catch (err) {
      ctx.logger.warn(
        { ...logFields(row), err },
        "claimed warm sandbox could not be configured; discarding it",
      );
      await markFailed(ctx.db, row.id, `ConfigureVm: ${errorDetail(err)}`);
      ctx.background("cleanup of a discarded warm sandbox", logFields(row), () => deleteVm(ctx, row));
      return undefined;
    }
  }
  ctx.logger.info({ ...logFields(row), "template.id": template.id }, "sandbox claimed from the warm pool");
  return row;
}

function created(ctx: Context, row: SandboxRow, how: string): Promise<void> {
  const l = row.lifecycle;
  return insertEvent(ctx.db, {
    sandboxId: row.id,
    kind: "created",
    toState: "running",
    actor: "api",
    detail: `${how}; ${describeLifecycle(l)}`,
  });
}

/** The request's preset (persistent when unspecified) with its explicit values laid over it. */
function lifecycleOf(req: CreateSandboxRequest, nowMs: number): LifecycleSettings {
  return resolveLifecycle(lifecycleTypeOf(req.type), lifecycleOverridesOf(req), nowMs);
}

const TEMPLATE_CACHE_MS = 2_000;

async function resolveTemplate(ctx: Context, templateId: string): Promise<TemplateRow> {
  const now = ctx.clock.now();
  const hit = ctx.templateCache.get(templateId);
  if (hit !== undefined && now - hit.at < TEMPLATE_CACHE_MS) return hit.row;
  const row = await getTemplate(ctx.db, templateId);
  if (row === undefined) {
    ctx.templateCache.delete(templateId);
    throw new TemplateNotFoundError(templateId);
  }
  if (ctx.templateCache.size > 1_000) ctx.templateCache.clear();
  ctx.templateCache.set(templateId, { row, at: now });
  return row;
}
