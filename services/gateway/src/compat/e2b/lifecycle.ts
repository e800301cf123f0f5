import { create } from "@bufbuild/protobuf";
import {
  GetSandboxRequestSchema,
  PauseSandboxRequestSchema,
  ResumeSandboxRequestSchema,
  type Sandbox,
  SandboxState,
} from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { FailedPreconditionError, InvalidArgumentError } from "../../errors.js";
import { getSandbox } from "../../rpc/get-sandbox.js";
import { pauseSandbox } from "../../rpc/pause-sandbox.js";
import { resumeSandbox } from "../../rpc/resume-sandbox.js";
import type { E2bContext } from "./context.js";
import { markE2bPaused, markE2bResumed } from "./db.js";

/**
 * Pauses a sandbox (native PauseSandbox: the jail is frozen, memory and disk kept) and records
 * it paused, which takes it off the timeout enforcer. `already_paused` when it was (E2B's 409);
 * a sandbox in any other non-running state is a FailedPreconditionError.
 */
export async function pauseE2b(ctx: E2bContext, sandboxId: string): Promise<"paused" | "already_paused"> {
  try {
    await pauseSandbox(ctx.deps, create(PauseSandboxRequestSchema, { sandboxId }));
    await markE2bPaused(ctx.db, sandboxId);
    return "paused";
  } catch (err) {
    if (!(err instanceof FailedPreconditionError)) throw err;
    const { sandbox } = await getSandbox(ctx.deps, create(GetSandboxRequestSchema, { sandboxId }));
    if (sandbox?.state !== SandboxState.PAUSED) throw err;
    // Paused natively, or by a concurrent call: the E2B record follows.
    await markE2bPaused(ctx.db, sandboxId);
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
  await markE2bResumed(ctx.db, sandboxId, timeoutS);
  return sandbox!;
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
