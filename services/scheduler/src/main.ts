import { ConfigError, createLogger, initTelemetry } from "@dnah/platform";
import { configFromEnv } from "./config.js";
import { createScheduler } from "./scheduler.js";

let cfg: ReturnType<typeof configFromEnv>;
try {
  cfg = configFromEnv(process.env);
} catch (err) {
  if (!(err instanceof ConfigError)) throw err;
  process.stderr.write(`scheduler: ${err.message}\n`);
  process.exit(2);
}

const telemetry = initTelemetry("scheduler", process.env);
const logger = createLogger("scheduler", { level: cfg.logLevel });
const scheduler = createScheduler(cfg, { logger });

function exit(code: number): never {
  logger.flush();
  process.exit(code);
}

let stopping = false;
async function shutdown(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  logger.info({ signal, timeoutMs: cfg.shutdownTimeoutMs }, "shutting down");
  setTimeout(() => {
    logger.error("shutdown timed out; exiting with work still in flight");
    exit(1);
  }, cfg.shutdownTimeoutMs).unref();
  try {
    await scheduler.close();
    await telemetry.shutdown();
    exit(0);
  } catch (err) {
    logger.error({ err }, "shutdown failed");
    exit(1);
  }
}
process.once("SIGTERM", () => void shutdown("SIGTERM"));
process.once("SIGINT", () => void shutdown("SIGINT"));

// Handlers go in first: a SIGTERM during start-up still closes what was opened.
try {
  await scheduler.start();
} catch (err) {
  logger.fatal({ err }, "scheduler failed to start");
  await scheduler
    .close()
    .catch((closeErr: unknown) => logger.error({ err: closeErr }, "close after failed start"));
  exit(1);
}
