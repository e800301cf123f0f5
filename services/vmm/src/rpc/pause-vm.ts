import type { MessageInitShape } from "@bufbuild/protobuf";
import type { PauseVmRequest, PauseVmResponseSchema } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { checkSandboxId, VmNotFoundError, VmStateError } from "../domain/errors.js";

/**
 * Pauses a sandbox: the jail freezes its processes in place (memory stays resident), a
 * microVM runtime may write its memory to the host and end the VM (stop-snap); the response
 * says which. Open tunnels to it are cut once it is paused, so kept-alive connections fail
 * fast instead of hanging; new ones are refused (409) until it resumes.
 */
export async function pauseVm(
  ctx: VmmContext,
  req: PauseVmRequest,
): Promise<MessageInitShape<typeof PauseVmResponseSchema>> {
  const id = checkSandboxId(req.sandboxId);
  if (!ctx.vms.has(id)) throw new VmNotFoundError(id);
  if (ctx.busy.has(id)) throw new VmStateError(`sandbox '${id}' is being deleted`);
  if (ctx.runtime.isPaused(id)) throw new VmStateError(`sandbox '${id}' is already paused`);
  const started = performance.now();
  await ctx.runtime.pause(id);
  const severed = ctx.tunnels.sever(id);
  const memoryReleased = ctx.runtime.pauseReleasesMemory;
  ctx.logger.info(
    {
      "sandbox.id": id,
      ms: Math.round(performance.now() - started),
      severedTunnels: severed,
      memoryReleased,
    },
    "sandbox paused",
  );
  return { memoryReleased };
}
