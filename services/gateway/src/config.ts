import { type Env, EnvReader } from "@dnah/platform";

const MIB = 1024 * 1024;
const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;
/** A fixed key must be long enough not to be guessed and must survive an HTTP header. */
const FIXED_KEY_RE = /^[\x21-\x7e]{16,512}$/;

export interface GatewayConfig {
  host: string;
  port: number;
  /** postgres:// URL; undefined means an embedded PGlite (main.ts decides). */
  databaseUrl: string | undefined;
  /** search_path for every connection (tests give each suite its own). */
  dbSchema: string | undefined;
  /** Fixes the dev API key instead of generating one. Secret: never log it. */
  apiKey: string | undefined;
  /** Only main.ts uses it, to build the scheduler client it passes in. */
  schedulerUrl: string;
  /** The snapshot service (ListSnapshotKeys); everything else about snapshots goes through the scheduler. */
  snapshotUrl: string;
  /** Exec: stdout and stderr together keep at most this many bytes; the rest is dropped. */
  execOutputLimitBytes: number;
  /** Largest file accepted by WriteFile and returned by the buffered (Connect) ReadFile. */
  fileLimitBytes: number;
  /** Exec: default process lifetime when the request gives none. */
  execTimeoutMs: number;
  /**
   * How long a create waits for the scheduler to place and boot the sandbox. A burst of creates
   * on a small host queues for CPU: 200 at once on 2 cores need ~80 s for the last ones.
   */
  createTimeoutMs: number;
  /** Largest JSON request body on the REST routes. */
  jsonBodyLimitBytes: number;
  /** Largest template build context tar (POST /v1/templates/files/{sha256}); the scheduler's own limit should match. */
  templateContextMaxBytes: number;
  /** How long close() lets in-flight requests finish before cutting connections. */
  shutdownTimeoutMs: number;
  /** A request's headers must all arrive within this long (slowloris): else 408, connection closed. */
  headersTimeoutMs: number;
  /**
   * A request body that sends nothing for this long is cut, connection closed (an upload cut
   * so leaves no file). Not a bound on the whole upload, which may take minutes. 0: no bound.
   */
  bodyIdleTimeoutMs: number;
  /** How often coalesced activity (working calls) is sent to the scheduler. */
  activityFlushMs: number;
  /**
   * Requests one credential (API key, envd access token, preview token; else one client IP)
   * may make per minute, averaged over `rateLimitWindowMs`; 0 turns the limit off. Counted
   * in this process only: N gateways behind a balancer allow N times this.
   */
  rateLimitPerMinute: number;
  /**
   * The counting window. Each window allows perMinute × window / 60 s requests, all at once
   * if the caller likes: a shorter window means smaller bursts (and quicker recovery).
   */
  rateLimitWindowMs: number;
  logLevel: string;
}

/** Defaults for everything but the scheduler URL; tests spread their overrides over this. */
export const defaultConfig: Readonly<Omit<GatewayConfig, "schedulerUrl">> = Object.freeze({
  host: "0.0.0.0",
  port: 3000,
  databaseUrl: undefined,
  dbSchema: undefined,
  apiKey: undefined,
  snapshotUrl: "http://127.0.0.1:7003",
  execOutputLimitBytes: 16 * MIB,
  fileLimitBytes: 100 * MIB,
  execTimeoutMs: 60_000,
  createTimeoutMs: 60_000,
  jsonBodyLimitBytes: 1 * MIB,
  templateContextMaxBytes: 64 * MIB,
  shutdownTimeoutMs: 10_000,
  headersTimeoutMs: 10_000,
  bodyIdleTimeoutMs: 30_000,
  activityFlushMs: 2_000,
  rateLimitPerMinute: 6_000,
  rateLimitWindowMs: 60_000,
  logLevel: "info",
});

/** Parses the gateway's settings once; throws one ConfigError listing every problem. */
export function configFromEnv(env: Env): Readonly<GatewayConfig> {
  const r = new EnvReader(env);
  const d = defaultConfig;
  const dbSchema = r.optStr("DNAH_DB_SCHEMA");
  if (dbSchema !== undefined && !SCHEMA_RE.test(dbSchema)) {
    r.problem(`DNAH_DB_SCHEMA: expected a lower-case SQL identifier, got ${JSON.stringify(dbSchema)}`);
  }
  const apiKey = r.secret("DNAH_API_KEY");
  if (apiKey !== undefined && !FIXED_KEY_RE.test(apiKey)) {
    // The value is a secret: describe the problem without echoing it.
    r.problem("DNAH_API_KEY: expected 16 to 512 printable ASCII characters without spaces");
  }
  const schedulerUrl = r.optStr("DNAH_SCHEDULER_URL");
  if (schedulerUrl === undefined) {
    r.problem("DNAH_SCHEDULER_URL: required (the scheduler's base URL, e.g. http://127.0.0.1:3001)");
  } else if (!isHttpUrl(schedulerUrl)) {
    r.problem(`DNAH_SCHEDULER_URL: expected an http(s) URL, got ${JSON.stringify(schedulerUrl)}`);
  }
  const snapshotUrl = r.str("DNAH_SNAPSHOT_URL", d.snapshotUrl);
  if (!isHttpUrl(snapshotUrl)) {
    r.problem(`DNAH_SNAPSHOT_URL: expected an http(s) URL, got ${JSON.stringify(snapshotUrl)}`);
  }
  const cfg: GatewayConfig = {
    host: r.str("DNAH_GATEWAY_HOST", d.host),
    port: r.int("DNAH_PORT", d.port, 0, 65535),
    databaseUrl: r.optStr("DATABASE_URL"),
    dbSchema,
    apiKey,
    schedulerUrl: schedulerUrl ?? "",
    snapshotUrl,
    execOutputLimitBytes: r.int("DNAH_EXEC_OUTPUT_LIMIT_BYTES", d.execOutputLimitBytes, 1024, 1024 * MIB),
    fileLimitBytes: r.int("DNAH_FILE_LIMIT_BYTES", d.fileLimitBytes, 1, 16 * 1024 * MIB),
    execTimeoutMs: r.int("DNAH_EXEC_TIMEOUT_MS", d.execTimeoutMs, 1, 0xffffffff),
    createTimeoutMs: r.int("DNAH_CREATE_TIMEOUT_MS", d.createTimeoutMs, 1_000, 3_600_000),
    jsonBodyLimitBytes: r.int("DNAH_JSON_BODY_LIMIT_BYTES", d.jsonBodyLimitBytes, 1024, 1024 * MIB),
    templateContextMaxBytes: r.int(
      "DNAH_TEMPLATE_CONTEXT_MAX_BYTES",
      d.templateContextMaxBytes,
      1,
      1024 * MIB,
    ),
    shutdownTimeoutMs: r.int("DNAH_SHUTDOWN_TIMEOUT_MS", d.shutdownTimeoutMs, 0, 600_000),
    headersTimeoutMs: r.int("DNAH_HEADERS_TIMEOUT_MS", d.headersTimeoutMs, 100, 600_000),
    bodyIdleTimeoutMs: r.int("DNAH_BODY_IDLE_TIMEOUT_MS", d.bodyIdleTimeoutMs, 0, 3_600_000),
    activityFlushMs: r.int("DNAH_ACTIVITY_FLUSH_MS", d.activityFlushMs, 10, 60_000),
    rateLimitPerMinute: r.int("DNAH_RATE_LIMIT_PER_MINUTE", d.rateLimitPerMinute, 0, 100_000_000),
    rateLimitWindowMs: r.int("DNAH_RATE_LIMIT_WINDOW_MS", d.rateLimitWindowMs, 1_000, 3_600_000),
    logLevel: r.oneOf(
      "DNAH_LOG_LEVEL",
      ["trace", "debug", "info", "warn", "error", "fatal", "silent"],
      "info",
    ),
  };
  if (cfg.rateLimitPerMinute > 0 && requestsPerWindow(cfg) < 1) {
    const least = Math.ceil(60_000 / cfg.rateLimitPerMinute);
    r.problem(
      `DNAH_RATE_LIMIT_WINDOW_MS: ${cfg.rateLimitWindowMs} ms allows less than one of ` +
        `DNAH_RATE_LIMIT_PER_MINUTE=${cfg.rateLimitPerMinute} requests; use at least ${least}`,
    );
  }
  r.done();
  return Object.freeze(cfg);
}

/** How many requests one credential may make in one rate-limit window (0: no limit). */
export function requestsPerWindow(
  cfg: Pick<GatewayConfig, "rateLimitPerMinute" | "rateLimitWindowMs">,
): number {
  return Math.floor((cfg.rateLimitPerMinute * cfg.rateLimitWindowMs) / 60_000);
}

function isHttpUrl(s: string): boolean {
  try {
    const u = new URL(s);
    return u.protocol === "http:" || u.protocol === "https:";
  } catch {
    return false;
  }
}
