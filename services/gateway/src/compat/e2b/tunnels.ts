import type { Agent } from "node:http";
import { type Client, Code, ConnectError } from "@connectrpc/connect";
import { createTunnelAgent, type Logger } from "@dnah/platform";
import { SandboxState, type SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { fromScheduler, SCHEDULER_TIMEOUT_MS } from "../../sandbox/scheduler.js";

interface Entry {
  vmmUrl: string;
  agents: Map<number, Agent>;
  resolvedAt: number;
  usedAt: number;
}

/** Marks a sandbox the scheduler does not know or that is not running. */
const MISSING = Symbol("missing");

/**
 * Tunnel agents to any port of a running sandbox, for the E2B sandbox URL. Only admitted
 * sandboxes are served: those created through the E2B API, whose agent enforces an access
 * token (a natively created sandbox has none, and the sandbox URL takes no API key). Same idea as the
 * native AgentPool (which is bound to the agent port and the native clients): the sandbox's
 * vmm is looked up through the scheduler and trusted for `cacheTtlMs`; concurrent lookups
 * share one call.
 */
export class SandboxTunnels {
  private readonly entries = new Map<string, Entry>();
  private readonly pending = new Map<string, Promise<Entry | typeof MISSING>>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(
    private readonly opts: {
      scheduler: Client<typeof SchedulerService>;
      logger: Logger;
      /** Whether the sandbox may be served at all (only those with an envd access token). */
      admit: (sandboxId: string) => Promise<boolean>;
      cacheTtlMs?: number;
      idleCloseMs?: number;
    },
  ) {
    this.sweeper = setInterval(() => this.sweep(), 60_000);
    this.sweeper.unref();
  }

  /** An http.Agent whose sockets reach `port` in the sandbox, or undefined if it is not running. */
  async agent(sandboxId: string, port: number): Promise<Agent | undefined> {
    const now = Date.now();
    let e = this.entries.get(sandboxId);
    if (e === undefined || now - e.resolvedAt >= (this.opts.cacheTtlMs ?? 5_000)) {
      let p = this.pending.get(sandboxId);
      if (p === undefined) {
        p = this.resolve(sandboxId).finally(() => this.pending.delete(sandboxId));
        this.pending.set(sandboxId, p);
      }
      const r = await p;
      if (r === MISSING) return undefined;
      e = r;
    }
    e.usedAt = now;
    let agent = e.agents.get(port);
    if (agent === undefined) {
      agent = createTunnelAgent(e.vmmUrl, sandboxId, port);
      e.agents.set(port, agent);
    }
    return agent;
  }

  /** Drops a sandbox's tunnels (after a kill, or when its vmm no longer knows it). */
  forget(sandboxId: string): void {
    const e = this.entries.get(sandboxId);
    if (e === undefined) return;
    this.entries.delete(sandboxId);
    for (const a of e.agents.values()) a.destroy();
  }

  close(): void {
    clearInterval(this.sweeper);
    for (const id of [...this.entries.keys()]) this.forget(id);
  }

  private async resolve(sandboxId: string): Promise<Entry | typeof MISSING> {
    let record: Awaited<ReturnType<Client<typeof SchedulerService>["getSandbox"]>>["sandbox"];
    try {
      record = (await this.opts.scheduler.getSandbox({ sandboxId }, { timeoutMs: SCHEDULER_TIMEOUT_MS }))
        .sandbox;
    } catch (err) {
      if (err instanceof ConnectError && err.code === Code.NotFound) {
        this.forget(sandboxId);
        return MISSING;
      }
      throw fromScheduler(err, (cause) => new Error("scheduler GetSandbox: not found", { cause }));
    }
    if (
      record === undefined ||
      record.state !== SandboxState.RUNNING ||
      record.vmmUrl === "" ||
      !(await this.opts.admit(sandboxId))
    ) {
      this.forget(sandboxId);
      return MISSING;
    }
    const now = Date.now();
    const old = this.entries.get(sandboxId);
    if (old !== undefined && old.vmmUrl === record.vmmUrl) {
      old.resolvedAt = now;
      return old;
    }
    this.forget(sandboxId);
    const entry: Entry = { vmmUrl: record.vmmUrl, agents: new Map(), resolvedAt: now, usedAt: now };
    this.entries.set(sandboxId, entry);
    return entry;
  }

  private sweep(): void {
    const cutoff = Date.now() - (this.opts.idleCloseMs ?? 5 * 60_000);
    for (const [id, e] of this.entries) if (e.usedAt < cutoff) this.forget(id);
  }
}
