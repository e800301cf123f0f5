import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "@dnah/platform";
import { Signal } from "@dnah/proto/process/process_pb";
import { GatewayError, InvalidArgumentError, UnavailableError } from "../errors.js";
import type { AgentConnection, AgentPool } from "./agent-client.js";

/** A command to run through the agent, already validated. */
export interface CommandSpec {
  sandboxId: string;
  command: string;
  envs: Readonly<Record<string, string>>;
  /** Absolute; undefined means the agent's default (the user's home). */
  cwd: string | undefined;
  /** Written to stdin, which is then closed; empty means stdin is /dev/null. */
  stdin: Uint8Array;
  /** Process lifetime; 0 means none. */
  timeoutMs: number;
  /** Run as this user; undefined means the sandbox's default user. */
  user: string | undefined;
}

export type CommandEvent =
  | { type: "start"; pid: number }
  | { type: "stdout"; data: Uint8Array }
  | { type: "stderr"; data: Uint8Array }
  | { type: "exit"; exitCode: number; error?: string };

/** envd reports a process killed by a signal with exit code -1; a timeout is reported alike. */
export const KILLED_EXIT_CODE = -1;
const SIGNAL_TIMEOUT_MS = 5_000;

/**
 * Runs a command with the agent's process.Process/Start and yields its events: `start`
 * first, then output, then exactly one `exit`. A timeout ends with an `exit` carrying an
 * error, not with a thrown error. If the caller's signal aborts, or the consumer stops
 * iterating before the exit, the process is killed: nobody is left to read its output.
 */
export async function* runCommand(
  agents: AgentPool,
  logger: Logger,
  spec: CommandSpec,
  signal?: AbortSignal,
): AsyncGenerator<CommandEvent, void, undefined> {
  const conn = await agents.connect(spec.sandboxId);
  // Held until the process is known to be over (or killed), so shutdown waits for the kill.
  const release = agents.hold();
  const headers: Record<string, string> =
    spec.user !== undefined
      ? { authorization: `Basic ${Buffer.from(`${spec.user}:`).toString("base64")}` }
      : {};
  const local = new AbortController();
  const onAbort = () => local.abort(signal?.reason);
  if (signal?.aborted) onAbort();
  signal?.addEventListener("abort", onAbort, { once: true });
  const hasStdin = spec.stdin.byteLength > 0;
  let pid: number | undefined;
  let exited = false;
  let exitEvent: CommandEvent | undefined;
  try {
    const stream = conn.process.start(
      {
        process: {
          cmd: "/bin/bash",
          args: ["-l", "-c", spec.command],
          envs: { ...spec.envs },
          ...(spec.cwd !== undefined ? { cwd: spec.cwd } : {}),
        },
        stdin: hasStdin,
      },
      { signal: local.signal, headers, ...(spec.timeoutMs > 0 ? { timeoutMs: spec.timeoutMs } : {}) },
    );
    for await (const res of stream) {
      const ev = res.event?.event;
      if (ev === undefined || ev.case === "keepalive") continue;
      if (ev.case === "start") {
        pid = ev.value.pid;
        // Fed concurrently: waiting for stdin to be written before reading output could
        // deadlock a process that writes a lot before reading all of its input.
        if (hasStdin) void feedStdin(conn, pid, spec.stdin, headers, logger);
        yield { type: "start", pid };
        continue;
      }
      if (pid === undefined) throw new Error(`agent sent '${ev.case}' before the start event`);
      if (ev.case === "data") {
        const out = ev.value.output;
        if (out.case === "stdout" || out.case === "stderr") yield { type: out.case, data: out.value };
        continue;
      }
      if (ev.case !== "end") continue;
      exited = true;
      const end = ev.value;
      // A normal exit (any code) is not an error; a signal or an agent-side failure is.
      const error = end.exited ? undefined : end.error || end.status || "process did not exit normally";
      exitEvent = { type: "exit", exitCode: end.exitCode, ...(error !== undefined ? { error } : {}) };
      // Keep reading to the end of the stream (the agent closes it right after the end
      // event): leaving early would strand the call's deadline timer for its whole timeout.
    }
    if (exitEvent !== undefined) {
      yield exitEvent;
      return;
    }
    throw new UnavailableError("the sandbox agent ended the command's stream without an exit status");
  } catch (err) {
    // Ended by the gateway itself (its shutdown): the reason it gave is the answer.
    if (signal?.aborted === true && signal.reason instanceof GatewayError) throw signal.reason;
    if (
      err instanceof ConnectError &&
      err.code === Code.DeadlineExceeded &&
      spec.timeoutMs > 0 &&
      signal?.aborted !== true &&
      pid !== undefined
    ) {
      // The agent kills the process at the same deadline; the kill below makes sure.
      await kill(conn, pid, headers, logger);
      exited = true;
      yield { type: "exit", exitCode: KILLED_EXIT_CODE, error: `timed out after ${spec.timeoutMs} ms` };
      return;
    }
    if (err instanceof ConnectError && err.code === Code.Unauthenticated && spec.user !== undefined) {
      throw new InvalidArgumentError(`unknown user '${spec.user}'`, { cause: err });
    }
    throw agents.translate(spec.sandboxId, err);
  } finally {
    signal?.removeEventListener("abort", onAbort);
    if (!exited && pid !== undefined) await kill(conn, pid, headers, logger);
    local.abort();
    release();
  }
}

async function feedStdin(
  conn: AgentConnection,
  pid: number,
  data: Uint8Array,
  headers: Record<string, string>,
  logger: Logger,
): Promise<void> {
  const process = { selector: { case: "pid" as const, value: pid } };
  try {
    await conn.process.sendInput({ process, input: { input: { case: "stdin", value: data } } }, { headers });
    await conn.process.closeStdin({ process }, { headers });
  } catch (err) {
    // Usual cause: the process exited without reading its input. Its exit is what matters.
    logger.debug({ err, "sandbox.id": conn.sandboxId, pid }, "could not write stdin");
  }
}

async function kill(conn: AgentConnection, pid: number, headers: Record<string, string>, logger: Logger) {
  try {
    await conn.process.sendSignal(
      { process: { selector: { case: "pid", value: pid } }, signal: Signal.SIGKILL },
      { headers, timeoutMs: SIGNAL_TIMEOUT_MS },
    );
  } catch (err) {
    if (err instanceof ConnectError && err.code === Code.NotFound) return; // already gone
    logger.warn({ err, "sandbox.id": conn.sandboxId, pid }, "could not kill a process");
  }
}
