import { createLogger, initTelemetry } from "@dnah/platform";
import { configFromEnv } from "./config.js";
import { BUSY_GRACE_MS, createVmm } from "./vmm.js";

const cfg = configFromEnv(process.env);
const logger = createLogger("vmm", { level: cfg.logLevel });
const telemetry = initTelemetry("dnah-vmm", process.env);
const vmm = await createVmm(cfg, logger);
await vmm.start();

/** Past the drain bound, creates finishing (BUSY_GRACE_MS) and destroying every sandbox get this long. */
const EXIT_AFTER_BOUND_MS = BUSY_GRACE_MS + 30_000;

let stopping = false;
function stop(signal: NodeJS.Signals): void {
  if (stopping) return;
  stopping = true;
  logger.info({ signal, timeoutMs: cfg.shutdownTimeoutMs }, "draining");
  setTimeout(() => {
    logger.error(
      "shutdown did not finish in time; exiting with sandboxes left (the next start reclaims them)",
    );
    logger.flush();
    process.exit(1);
  }, cfg.shutdownTimeoutMs + EXIT_AFTER_BOUND_MS).unref();
  vmm
    .close()
    .then(() => telemetry.shutdown())
    .then(
      () => {
        logger.flush();
        process.exit(0);
      },
      (err: unknown) => {
        logger.error({ err }, "unclean shutdown");
        logger.flush();
        process.exit(1);
      },
    );
}
process.once("SIGTERM", stop);
process.once("SIGINT", stop);
