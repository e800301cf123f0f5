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
import { findTemplate, readStartSpec } from "../template/build.js";
import { agentRequest, waitForAgent, warmUp } from "../vsock/agent-http.js";
import { startLogTail, waitForGuestPort } from "../vsock/ready-port.js";

export async function createVm(
  ctx: VmmContext,
  req: CreateVmRequest,
): Promise<MessageInitShape<typeof CreateVmResponseSchema>> {
  const id = checkSandboxId(req.sandboxId);
  if (req.cpuCount > 64 || req.memoryMib > 1024 * 1024)
    throw new InvalidArgumentError("cpu or memory too large");
  const template = findTemplate(ctx.cfg.cacheDir, req.templateId, ctx.cfg.debianMirror);
  if (!template) throw new TemplateNotFoundError(req.templateId);
  const start = await readStartSpec(template.rootfsDir).catch((err: Error) => {
    throw new GuestUnavailableError(`template '${req.templateId}' is broken: ${err.message}`, { cause: err });
  });
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
    try {
      await waitForAgent(vm.vsockPath, ctx.cfg.bootTimeoutMs, () => ctx.runtime.isRunning(id));
      const init = await agentRequest(vm.vsockPath, "POST", "/init", {
        envVars: req.envVars,
        defaultUser: "user",
        sandboxId: id,
        templateId: req.templateId,
      });
      if (init.status >= 300)
        throw new GuestUnavailableError(`agent refused /init: ${init.status} ${init.body}`);
      if (start?.readyPort !== undefined) {
        // The agent runs the template's start command from its boot on; the sandbox is
        // handed out (or pooled) only once that command serves, within a boot-timeout window
        // of its own.
        const readyStarted = performance.now();
        await waitForGuestPort(vm.vsockPath, start.readyPort, ctx.cfg.bootTimeoutMs, () =>
          ctx.runtime.isRunning(id),
        ).catch(async (err: Error) => {
          const output = await startLogTail(vm.vsockPath);
          ctx.logger.warn(
            { "sandbox.id": id, command: start.command, output },
            "start command never got ready",
          );
          throw new GuestUnavailableError(
            `template '${req.templateId}' start command (${start.command}) is not ready: ${err.message}`,
            { cause: err },
          );
        });
        ctx.logger.debug(
          { "sandbox.id": id, readyMs: Math.round(performance.now() - readyStarted) },
          "start command ready",
        );
      }
      if (req.background) {
        // Nobody waits for a warm-pool boot: spend the time warming the agent up.
        const problem = await warmUp(vm.vsockPath);
        if (problem) ctx.logger.warn({ "sandbox.id": id, problem }, "agent warm-up failed");
        await ctx.runtime.setForeground(id);
      }
    } catch (err) {
      await ctx.runtime
        .destroy(id)
        .catch((e: Error) =>
          ctx.logger.error({ "sandbox.id": id, err: e.message }, "destroy after failed boot failed"),
        );
      throw err;
    }
    const bootMs = Math.round(performance.now() - started);
    ctx.vms.set(id, { vm, bootMs, cpuCount, memoryMib });
    ctx.logger.info({ "sandbox.id": id, template: req.templateId, bootMs }, "sandbox started");
    return { vm: { sandboxId: id, templateId: req.templateId, runtime: ctx.runtime.name, bootMs } };
  } finally {
    ctx.busy.delete(id);
  }
}
