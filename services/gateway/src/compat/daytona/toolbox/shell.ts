import { runCommand } from "../../../sandbox/process.js";
import type { ToolboxContext } from "./context.js";

/** Single-quotes a word for bash: `it's` → `'it'\''s'`. */
export function quote(word: string): string {
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** A bash command line from words, each quoted. */
export function words(...parts: string[]): string {
  return parts.map(quote).join(" ");
}

export interface ShellOptions {
  cwd?: string | undefined;
  envs?: Readonly<Record<string, string>>;
  /** Process lifetime; 0 = none. */
  timeoutMs: number;
  /** undefined: the sandbox's default user. */
  user?: string | undefined;
  stdin?: Uint8Array;
  /** stdout and stderr into one buffer, in the order the process wrote them. */
  combine?: boolean;
  signal?: AbortSignal | undefined;
}

export interface ShellResult {
  exitCode: number;
  stdout: Buffer;
  stderr: Buffer;
  timedOut: boolean;
  /** Output went over the gateway's exec output limit; the rest was dropped. */
  truncated: boolean;
}

/**
 * Runs a bash script in the sandbox through the agent (`bash -l -c`) and collects its output,
 * at most the gateway's exec output limit (the rest is read and dropped so the exit status
 * still arrives). With `combine`, stderr is redirected into stdout inside the sandbox, which
 * keeps the interleaving a terminal would show.
 */
export async function runShell(
  ctx: ToolboxContext,
  sandboxId: string,
  script: string,
  opts: ShellOptions,
): Promise<ShellResult> {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  let room = ctx.deps.limits.execOutputLimitBytes;
  let truncated = false;
  let exitCode = 0;
  let timedOut = false;
  const command = opts.combine === true ? `exec 2>&1\n${script}` : script;
  const events = runCommand(
    ctx.deps.agents,
    ctx.logger,
    {
      sandboxId,
      command,
      envs: opts.envs ?? {},
      cwd: opts.cwd,
      stdin: opts.stdin ?? new Uint8Array(),
      timeoutMs: opts.timeoutMs,
      user: opts.user,
    },
    opts.signal,
  );
  for await (const ev of events) {
    if (ev.type === "stdout" || ev.type === "stderr") {
      const chunk = Buffer.from(ev.data);
      const take = Math.min(chunk.length, room);
      if (take < chunk.length) truncated = true;
      if (take > 0) (ev.type === "stdout" ? out : err).push(chunk.subarray(0, take));
      room -= take;
    } else if (ev.type === "exit") {
      exitCode = ev.exitCode;
      timedOut = ev.error?.startsWith("timed out") === true;
    }
  }
  if (truncated)
    ctx.logger.info(
      { "sandbox.id": sandboxId, limitBytes: ctx.deps.limits.execOutputLimitBytes },
      "toolbox command output over the limit; the rest was dropped",
    );
  return { exitCode, stdout: Buffer.concat(out), stderr: Buffer.concat(err), timedOut, truncated };
}
