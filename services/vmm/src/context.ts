import type { Logger } from "@dnah/platform";
import type { VmmConfig } from "./config.js";
import type { RunningVm, Runtime } from "./runtime/runtime.js";
import type { ArchiveStore } from "./snapshot/archive.js";
import type { SnapshotStore } from "./snapshot/store.js";
import type { TemplateBuilder } from "./template/builder.js";
import type { TunnelRegistry } from "./tunnel/server.js";

export interface VmRecord {
  readonly vm: RunningVm;
  readonly bootMs: number;
  readonly cpuCount: number;
  readonly memoryMib: number;
}

/** Everything an RPC handler needs; tests build it with their own parts. */
export interface VmmContext {
  readonly cfg: VmmConfig;
  readonly logger: Logger;
  readonly runtime: Runtime;
  /** Sandboxes that answered /health, by id. */
  readonly vms: Map<string, VmRecord>;
  /** Ids being created or deleted right now (a second request for one is refused). */
  readonly busy: Set<string>;
  /** Open tunnels per sandbox; pausing one cuts them. */
  readonly tunnels: TunnelRegistry;
  /** This host's snapshot folders. */
  readonly snapshots: SnapshotStore;
  /** This host's archive storage (DNAH_ARCHIVE_DIR). */
  readonly archives: ArchiveStore;
  /** Builds templates from steps into this host's layer cache. */
  readonly templates: TemplateBuilder;
}
