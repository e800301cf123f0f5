import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Env, EnvReader } from "@dnah/platform";

export interface VmmConfig {
  readonly hostId: string;
  readonly listenHost: string;
  readonly listenPort: number;
  /** URL other services use to reach this vmm; defaults to the listen address. */
  readonly advertiseUrl: string | undefined;
  /** `auto`: cloud-hypervisor when its binary exists and /dev/kvm opens, else jail. */
  readonly runtime: "auto" | "jail" | "qemu" | "cloud-hypervisor";
  /** The `cloud-hypervisor` executable; undefined = look it up on PATH. */
  readonly chBin: string | undefined;
  /** qemu runtime: machine type (q35: PCIe, hot-unplug for snapshots; microvm: virtio-mmio). */
  readonly qemuMachine: "q35" | "microvm";
  /**
   * qemu runtime: accelerator. `auto`: KVM where /dev/kvm exists, falling back to TCG when KVM
   * does not start; `tcg` for a host whose KVM is nested and too slow to boot a guest (seen on
   * CI machines: no kernel output within 40 s).
   */
  readonly qemuAccel: "auto" | "kvm" | "tcg";
  /** microVM runtimes: NAT egress from each VM's own namespace (no VM ever reaches another). */
  readonly vmEgress: boolean;
  readonly stateDir: string;
  /** Snapshot folders, `<snapshotsDir>/<snapshot id>/` (`<stateDir>/snapshots`). */
  readonly snapshotsDir: string;
  /** Archive storage: archived snapshot folders, `<archiveDir>/<snapshot id>/`. */
  readonly archiveDir: string;
  /** When set, archive storage is this S3-compatible bucket instead of `archiveDir`. */
  readonly archiveS3:
    | {
        readonly bucket: string;
        readonly prefix: string;
        readonly endpoint: string | undefined;
        readonly region: string;
        readonly forcePathStyle: boolean;
      }
    | undefined;
  /** Largest file one upload to a share may write (`PUT /share/...`). */
  readonly shareUploadMaxBytes: number;
  /** Largest a sandbox's share may grow through uploads (plain, chunked or tar): 507 past it. */
  readonly shareQuotaBytes: number;
  readonly cacheDir: string;
  readonly debianMirror: string;
  /** Folder with the bundled guest agent (`agent.mjs`). */
  readonly agentDir: string;
  readonly cgroupParent: string;
  readonly capacitySandboxes: number;
  readonly pidsMax: number;
  /** Template builds: a step running longer is killed; limits of a build jail. */
  readonly templateStepTimeoutMs: number;
  readonly templateBuildMemoryMib: number;
  /** Largest BuildTemplate request (its context tars), bytes. */
  readonly templateRequestMaxBytes: number;
  /**
   * Jail runtime: each sandbox's writable layer is a filesystem of this size (a sparse ext4
   * image on a loop device), so one sandbox cannot fill the host's disk; 0 = no limit (its
   * writes land on the state disk directly).
   */
  readonly jailDiskMib: number;
  readonly bootTimeoutMs: number;
  readonly schedulerUrl: string | undefined;
  /** Presented to the scheduler's RegisterHost when set (its DNAH_JOIN_TOKEN). */
  readonly joinToken: string | undefined;
  /** Placement labels of this host (`DNAH_HOST_LABELS=zone=eu,gpu=a100`). */
  readonly hostLabels: Record<string, string>;
  /** What the host offers sandboxes; undefined: the machine's (all CPUs, all memory). */
  readonly vcpus: number | undefined;
  readonly memoryMib: number | undefined;
  readonly heartbeatIntervalMs: number;
  /**
   * On SIGTERM, how long requests, tunnels and creates in flight get to finish; then what is
   * left is cut and every sandbox of the host is destroyed (they do not survive a restart).
   */
  readonly shutdownTimeoutMs: number;
  readonly logLevel: string;
  /** PATH for the host tools the runtime runs (mount, bwrap, sh). */
  readonly hostPath: string;
}

const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..");

export const DEFAULT_STATE_DIR = "/var/lib/dnah";
export const DEFAULT_CACHE_DIR = "/var/cache/dnah";
export const DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian";

export function configFromEnv(env: Env): VmmConfig {
  const r = new EnvReader(env);
  const stateDir = r.str("DNAH_STATE_DIR", DEFAULT_STATE_DIR);
  const s3Bucket = r.optStr("DNAH_ARCHIVE_S3_BUCKET");
  const cfg: VmmConfig = Object.freeze({
    hostId: r.str("DNAH_HOST_ID", hostname()),
    listenHost: r.str("DNAH_VMM_HOST", "127.0.0.1"),
    listenPort: r.int("DNAH_VMM_PORT", 7002, 0, 65535),
    advertiseUrl: r.optStr("DNAH_VMM_ADVERTISE_URL"),
    runtime: r.oneOf("DNAH_RUNTIME", ["auto", "jail", "qemu", "cloud-hypervisor"] as const, "auto"),
    chBin: r.optStr("DNAH_CH_BIN"),
    qemuMachine: r.oneOf("DNAH_QEMU_MACHINE", ["q35", "microvm"] as const, "q35"),
    qemuAccel: r.oneOf("DNAH_QEMU_ACCEL", ["auto", "kvm", "tcg"] as const, "auto"),
    vmEgress: r.bool("DNAH_VM_EGRESS", true),
    stateDir,
    snapshotsDir: join(stateDir, "snapshots"),
    archiveDir: r.str("DNAH_ARCHIVE_DIR", join(stateDir, "archive")),
    archiveS3:
      s3Bucket === undefined
        ? undefined
        : {
            bucket: s3Bucket,
            prefix: r.str("DNAH_ARCHIVE_S3_PREFIX", "dnah-archive/"),
            endpoint: r.optStr("DNAH_ARCHIVE_S3_ENDPOINT"),
            region: r.str("DNAH_ARCHIVE_S3_REGION", "us-east-1"),
            forcePathStyle: r.bool("DNAH_ARCHIVE_S3_PATH_STYLE", false),
          },
    shareUploadMaxBytes: r.int("DNAH_SHARE_UPLOAD_MAX_BYTES", 16 * 1024 ** 3, 1, Number.MAX_SAFE_INTEGER),
    shareQuotaBytes: r.int("DNAH_SHARE_QUOTA_BYTES", 20 * 1024 ** 3, 1, Number.MAX_SAFE_INTEGER),
    cacheDir: r.str("DNAH_CACHE_DIR", DEFAULT_CACHE_DIR),
    debianMirror: r.str("DNAH_DEBIAN_MIRROR", DEFAULT_DEBIAN_MIRROR),
    agentDir: r.str("DNAH_AGENT_DIR", join(REPO_ROOT, "guest", "dist")),
    cgroupParent: r.str("DNAH_CGROUP_PARENT", "dnah"),
    capacitySandboxes: r.int("DNAH_VMM_CAPACITY", 64, 1, 10_000),
    pidsMax: r.int("DNAH_SANDBOX_PIDS_MAX", 4096, 16, 1_000_000),
    templateStepTimeoutMs: r.int("DNAH_TEMPLATE_STEP_TIMEOUT_MS", 30 * 60_000, 1_000, 24 * 3_600_000),
    templateBuildMemoryMib: r.int("DNAH_TEMPLATE_BUILD_MEMORY_MIB", 4096, 128, 1 << 20),
    templateRequestMaxBytes: r.int(
      "DNAH_TEMPLATE_REQUEST_MAX_BYTES",
      128 * 1024 ** 2,
      1024 * 1024,
      2 * 1024 ** 3,
    ),
    jailDiskMib: r.int("DNAH_JAIL_DISK_MIB", 10_240, 0, 16 * 1024 * 1024),
    // A qemu microVM under TCG boots its kernel and the agent's Node in seconds to tens of seconds.
    bootTimeoutMs: r.int(
      "DNAH_BOOT_TIMEOUT_MS",
      env.DNAH_RUNTIME === "qemu" ? 120_000 : 15_000,
      100,
      600_000,
    ),
    schedulerUrl: r.optStr("DNAH_SCHEDULER_URL"),
    joinToken: r.optStr("DNAH_JOIN_TOKEN"),
    hostLabels: parseLabels(r.optStr("DNAH_HOST_LABELS"), (m) => r.problem(`DNAH_HOST_LABELS: ${m}`)),
    vcpus: env.DNAH_VMM_VCPUS === undefined ? undefined : r.int("DNAH_VMM_VCPUS", 1, 1, 4096),
    memoryMib:
      env.DNAH_VMM_MEMORY_MIB === undefined ? undefined : r.int("DNAH_VMM_MEMORY_MIB", 1, 64, 1 << 30),
    heartbeatIntervalMs: r.int("DNAH_HEARTBEAT_INTERVAL_MS", 5_000, 100, 600_000),
    shutdownTimeoutMs: r.int("DNAH_SHUTDOWN_TIMEOUT_MS", 20_000, 0, 600_000),
    logLevel: r.str("DNAH_LOG_LEVEL", "info"),
    hostPath: r.str("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
  });
  if (!/^[a-z0-9_-]{1,64}$/i.test(cfg.cgroupParent))
    r.problem("DNAH_CGROUP_PARENT: letters, digits, '-' and '_' only");
  r.done();
  return cfg;
}

/** `k=v,k2=v2` as a map; a malformed pair is reported through `problem`. */
function parseLabels(raw: string | undefined, problem: (m: string) => void): Record<string, string> {
  const out: Record<string, string> = {};
  for (const pair of (raw ?? "")
    .split(",")
    .map((p) => p.trim())
    .filter((p) => p !== "")) {
    const m = /^([A-Za-z0-9][A-Za-z0-9._/-]{0,62})=([A-Za-z0-9][A-Za-z0-9._/-]{0,62})$/.exec(pair);
    if (m === null) problem(`'${pair.slice(0, 64)}' is not key=value (letters, digits, '.', '_', '/', '-')`);
    else out[m[1]!] = m[2]!;
  }
  return out;
}
