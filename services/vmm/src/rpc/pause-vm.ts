import type { PauseVmRequest } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { checkSandboxId, VmNotFoundError, VmStateError } from "../domain/errors.js";

/**
 * Freezes every process of a sandbox. Open tunnels to it are cut once it is frozen, so kept-
 * alive connections fail fast instead of hanging; new ones are refused (409) until it resumes.
 */
export async function pauseVm(ctx: VmmContext, req: PauseVmRequest): Promise<Record<string, never>> {
  const id = checkSandboxId(req.sandboxId);
  if (!ctx.vms.has(id)) throw new VmNotFoundError(id);
  if (ctx.busy.has(id)) throw new VmStateError(`sandbox '${id}' is being deleted`);
  if (ctx.runtime.isPaused(id)) throw new VmStateError(`sandbox '${id}' is already paused`);
  const started = performance.now();
  await ctx.runtime.pause(id);
  const severed = ctx.tunnels.sever(id);
  ctx.logger.info(
    { "sandbox.id": id, ms: Math.round(performance.now() - started), severedTunnels: severed },
    "sandbox paused",
  );
  return {};
}
