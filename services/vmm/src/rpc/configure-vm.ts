import type { ConfigureVmRequest } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import type { VmmContext } from "../context.js";
import { checkSandboxId, GuestUnavailableError, VmNotFoundError } from "../domain/errors.js";
import { agentRequest } from "../vsock/agent-http.js";

export async function configureVm(ctx: VmmContext, req: ConfigureVmRequest): Promise<Record<string, never>> {
  const id = checkSandboxId(req.sandboxId);
  const rec = ctx.vms.get(id);
  if (!rec) throw new VmNotFoundError(id);
  const res = await agentRequest(rec.vm.vsockPath, "POST", "/init", { envVars: req.envVars });
  if (res.status >= 300) throw new GuestUnavailableError(`agent refused /init: ${res.status} ${res.body}`);
  return {};
}
