import { createLogger, initTelemetry } from "@dnah/platform";
import { configFromEnv } from "./config.js";
import { createVmm } from "./vmm.js";

const cfg = configFromEnv(process.env);
const logger = createLogger("vmm", { level: cfg.logLevel });
const telemetry = initTelemetry("dnah-vmm", process.env);
const vmm = await createVmm(cfg, logger);
await vmm.start();

for (const sig of ["SIGTERM", "SIGINT"] as const) {
  process.once(sig, () => {
    logger.info({ signal: sig }, "draining");
    const force = setTimeout(() => process.exit(1), 30_000);
    vmm
      .close()
      .then(() => telemetry.shutdown())
      .finally(() => {
        clearTimeout(force);
        process.exit(0);
      });
  });
}
