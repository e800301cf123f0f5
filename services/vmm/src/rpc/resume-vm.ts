import type { ResumeVmRequest } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { checkSandboxId, VmNotFoundError, VmStateError } from "../domain/errors.js";

/** Thaws a paused sandbox; its processes carry on where they stopped. */
export async function resumeVm(ctx: VmmContext, req: ResumeVmRequest): Promise<Record<string, never>> {
  const id = checkSandboxId(req.sandboxId);
  if (!ctx.vms.has(id)) throw new VmNotFoundError(id);
  if (ctx.busy.has(id)) throw new VmStateError(`sandbox '${id}' is being deleted`);
  if (!ctx.runtime.isPaused(id)) throw new VmStateError(`sandbox '${id}' is not paused`);
  const started = performance.now();
  await ctx.runtime.resume(id);
  ctx.logger.info({ "sandbox.id": id, ms: Math.round(performance.now() - started) }, "sandbox resumed");
  return {};
}
