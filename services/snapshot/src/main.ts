import { createLogger, initTelemetry } from "@dnah/platform";
import { configFromEnv } from "./config.js";
import { createSnapshotService } from "./snapshot.js";

// The only file that reads process.env, listens or handles signals.

/** How long SIGTERM waits for in-flight calls before exiting anyway. */
const DRAIN_TIMEOUT_MS = 10_000;

const logger = createLogger("snapshot");

async function main(): Promise<void> {
  const cfg = configFromEnv(process.env);
  const telemetry = initTelemetry("snapshot", process.env);
  const service = createSnapshotService(cfg, { logger });
  await service.start();

  let stopping = false;
  const stop = (signal: NodeJS.Signals) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, "shutting down");
    const timer = setTimeout(() => {
      logger.error({ timeoutMs: DRAIN_TIMEOUT_MS }, "drain timed out; exiting");
      logger.flush();
      process.exit(1);
    }, DRAIN_TIMEOUT_MS);
    timer.unref();
    service
      .close()
      .then(() => telemetry.shutdown())
      .then(
        () => {
          logger.flush();
          process.exit(0);
        },
        (err: unknown) => {
          logger.error({ err }, "shutdown failed");
          logger.flush();
          process.exit(1);
        },
      );
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}

main().catch((err: unknown) => {
  logger.fatal({ err }, "snapshot service failed to start");
  logger.flush();
  process.exitCode = 1;
});
