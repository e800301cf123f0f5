import type { VmmContext } from "../context.js";

export function getHostInfo(ctx: VmmContext) {
  return {
    hostId: ctx.cfg.hostId,
    runtime: ctx.runtime.name,
    capacitySandboxes: ctx.cfg.capacitySandboxes,
    runningSandboxes: ctx.vms.size,
    isolation: ctx.runtime.isolation,
  };
}
