import { basicAuthUser } from "./auth.js";
import { unauthenticated } from "./errors.js";
import type { MetadataStore } from "./filesystem/metadata.js";
import type { WatcherRegistry } from "./filesystem/watchers.js";
import type { CpuSampler } from "./http/metrics.js";
import type { Logger } from "./log.js";
import type { ProcessManager } from "./process/manager.js";
import type { AgentState } from "./state.js";
import type { User, UserDb } from "./users.js";

export interface AgentConfig {
  /** PATH for every process. */
  readonly pathEnv: string;
  /** Keepalive interval when a stream request has no `Keepalive-Ping-Interval`. */
  readonly keepaliveFallbackMs: number;
  /** Largest `/init` body accepted. */
  readonly initBodyMaxBytes: number;
}

/** Everything a handler needs; tests build their own. */
export interface AgentContext {
  readonly state: AgentState;
  readonly users: UserDb;
  readonly processes: ProcessManager;
  readonly watchers: WatcherRegistry;
  /** File metadata (`user.e2b.*` xattrs). */
  readonly metadata: MetadataStore;
  readonly cpu: CpuSampler;
  readonly log: Logger;
  readonly config: AgentConfig;
}

/** The named user, or the default one; `unauthenticated` when unknown (as envd). */
export async function userByName(ctx: AgentContext, name: string | undefined | null): Promise<User> {
  const wanted = name ?? ctx.state.defaultUser;
  const user = await ctx.users.lookup(wanted);
  if (!user) {
    throw unauthenticated(
      name === undefined || name === null
        ? `invalid default user: '${wanted}'`
        : `invalid username: '${wanted}'`,
    );
  }
  return user;
}

/** The user an RPC runs as: `Authorization: Basic base64("<name>:")`, else the default. */
export function requestUser(ctx: AgentContext, headers: Headers): Promise<User> {
  return userByName(ctx, basicAuthUser(headers.get("authorization")));
}
