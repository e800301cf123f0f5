import { DnahApiError, DnahClient } from "@dnah/mcp/client";
import type { Env } from "@dnah/platform";

/**
 * What `dnah` exits with, so scripts can tell failures apart (packages/cli/README.md).
 * `exec` and `shell` exit with their command's own code instead.
 */
export const EXIT = Object.freeze({
  ok: 0,
  failure: 1,
  usage: 2,
  notFound: 3,
  unauthenticated: 4,
});

export const DEFAULT_DNAH_URL = "http://127.0.0.1:3000";

/** A failure the user is told about in one line, with the exit code it deserves. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.failure,
  ) {
    super(message);
    this.name = "CliError";
  }
}

/** The exit code of a failure (pure): 404 → 3, 401/403 → 4, a usage error → 2, else 1. */
export function exitCodeOf(err: unknown): number {
  if (err instanceof CliError) return err.exitCode;
  if (err instanceof DnahApiError) {
    if (err.status === 404) return EXIT.notFound;
    if (err.status === 401 || err.status === 403) return EXIT.unauthenticated;
  }
  return EXIT.failure;
}

/** The gateway client from DNAH_URL (default http://127.0.0.1:3000) and DNAH_API_KEY. */
export function apiClient(env: Env): DnahClient {
  const apiKey = env.DNAH_API_KEY?.trim();
  if (apiKey === undefined || apiKey === "")
    throw new CliError(
      "set DNAH_API_KEY to a dnah API key (and DNAH_URL, default http://127.0.0.1:3000)",
      EXIT.unauthenticated,
    );
  const baseUrl = env.DNAH_URL?.trim() || DEFAULT_DNAH_URL;
  try {
    new URL(baseUrl);
  } catch {
    throw new CliError(`DNAH_URL is not a URL: '${baseUrl.slice(0, 200)}'`, EXIT.usage);
  }
  return new DnahClient({ baseUrl, apiKey });
}

/** `k=v` options (repeatable) as a map (pure); a value may contain `=`. */
export function keyValues(pairs: readonly string[] | undefined, option: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs ?? []) {
    const i = p.indexOf("=");
    if (i <= 0) throw new CliError(`${option} takes key=value, not '${p.slice(0, 100)}'`, EXIT.usage);
    out[p.slice(0, i)] = p.slice(i + 1);
  }
  return out;
}

/** Commander's collector for repeatable options. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

/** A positive integer option (pure). */
export function positiveInt(raw: string | undefined, option: string): number | undefined {
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw) || Number(raw) < 1)
    throw new CliError(`${option} takes a positive integer, not '${raw.slice(0, 50)}'`, EXIT.usage);
  return Number(raw);
}

/** Text columns (pure): every cell padded to its column's width, the last one left ragged. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length))) ?? [];
  return rows
    .map((r) =>
      r
        .map((c, i) => c.padEnd(widths[i]!))
        .join("  ")
        .trimEnd(),
    )
    .map((l) => `${l}\n`)
    .join("");
}

/** Writes to stdout and waits while the reader is slow (a pipe to `head` or `less`). */
export async function out(
  text: string | Uint8Array,
  stream: NodeJS.WriteStream = process.stdout,
): Promise<void> {
  if (stream.write(text)) return;
  await new Promise<void>((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.once("drain", done);
    stream.once("close", done);
  });
}

export const printJson = (value: unknown) => out(`${JSON.stringify(value, null, 2)}\n`);
