import type { Agent } from "node:http";
import { FailedPreconditionError, SandboxNotFoundError } from "../../errors.js";
import type { AgentPool } from "../../sandbox/agent-client.js";

/** Admitted sandboxes are remembered this long before the database is asked again. */
const ADMIT_TTL_MS = 5_000;
const ADMIT_CACHE_MAX = 10_000;

/**
 * Tunnel agents to any port of a running sandbox, for the E2B sandbox URL. Only admitted
 * sandboxes are served: those created through the E2B API, whose agent enforces an access
 * token (a natively created sandbox has none, and the sandbox URL takes no API key). The
 * sandbox → vmm lookup and the tunnels themselves are the native AgentPool's.
 */
export class SandboxTunnels {
  private readonly admitted = new Map<string, number>();

  constructor(
    private readonly opts: {
      agents: AgentPool;
      admit: (sandboxId: string) => Promise<boolean>;
    },
  ) {}

  /** An http.Agent whose sockets reach `port` in the sandbox, or undefined if it is not served. */
  async agent(sandboxId: string, port: number): Promise<Agent | undefined> {
    const at = this.admitted.get(sandboxId);
    if (at === undefined || Date.now() - at >= ADMIT_TTL_MS) {
      if (!(await this.opts.admit(sandboxId))) {
        this.admitted.delete(sandboxId);
        return undefined;
      }
      if (this.admitted.size >= ADMIT_CACHE_MAX) this.admitted.clear();
      this.admitted.set(sandboxId, Date.now());
    }
    try {
      return await this.opts.agents.tunnel(sandboxId, port);
    } catch (err) {
      // Unknown, deleted or not running: the sandbox URL answers "not found" for all of them.
      if (err instanceof SandboxNotFoundError || err instanceof FailedPreconditionError) {
        this.forget(sandboxId);
        return undefined;
      }
      throw err;
    }
  }

  /** Drops a sandbox's tunnels (after a kill, or when its vmm no longer knows it). */
  forget(sandboxId: string): void {
    this.admitted.delete(sandboxId);
    this.opts.agents.forget(sandboxId);
  }

  close(): void {
    this.admitted.clear();
  }
}
