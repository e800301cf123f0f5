import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "@dnah/platform";
import type { ConnectResponse, StartResponse } from "@dnah/proto/process/process_pb";
import { Signal } from "@dnah/proto/process/process_pb";
import { UnavailableError } from "../errors.js";
import type { RpcDeps } from "../rpc/deps.js";

/** Asks the agent for a keepalive on a silent stream this often (seconds). */
const KEEPALIVE_S = "30";
const CALL_TIMEOUT_MS = 10_000;
const RECONNECTS = 3;

/** What a process needs from its surface: the agent pool and a logger (Daytona's toolbox, the terminal route). */
export interface AgentProcessContext {
  deps: Pick<RpcDeps, "agents">;
  logger: Logger;
}

export interface ProcessSpec {
  cmd: string;
  args: string[];
  envs: Record<string, string>;
  cwd?: string | undefined;
  pty?: { cols: number; rows: number } | undefined;
  stdin: boolean;
}

export interface ProcessEvents {
  onData(kind: "stdout" | "stderr" | "pty", data: Buffer): void;
  /**
   * Once: the process ended (`reason` set when it did not exit normally), or it was `lost`:
   * the sandbox stopped answering (deleted, stopped) and the process is presumed gone.
   */
  onExit(exitCode: number, reason: string | undefined, lost: boolean): void;
}

/**
 * A long-lived process in a sandbox (a Daytona session's shell, a PTY, a native terminal), started through the agent's
 * process.Process and followed for as long as it runs. The agent keeps a process running when
 * its stream drops, so a transport failure is followed by a `Connect` to the same pid.
 */
export class AgentProcess {
  private readonly abort = new AbortController();
  private ended = false;

  private constructor(
    private readonly ctx: AgentProcessContext,
    readonly sandboxId: string,
    readonly pid: number,
    private readonly events: ProcessEvents,
  ) {}

  /** Starts the process; resolves once the agent reports its pid. */
  static async start(
    ctx: AgentProcessContext,
    sandboxId: string,
    spec: ProcessSpec,
    events: ProcessEvents,
  ): Promise<AgentProcess> {
    const conn = await ctx.deps.agents.connect(sandboxId);
    const abort = new AbortController();
    const stream = conn.process
      .start(
        {
          process: {
            cmd: spec.cmd,
            args: spec.args,
            envs: spec.envs,
            ...(spec.cwd ? { cwd: spec.cwd } : {}),
          },
          stdin: spec.stdin,
          ...(spec.pty ? { pty: { size: { cols: spec.pty.cols, rows: spec.pty.rows } } } : {}),
        },
        { signal: abort.signal, headers: { "keepalive-ping-interval": KEEPALIVE_S } },
      )
      [Symbol.asyncIterator]();
    let pid: number | undefined;
    try {
      while (pid === undefined) {
        const next = await stream.next();
        if (next.done === true)
          throw new UnavailableError("the sandbox agent ended the stream before the start");
        const ev = next.value.event?.event;
        if (ev?.case === "start") pid = ev.value.pid;
      }
    } catch (err) {
      abort.abort();
      throw ctx.deps.agents.translate(sandboxId, err);
    }
    const proc = new AgentProcess(ctx, sandboxId, pid, events);
    proc.abort.signal.addEventListener("abort", () => abort.abort(), { once: true });
    void proc.follow(stream);
    return proc;
  }

  get running(): boolean {
    return !this.ended;
  }

  async write(data: Uint8Array, pty: boolean): Promise<void> {
    const conn = await this.ctx.deps.agents.connect(this.sandboxId);
    await conn.process
      .sendInput(
        {
          process: this.selector(),
          input: { input: pty ? { case: "pty", value: data } : { case: "stdin", value: data } },
        },
        { timeoutMs: CALL_TIMEOUT_MS },
      )
      .catch((err: unknown) => {
        throw this.ctx.deps.agents.translate(this.sandboxId, err);
      });
  }

  async resize(cols: number, rows: number): Promise<void> {
    const conn = await this.ctx.deps.agents.connect(this.sandboxId);
    await conn.process
      .update({ process: this.selector(), pty: { size: { cols, rows } } }, { timeoutMs: CALL_TIMEOUT_MS })
      .catch((err: unknown) => {
        throw this.ctx.deps.agents.translate(this.sandboxId, err);
      });
  }

  /** SIGKILL; a process that is already gone is not an error. */
  async kill(): Promise<void> {
    if (this.ended) return;
    try {
      const conn = await this.ctx.deps.agents.connect(this.sandboxId);
      await conn.process.sendSignal(
        { process: this.selector(), signal: Signal.SIGKILL },
        { timeoutMs: CALL_TIMEOUT_MS },
      );
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.NotFound) return;
      throw this.ctx.deps.agents.translate(this.sandboxId, err);
    }
  }

  /** Stops following (the process itself is left alone). */
  detach(): void {
    this.abort.abort();
  }

  private selector() {
    return { selector: { case: "pid" as const, value: this.pid } };
  }

  private async follow(first: AsyncIterator<StartResponse | ConnectResponse>): Promise<void> {
    let stream: AsyncIterator<StartResponse | ConnectResponse> = first;
    for (let attempt = 0; ; ) {
      try {
        for (;;) {
          const next = await stream.next();
          if (next.done === true) break;
          attempt = 0;
          const ev = next.value.event?.event;
          if (ev?.case === "data") {
            const out = ev.value.output;
            if (out.case !== undefined) this.events.onData(out.case, Buffer.from(out.value));
          } else if (ev?.case === "end") {
            this.finish(ev.value.exitCode, ev.value.exited ? undefined : ev.value.error || ev.value.status);
            return;
          }
        }
        throw new UnavailableError("the sandbox agent ended the stream without an exit status");
      } catch (err) {
        if (this.abort.signal.aborted) return;
        if (attempt >= RECONNECTS) {
          this.ctx.logger.warn(
            { err, "sandbox.id": this.sandboxId, pid: this.pid },
            "lost a sandbox process",
          );
          this.finish(-1, "lost the connection to the sandbox", true);
          return;
        }
        attempt++;
        await new Promise((r) => setTimeout(r, 250 * attempt));
        try {
          const conn = await this.ctx.deps.agents.connect(this.sandboxId);
          stream = conn.process
            .connect(
              { process: this.selector() },
              { signal: this.abort.signal, headers: { "keepalive-ping-interval": KEEPALIVE_S } },
            )
            [Symbol.asyncIterator]();
        } catch (e) {
          this.ctx.logger.debug(
            { err: e, "sandbox.id": this.sandboxId },
            "reconnect to a sandbox process failed",
          );
        }
      }
    }
  }

  private finish(exitCode: number, reason: string | undefined, lost = false): void {
    if (this.ended) return;
    this.ended = true;
    this.abort.abort();
    this.events.onExit(exitCode, reason, lost);
  }
}
