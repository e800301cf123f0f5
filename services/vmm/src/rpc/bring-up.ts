import type { VmmContext } from "../context.js";
import { GuestUnavailableError } from "../domain/errors.js";
import type { RunningVm } from "../runtime/runtime.js";
import type { StartSpec } from "../template/recipes.js";
import { agentRequest, waitForAgent, warmUp } from "../vsock/agent-http.js";
import { waitForReadyCommand } from "../vsock/ready-command.js";
import { startLogTail, waitForGuestPort } from "../vsock/ready-port.js";

export interface BringUp {
  readonly templateId: string;
  readonly envVars: Readonly<Record<string, string>>;
  /** The template's start command, when it has one. */
  readonly start: (StartSpec & { readonly readyCommand?: string }) | undefined;
  readonly background: boolean;
}

/**
 * What a sandbox needs after its runtime started it, whether booted (CreateVm) or restored
 * (RestoreVm): the agent answers, learns its id, template and env vars (`/init`), and the
 * template's start command serves. On failure the sandbox is destroyed and the error thrown.
 */
export async function bringUp(ctx: VmmContext, vm: RunningVm, opts: BringUp): Promise<void> {
  const id = vm.sandboxId;
  try {
    await waitForAgent(vm.vsockPath, ctx.cfg.bootTimeoutMs, () => ctx.runtime.isRunning(id));
    const init = await agentRequest(vm.vsockPath, "POST", "/init", {
      envVars: opts.envVars,
      defaultUser: "user",
      sandboxId: id,
      templateId: opts.templateId,
    });
    if (init.status >= 300)
      throw new GuestUnavailableError(`agent refused /init: ${init.status} ${init.body}`);
    const start = opts.start;
    if (start && (start.readyPort !== undefined || start.readyCommand !== undefined)) {
      // The agent runs the template's start command from its boot on; the sandbox is
      // handed out (or pooled) only once that command serves (its port accepts, or its ready
      // command exits 0), within a boot-timeout window of its own.
      const readyStarted = performance.now();
      const alive = () => ctx.runtime.isRunning(id);
      const ready =
        start.readyPort !== undefined
          ? waitForGuestPort(vm.vsockPath, start.readyPort, ctx.cfg.bootTimeoutMs, alive)
          : waitForReadyCommand(vm.vsockPath, start.readyCommand!, start.user, ctx.cfg.bootTimeoutMs, alive);
      await ready.catch(async (err: Error) => {
        const output = await startLogTail(vm.vsockPath);
        ctx.logger.warn(
          { "sandbox.id": id, command: start.command, output },
          "start command never got ready",
        );
        throw new GuestUnavailableError(
          `template '${opts.templateId}' start command (${start.command}) is not ready: ${err.message}`,
          { cause: err },
        );
      });
      ctx.logger.debug(
        { "sandbox.id": id, readyMs: Math.round(performance.now() - readyStarted) },
        "start command ready",
      );
    }
    if (opts.background) {
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
}
