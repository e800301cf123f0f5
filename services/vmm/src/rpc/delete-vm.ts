import type { DeleteVmRequest } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { checkSandboxId, VmNotFoundError } from "../domain/errors.js";

export async function deleteVm(ctx: VmmContext, req: DeleteVmRequest): Promise<Record<string, never>> {
  const id = checkSandboxId(req.sandboxId);
  ctx.busy.add(id);
  try {
    await ctx.runtime.destroy(id);
    ctx.logger.info({ "sandbox.id": id }, "sandbox deleted");
  } catch (err) {
    // Deleting what is already gone succeeds: the caller may be retrying.
    if (!(err instanceof VmNotFoundError)) throw err;
  } finally {
    ctx.vms.delete(id);
    ctx.busy.delete(id);
  }
  return {};
}
