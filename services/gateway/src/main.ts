import { createLogger, createServiceClient, initTelemetry, openDb } from "@dnah/platform";
import { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { SnapshotService } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import { configFromEnv } from "./config.js";
import { createGateway } from "./gateway.js";

const cfg = configFromEnv(process.env);
const logger = createLogger("gateway", { level: cfg.logLevel });
const telemetry = initTelemetry("gateway", process.env);
const db = await openDb({ url: cfg.databaseUrl, schema: cfg.dbSchema });
if (db.kind === "pglite")
  logger.warn("DATABASE_URL is not set: using an in-memory PGlite; API keys vanish on exit");
const scheduler = createServiceClient(SchedulerService, cfg.schedulerUrl);
const snapshot = createServiceClient(SnapshotService, cfg.snapshotUrl);
const gateway = await createGateway(cfg, { db, scheduler, snapshot, logger });
const url = await gateway.start();
if (gateway.apiKey !== undefined && cfg.apiKey === undefined) {
  // Shown once, on stdout rather than in the log: it cannot be recovered later.
  process.stdout.write(`dnah gateway at ${url}\nAPI key (shown once): ${gateway.apiKey}\n`);
}

/** close() ends its calls at cfg.shutdownTimeoutMs; killing their commands and flushing get this long more. */
const EXIT_AFTER_BOUND_MS = 10_000;

let stopping = false;
async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal, timeoutMs: cfg.shutdownTimeoutMs }, "gateway stopping");
  setTimeout(() => {
    logger.error("shutdown did not finish in time; exiting anyway");
    logger.flush();
    process.exit(1);
  }, cfg.shutdownTimeoutMs + EXIT_AFTER_BOUND_MS).unref();
  try {
    await gateway.close();
    await telemetry.shutdown();
    await db.close();
  } catch (err) {
    logger.error({ err }, "unclean shutdown");
    process.exitCode = 1;
  }
  logger.flush();
  // Idle keep-alive sockets (scheduler client, tunnels) would hold the event loop open.
  process.exit();
}
process.once("SIGTERM", () => void stop("SIGTERM"));
process.once("SIGINT", () => void stop("SIGINT"));
