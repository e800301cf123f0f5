import type { VmmContext } from "../context.js";

export function listVms(ctx: VmmContext) {
  return {
    vms: [...ctx.vms.values()].map((r) => ({
      sandboxId: r.vm.sandboxId,
      templateId: r.vm.templateId,
      runtime: ctx.runtime.name,
      bootMs: r.bootMs,
      paused: ctx.runtime.isPaused(r.vm.sandboxId),
    })),
  };
}
