/**
 * The part of Cloud Hypervisor's API schema (OpenAPI `cloud-hypervisor.yaml`, info.version
 * 0.3.0) that dnah sends or reads. Field names are CH's JSON names; sizes are bytes.
 */

export type VmState = "Created" | "Running" | "Shutdown" | "Paused" | "BreakPoint";

export interface VmmPingResponse {
  readonly version: string;
  readonly build_version?: string;
  readonly pid?: number;
  readonly features?: readonly string[];
}

export interface PayloadConfig {
  readonly kernel: string;
  readonly cmdline?: string;
  readonly initramfs?: string;
}

export interface CpusConfig {
  readonly boot_vcpus: number;
  readonly max_vcpus: number;
}

export interface MemoryConfig {
  readonly size: number;
  readonly shared?: boolean;
}

export type ImageType = "Raw" | "Qcow2";

export interface DiskConfig {
  readonly path: string;
  readonly id: string;
  readonly readonly?: boolean;
  readonly image_type?: ImageType;
  readonly backing_files?: boolean;
}

export interface NetConfig {
  readonly tap: string;
  readonly mac: string;
  readonly id: string;
  readonly num_queues?: number;
  readonly queue_size?: number;
}

export interface FsConfig {
  readonly tag: string;
  readonly socket: string;
  readonly num_queues: number;
  readonly queue_size: number;
  readonly id: string;
}

export interface VsockConfig {
  readonly cid: number;
  readonly socket: string;
  readonly id: string;
}

export type ConsoleMode = "Off" | "Pty" | "Tty" | "File" | "Socket" | "Null";

export interface SerialConfig {
  readonly mode: ConsoleMode;
  readonly file?: string;
}

export interface ConsoleConfig {
  readonly mode: ConsoleMode;
}

export interface RngConfig {
  readonly src: string;
}

export interface VmConfig {
  readonly payload: PayloadConfig;
  readonly cpus: CpusConfig;
  readonly memory: MemoryConfig;
  readonly disks: readonly DiskConfig[];
  readonly net?: readonly NetConfig[];
  readonly fs?: readonly FsConfig[];
  readonly vsock: VsockConfig;
  readonly serial: SerialConfig;
  readonly console: ConsoleConfig;
  readonly rng: RngConfig;
}

export interface VmInfo {
  readonly config: VmConfig;
  readonly state: VmState;
  readonly memory_actual_size?: number;
}

export interface VmSnapshotConfig {
  readonly destination_url: string;
}

export interface RestoreConfig {
  readonly source_url: string;
  readonly resume?: boolean;
  readonly memory_restore_mode?: "Copy" | "OnDemand";
  readonly prefault?: boolean;
}

/** `vm.counters`: per device id, per counter name. */
export type VmCounters = Readonly<Record<string, Readonly<Record<string, number>>>>;
