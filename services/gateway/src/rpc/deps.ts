import type { Client } from "@connectrpc/connect";
import type { Logger } from "@dnah/platform";
import type { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { SnapshotService } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import type { ActivitySink } from "../sandbox/activity.js";
import type { AgentPool } from "../sandbox/agent-client.js";

export interface Limits {
  execOutputLimitBytes: number;
  fileLimitBytes: number;
  execTimeoutMs: number;
  /** How long a create may wait for the scheduler (placement and boot). */
  createTimeoutMs: number;
}

/** What every RPC function needs; built once by createGateway, shared by Connect and REST. */
export interface RpcDeps {
  scheduler: Client<typeof SchedulerService>;
  /** Only for ListSnapshotKeys: snapshots themselves are the scheduler's. */
  snapshot: Client<typeof SnapshotService>;
  agents: AgentPool;
  /** The `authorization` header for one call to the vmm at a URL (share routes, watches). */
  vmmAuthorization: (vmmUrl: string) => string;
  logger: Logger;
  limits: Limits;
  /**
   * Working calls reset the sandbox's idle clock here (coalesced, flushed to the scheduler).
   * Routes marked `{param}` in ACTIVITY_ROUTES are counted by the gateway; handlers of
   * `"handler"` routes call this themselves.
   */
  activity: ActivitySink;
}

export interface CallOptions {
  /** Aborted when the caller goes away; running commands are then killed. */
  signal?: AbortSignal | undefined;
  /** The caller's API key id: who may use a private template. */
  owner?: string | undefined;
}
