import type { MessageInitShape } from "@bufbuild/protobuf";
import type { CreateVmRequest, CreateVmResponseSchema } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import {
  checkSandboxId,
  GuestUnavailableError,
  HostFullError,
  InvalidArgumentError,
  TemplateNotFoundError,
  VmExistsError,
} from "../domain/errors.js";
import { resolveTemplate } from "../template/user-templates.js";
import { bringUp } from "./bring-up.js";

export async function createVm(
  ctx: VmmContext,
  req: CreateVmRequest,
): Promise<MessageInitShape<typeof CreateVmResponseSchema>> {
  const id = checkSandboxId(req.sandboxId);
  if (req.cpuCount > 64 || req.memoryMib > 1024 * 1024)
    throw new InvalidArgumentError("cpu or memory too large");
  const resolved = await resolveTemplate(ctx.cfg.cacheDir, req.templateId, ctx.cfg.debianMirror).catch(
    (err: Error) => {
      throw new GuestUnavailableError(`template '${req.templateId}' is broken: ${err.message}`, {
        cause: err,
      });
    },
  );
  if (!resolved) throw new TemplateNotFoundError(req.templateId);
  const { image: template, start } = resolved;
  if (ctx.vms.has(id) || ctx.busy.has(id)) throw new VmExistsError(id);
  if (ctx.vms.size + ctx.busy.size >= ctx.cfg.capacitySandboxes)
    throw new HostFullError(ctx.cfg.capacitySandboxes);
  ctx.busy.add(id);
  const started = performance.now();
  const cpuCount = req.cpuCount || 1;
  const memoryMib = req.memoryMib || 512;
  try {
    const vm = await ctx.runtime.start({
      sandboxId: id,
      template,
      cpuCount,
      memoryMib,
      background: req.background,
    });
    await bringUp(ctx, vm, {
      templateId: req.templateId,
      // The template's ENV, then the sandbox's own variables over it.
      envVars: { ...resolved.env, ...req.envVars },
      start,
      background: req.background,
    });
    const bootMs = Math.round(performance.now() - started);
    ctx.vms.set(id, { vm, bootMs, cpuCount, memoryMib });
    ctx.logger.info({ "sandbox.id": id, template: req.templateId, bootMs }, "sandbox started");
    return { vm: { sandboxId: id, templateId: req.templateId, runtime: ctx.runtime.name, bootMs } };
  } finally {
    ctx.busy.delete(id);
  }
}
