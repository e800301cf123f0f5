/**
 * What the rest of the vmm knows about a runtime. The jail, qemu and cloud-hypervisor
 * runtimes implement it; nothing above this interface asks which one it has.
 */
export interface TemplateImage {
  /** Template id, e.g. "base". */
  readonly templateId: string;
  /** The template's root filesystem folder (read-only lower layer / image source). */
  readonly rootfsDir: string;
  /** Layers over rootfsDir, top first (templates built from steps); none for built-ins. */
  readonly layers?: readonly string[];
  /** Set for templates built from steps: what they are made of, by key. */
  readonly built?: BuiltFrom;
}

/** A template built from steps, by key: a microVM disk image of it must be made of exactly this. */
export interface BuiltFrom {
  /** The built-in template under the layers. */
  readonly baseTemplateId: string;
  /** Layer keys, bottom first (`layers` holds their folders, top first). */
  readonly layerKeys: readonly string[];
}

export interface VmSpec {
  readonly sandboxId: string;
  readonly template: TemplateImage;
  readonly cpuCount: number;
  readonly memoryMib: number;
  /** Boot at low CPU priority; `setForeground` raises it once the sandbox is up. */
  readonly background: boolean;
}

export interface RunningVm {
  readonly sandboxId: string;
  readonly templateId: string;
  /** Host-side hybrid-vsock socket: connect, send `CONNECT <port>\n`, read `OK …\n`. */
  readonly vsockPath: string;
  readonly startedAt: number;
}

/** One sample of a sandbox's resource use, as its runtime measures it. */
export interface VmMetricsSample {
  readonly timestampMs: number;
  readonly cpuCount: number;
  /** CPU time used since the previous sample, as a percentage of all the sandbox's CPUs. */
  readonly cpuUsedPct: number;
  readonly memUsedBytes: number;
  readonly memTotalBytes: number;
  readonly memCacheBytes: number;
  readonly diskUsedBytes: number;
  readonly diskTotalBytes: number;
}

/** What a runtime put into a snapshot folder, besides the share (see `Runtime.snapshot`). */
export interface RuntimeSnapshot {
  /** True when memory and device state are in the folder (processes continue on restore). */
  readonly memory: boolean;
  readonly templateId: string;
  readonly cpuCount: number;
  readonly memoryMib: number;
}

/** Hooks the snapshot layer (`src/snapshot/`) runs at the right moment of a runtime's work. */
export interface SnapshotHooks {
  /**
   * Runs while the sandbox is stopped (frozen / VM stopped), after the runtime wrote its own
   * files: the snapshot layer copies the share into the folder here, so it matches memory
   * and disk.
   */
  whileStopped(shareDir: string): Promise<void>;
}

export interface RestoreHooks {
  /** Runs once the new sandbox's (empty) share folder exists and before anything runs in it. */
  beforeStart(shareDir: string): Promise<void>;
}

export interface Runtime {
  readonly name: "jail" | "qemu" | "cloud-hypervisor";
  /** One sentence for operators: what isolates sandboxes from each other and the host. */
  readonly isolation: string;
  /**
   * Makes what the runtime boots `template` from beyond its folders, ahead of its first boot:
   * a microVM runtime flattens a template built from steps into a disk image (`vm/flatten.ts`;
   * a boot without one makes it first); the jail mounts layers as they are and makes nothing.
   * `log` hears what is made and how long it took (the build log).
   */
  prepareTemplate(template: TemplateImage, log: (line: string) => void): Promise<void>;
  /** Starts the sandbox; resolves once its runtime process runs (not yet its agent). */
  start(spec: VmSpec): Promise<RunningVm>;
  /** Stops the sandbox and removes every process, mount, cgroup and folder it had. */
  destroy(sandboxId: string): Promise<void>;
  /** Removes leftovers of sandboxes this process does not know (after a crash). */
  reclaimOrphans(known: ReadonlySet<string>): Promise<string[]>;
  /** Gives a sandbox booted in the background normal CPU priority. */
  setForeground(sandboxId: string): Promise<void>;
  /** Freezes every process of the sandbox; resolves once the runtime reports it frozen. */
  pause(sandboxId: string): Promise<void>;
  /** Thaws a paused sandbox; resolves once it runs again. */
  resume(sandboxId: string): Promise<void>;
  /** True while the sandbox is paused. */
  isPaused(sandboxId: string): boolean;
  /** Samples the sandbox's CPU, memory and disk use now. */
  metrics(sandboxId: string): Promise<VmMetricsSample>;
  /** True while the sandbox's runtime process lives. */
  isRunning(sandboxId: string): boolean;
  /**
   * The host folder the sandbox sees at `/mnt/dnah-share`, read-write both ways (a bind mount
   * in the jail, virtio-fs in a microVM). Its path only: it exists while the sandbox does.
   */
  shareDir(sandboxId: string): string;
  /**
   * Writes the sandbox's state into `destDir` (exists, empty, owned by the snapshot layer):
   * microVMs memory + devices + disk, the jail its disk (overlay upper dir). Plain files
   * only, no folders or links. The sandbox ends in the state it had (running or paused).
   */
  snapshot(sandboxId: string, destDir: string, hooks: SnapshotHooks): Promise<RuntimeSnapshot>;
  /**
   * Starts a new sandbox (`spec.sandboxId`, never the source's) from a folder `snapshot`
   * wrote and the snapshot layer verified: its own disk copy, share, network and vsock; a
   * microVM is reseeded, gets the host's clock and its new id and hostname before anything
   * else talks to it. Sized from the snapshot. Resolves once its agent can be dialled.
   */
  restore(spec: VmSpec, snapshotDir: string, hooks: RestoreHooks): Promise<RunningVm>;
  /**
   * True when `pause` writes memory to the host and ends the VM's process (stop-snap), so a
   * paused sandbox holds no RAM; false when it freezes processes in place.
   */
  readonly pauseReleasesMemory: boolean;
  /** After every sandbox is destroyed: removes the runtime's own empty scaffolding. */
  dispose(): Promise<void>;
  /** Called when a runtime process exits on its own. */
  onExit(listener: (sandboxId: string, reason: string) => void): void;
}
