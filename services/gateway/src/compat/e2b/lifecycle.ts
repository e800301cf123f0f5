import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  ExpireAction,
  GetSandboxRequestSchema,
  PauseSandboxRequestSchema,
  ResumeSandboxRequestSchema,
  type Sandbox,
  SandboxState,
  UpdateLifecycleRequestSchema,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { FailedPreconditionError, InvalidArgumentError } from "../../errors.js";
import { getSandbox } from "../../rpc/get-sandbox.js";
import { pauseSandbox } from "../../rpc/pause-sandbox.js";
import { resumeSandbox } from "../../rpc/resume-sandbox.js";
import { updateLifecycle } from "../../rpc/update-lifecycle.js";
import type { E2bContext } from "./context.js";

/**
 * E2B's `timeout` is the native lifecycle's deadline (`expiresAt`): the scheduler's reaper
 * kills the sandbox when it passes, or pauses it when `onExpire` is stop (E2B's `autoPause`,
 * `lifecycle.onTimeout: "pause"`). A pause clears the deadline (a paused sandbox has none, as
 * in E2B); connect gives a resumed sandbox a fresh one. So the E2B timeout reads and changes
 * through the native API too (`GET /v1/sandboxes/{id}` → lifecycle.expiresAt).
 */

export type OnTimeout = "kill" | "pause";

/**
 * Sets the deadline to now + `timeoutS` (E2B's setTimeout; may shorten). The native API's 0
 * removes a deadline, while E2B's 0 means "now": it is sent as 1 s.
 */
export async function setE2bTimeout(
  ctx: E2bContext,
  sandboxId: string,
  timeoutS: number,
  onTimeout?: OnTimeout,
): Promise<Sandbox> {
  const { sandbox } = await updateLifecycle(
    ctx.deps,
    create(UpdateLifecycleRequestSchema, {
      sandboxId,
      expiresInSeconds: Math.max(1, timeoutS),
      ...(onTimeout !== undefined
        ? { onExpire: onTimeout === "pause" ? ExpireAction.STOP : ExpireAction.DELETE }
        : {}),
    }),
  );
  return sandbox!;
}

/** Moves the deadline to now + `timeoutS` unless it is later already (E2B connect). */
export async function extendE2bTimeout(ctx: E2bContext, s: Sandbox, timeoutS: number): Promise<void> {
  const at = s.lifecycle?.expiresAt;
  // No deadline (cleared through the native API): none is further away than any.
  if (at === undefined) return;
  if (timestampDate(at).getTime() >= Date.now() + timeoutS * 1000) return;
  await setE2bTimeout(ctx, s.sandboxId, timeoutS);
}

/** What the deadline does: E2B's `lifecycle.onTimeout`. */
export function onTimeoutOf(s: Sandbox): OnTimeout {
  return s.lifecycle?.onExpire === ExpireAction.STOP ? "pause" : "kill";
}

/**
 * Pauses a sandbox (native PauseSandbox: memory and disk kept; its deadline is cleared).
 * `already_paused` when it was (E2B's 409); a sandbox in any other non-running state is a
 * FailedPreconditionError.
 */
export async function pauseE2b(ctx: E2bContext, sandboxId: string): Promise<"paused" | "already_paused"> {
  try {
    await pauseSandbox(ctx.deps, create(PauseSandboxRequestSchema, { sandboxId }));
    return "paused";
  } catch (err) {
    if (!(err instanceof FailedPreconditionError)) throw err;
    const { sandbox } = await getSandbox(ctx.deps, create(GetSandboxRequestSchema, { sandboxId }));
    if (sandbox?.state !== SandboxState.PAUSED) throw err;
    return "already_paused";
  } finally {
    ctx.tunnels.forget(sandboxId);
  }
}

/**
 * Resumes a paused sandbox and gives it `timeoutS` more. A sandbox a concurrent call resumed
 * first counts as resumed too (both get the fresh deadline).
 */
export async function resumeE2b(ctx: E2bContext, sandboxId: string, timeoutS: number): Promise<Sandbox> {
  let sandbox: Sandbox | undefined;
  try {
    ({ sandbox } = await resumeSandbox(ctx.deps, create(ResumeSandboxRequestSchema, { sandboxId })));
  } catch (err) {
    if (!(err instanceof FailedPreconditionError)) throw err;
    ({ sandbox } = await getSandbox(ctx.deps, create(GetSandboxRequestSchema, { sandboxId })));
    if (sandbox?.state !== SandboxState.RUNNING) throw err;
  } finally {
    ctx.tunnels.forget(sandboxId);
  }
  return setE2bTimeout(ctx, sandbox!.sandboxId, timeoutS);
}

/**
 * `memory: false` asks to drop memory on pause / cold-boot on resume. The jail runtime only
 * pauses with memory kept, and E2B says such a request is refused, never silently downgraded.
 */
export function refuseMemoryless(memory: boolean | undefined, field = "memory"): void {
  if (memory === false)
    throw new InvalidArgumentError(
      `'${field}: false' is not supported: sandboxes pause with their memory kept`,
    );
}
