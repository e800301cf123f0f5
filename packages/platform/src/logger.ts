import { pino } from "pino";

export type Logger = pino.Logger;

export interface LoggerOptions {
  level?: string;
  /** Where to write; defaults to stderr so stdout stays free for program output. */
  destination?: number;
}

/** A structured logger for one service. Canonical fields: `sandbox.id`, `host.id`, `snapshot.id`. */
export function createLogger(service: string, opts: LoggerOptions = {}): Logger {
  return pino(
    { name: service, level: opts.level ?? "info", base: { service } },
    pino.destination({ fd: opts.destination ?? 2, sync: false }),
  );
}

/** A logger that drops everything; for tests that assert on behaviour, not logs. */
export function silentLogger(): Logger {
  return pino({ level: "silent" });
}
