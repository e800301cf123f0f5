import { type Env, initTelemetry } from "@dnah/platform";
import { startDevStack } from "../stack.js";

/** `dnah dev`: every service in one process; prints how to reach it. */
export async function dev(env: Env): Promise<void> {
  const telemetry = initTelemetry("dnah-dev", env);
  const stack = await startDevStack({ DNAH_PORT: "3000", ...env });
  const out = process.stdout;
  out.write(`\ndnah is running\n`);
  out.write(`  URL:        ${stack.url}\n`);
  out.write(`  API key:    ${stack.apiKey ?? "(an existing key; set DNAH_API_KEY to fix one)"}\n`);
  out.write(
    `  database:   ${stack.db.kind === "pglite" ? "embedded PGlite (in memory; set DATABASE_URL for Postgres)" : "Postgres (DATABASE_URL)"}\n`,
  );
  out.write(`  isolation:  ${stack.isolation}\n`);
  out.write(
    `  telemetry:  ${telemetry.exporting ? `exporting to ${env.OTEL_EXPORTER_OTLP_ENDPOINT}` : "off (set OTEL_EXPORTER_OTLP_ENDPOINT)"}\n\n`,
  );
  out.write(
    `  try:  curl -s -X POST ${stack.url}/v1/sandboxes -H 'Authorization: Bearer ${stack.apiKey ?? "<key>"}' -H 'Content-Type: application/json' -d '{}'\n\n`,
  );
  for (const sig of ["SIGINT", "SIGTERM"] as const) {
    process.once(sig, () => {
      process.stderr.write(`dnah: ${sig}: stopping (deleting warm sandboxes)…\n`);
      const force = setTimeout(() => process.exit(1), 30_000);
      stack
        .close()
        .then(() => telemetry.shutdown())
        .then(
          () => process.exit(0),
          (err: Error) => {
            process.stderr.write(`dnah: shutdown failed: ${err.message}\n`);
            process.exit(1);
          },
        )
        .finally(() => clearTimeout(force));
    });
  }
}
