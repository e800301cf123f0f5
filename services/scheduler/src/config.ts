import { type Env, EnvReader } from "@dnah/platform";

export interface SchedulerConfig {
  /** A postgres:// URL (may hold a password: never log it); unset means embedded PGlite. */
  readonly databaseUrl: string | undefined;
  /** PGlite data directory when there is no DATABASE_URL; unset means in-memory. */
  readonly pgliteDir: string | undefined;
  /** search_path schema for every connection (tests and shared databases). */
  readonly dbSchema: string | undefined;
  readonly host: string;
  /** 0 picks a free port. */
  readonly port: number;
  /** Warm pool target of the `base` template, set at every start. */
  readonly poolSize: number;
  /** A host that has not sent a heartbeat for this long is neither placed on nor claimed from. */
  readonly hostDeadAfterMs: number;
  /** When set, RegisterHost must carry it (`authorization: Bearer …`): who may join as a host. */
  readonly joinToken: string | undefined;
  /** spread: the least loaded host first; pack: fill the busiest that fits first. */
  readonly placementPolicy: "spread" | "pack";
  /** vCPUs placed per vCPU a host offers: sandboxes are idle most of the time. */
  readonly cpuOvercommit: number;
  /** A host reporting less free disk than this (MiB) is not placed on. */
  readonly minFreeDiskMib: number;
  /** How often the warm pool is checked (claims and host registrations also wake it). */
  readonly poolRefillIntervalMs: number;
  /** Deadline of vmm.CreateVm (boot until the agent answers). */
  readonly vmBootTimeoutMs: number;
  /** Deadline of the other vmm calls (ConfigureVm, PauseVm, metrics…). */
  readonly vmmCallTimeoutMs: number;
  /**
   * Deadline of vmm.DeleteVm: a teardown unmounts the sandbox's filesystems, which the kernel
   * does one at a time; 50 deletes at once take ~10 s on a 2-core host, 90 ~18 s.
   */
  readonly vmDeleteTimeoutMs: number;
  /** The snapshot service (signs and verifies snapshot manifests). */
  readonly snapshotUrl: string;
  /**
   * Deadline of vmm.SnapshotVm and vmm.RestoreVm: they write or hash every file and, for
   * microVMs, save or load the memory (several seconds under TCG), then boot.
   */
  readonly snapshotCallTimeoutMs: number;
  /** How often the reaper looks for sandboxes to stop, archive or delete. */
  readonly reaperIntervalMs: number;
  /**
   * How long a reaper's claim on a transition lasts: after that, another reaper takes the
   * row over and resumes the transition (the first one is taken for dead). Longer than any
   * archive takes.
   */
  readonly reaperLeaseMs: number;
  /** Most rows one reaper pass claims per transition. */
  readonly reaperBatch: number;
  /** How long SIGTERM waits for in-flight requests and boots before exiting anyway. */
  readonly shutdownTimeoutMs: number;
  /** Largest build context tar (PutTemplateFiles); the Connect server accepts a bit more. */
  readonly templateContextMaxBytes: number;
  /** Deadline of one template build (vmm.BuildTemplate), all steps. */
  readonly templateBuildTimeoutMs: number;
  readonly logLevel: LogLevel;
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;

/** Parses the scheduler's settings; throws one ConfigError listing every problem. */
export function configFromEnv(env: Env): SchedulerConfig {
  const r = new EnvReader(env);
  const databaseUrl = r.secret("DATABASE_URL");
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    // The value itself may hold a password, so it is not echoed.
    r.problem("DATABASE_URL: expected a postgres:// or postgresql:// URL");
  }
  const dbSchema = r.optStr("DNAH_DB_SCHEMA");
  if (dbSchema !== undefined && !SCHEMA_RE.test(dbSchema)) {
    r.problem(`DNAH_DB_SCHEMA: expected ${SCHEMA_RE.source}, got ${JSON.stringify(dbSchema)}`);
  }
  const cfg: SchedulerConfig = {
    databaseUrl,
    pgliteDir: r.optStr("DNAH_PGLITE_DIR"),
    dbSchema,
    host: r.str("DNAH_SCHEDULER_HOST", "127.0.0.1"),
    port: r.int("DNAH_SCHEDULER_PORT", 7001, 0, 65535),
    poolSize: r.int("DNAH_POOL_SIZE", 2, 0, 1000),
    hostDeadAfterMs: r.int("DNAH_HOST_DEAD_AFTER_MS", 15_000, 1),
    joinToken: r.optStr("DNAH_JOIN_TOKEN"),
    placementPolicy: r.oneOf("DNAH_PLACEMENT_POLICY", ["spread", "pack"] as const, "spread"),
    cpuOvercommit: r.int("DNAH_CPU_OVERCOMMIT", 16, 1, 1_000),
    minFreeDiskMib: r.int("DNAH_MIN_FREE_DISK_MIB", 1_024, 0, 1 << 30),
    poolRefillIntervalMs: r.int("DNAH_POOL_REFILL_INTERVAL_MS", 500, 10),
    vmBootTimeoutMs: r.int("DNAH_VM_BOOT_TIMEOUT_MS", 60_000, 1),
    vmmCallTimeoutMs: r.int("DNAH_VMM_CALL_TIMEOUT_MS", 10_000, 1),
    vmDeleteTimeoutMs: r.int("DNAH_VM_DELETE_TIMEOUT_MS", 60_000, 1),
    snapshotUrl: httpUrl(r, "DNAH_SNAPSHOT_URL", "http://127.0.0.1:7003"),
    snapshotCallTimeoutMs: r.int("DNAH_SNAPSHOT_CALL_TIMEOUT_MS", 120_000, 1),
    reaperIntervalMs: r.int("DNAH_REAPER_INTERVAL_MS", 1_000, 10),
    reaperLeaseMs: r.int("DNAH_REAPER_LEASE_MS", 600_000, 1_000),
    reaperBatch: r.int("DNAH_REAPER_BATCH", 20, 1, 1_000),
    shutdownTimeoutMs: r.int("DNAH_SHUTDOWN_TIMEOUT_MS", 30_000, 0),
    templateContextMaxBytes: r.int(
      "DNAH_TEMPLATE_CONTEXT_MAX_BYTES",
      64 * 1024 * 1024,
      1,
      1024 * 1024 * 1024,
    ),
    templateBuildTimeoutMs: r.int("DNAH_TEMPLATE_BUILD_TIMEOUT_MS", 3_600_000, 1_000),
    logLevel: r.oneOf("DNAH_LOG_LEVEL", LOG_LEVELS, "info"),
  };
  r.done();
  return Object.freeze(cfg);
}

/** An http(s) base URL without a trailing slash. */
function httpUrl(r: EnvReader, name: string, fallback: string): string {
  const raw = r.str(name, fallback);
  try {
    const url = new URL(raw);
    if (url.protocol === "http:" || url.protocol === "https:") return raw.replace(/\/+$/, "");
  } catch {
    // reported below
  }
  r.problem(`${name}: expected an http:// or https:// URL, got ${JSON.stringify(raw)}`);
  return fallback;
}
