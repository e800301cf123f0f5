import { readFileSync } from "node:fs";

/** Raised once with every problem found, so an operator fixes them all in one go. */
export class ConfigError extends Error {
  constructor(readonly problems: readonly string[]) {
    super(`invalid configuration:\n  - ${problems.join("\n  - ")}`);
    this.name = "ConfigError";
  }
}

export type Env = Readonly<Record<string, string | undefined>>;

/**
 * Reads typed settings from an environment map, collecting problems instead of failing on the
 * first. Secrets may come from `<NAME>_FILE`. Call `done()` to throw if anything was wrong.
 */
export class EnvReader {
  private readonly problems: string[] = [];
  constructor(private readonly env: Env) {}

  str(name: string, fallback: string): string {
    return this.optStr(name) ?? fallback;
  }

  optStr(name: string): string | undefined {
    const v = this.env[name];
    return v === undefined || v === "" ? undefined : v;
  }

  /** A secret: `NAME` or the contents of the file named by `NAME_FILE` (trimmed). */
  secret(name: string): string | undefined {
    const file = this.optStr(`${name}_FILE`);
    if (file !== undefined) {
      try {
        return readFileSync(file, "utf8").trim();
      } catch (err) {
        this.problems.push(`${name}_FILE: cannot read ${file}: ${(err as Error).message}`);
        return undefined;
      }
    }
    return this.optStr(name);
  }

  int(name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    const raw = this.optStr(name);
    if (raw === undefined) return fallback;
    const n = Number(raw);
    if (!Number.isInteger(n) || n < min || n > max) {
      this.problems.push(`${name}: expected an integer in [${min}, ${max}], got ${JSON.stringify(raw)}`);
      return fallback;
    }
    return n;
  }

  bool(name: string, fallback: boolean): boolean {
    const raw = this.optStr(name);
    if (raw === undefined) return fallback;
    if (/^(1|true|yes|on)$/i.test(raw)) return true;
    if (/^(0|false|no|off)$/i.test(raw)) return false;
    this.problems.push(`${name}: expected true or false, got ${JSON.stringify(raw)}`);
    return fallback;
  }

  oneOf<T extends string>(name: string, allowed: readonly T[], fallback: T): T {
    const raw = this.optStr(name);
    if (raw === undefined) return fallback;
    if ((allowed as readonly string[]).includes(raw)) return raw as T;
    this.problems.push(`${name}: expected one of ${allowed.join(", ")}, got ${JSON.stringify(raw)}`);
    return fallback;
  }

  /** Records a problem found while interpreting values (cross-field checks). */
  problem(message: string): void {
    this.problems.push(message);
  }

  done(): void {
    if (this.problems.length > 0) throw new ConfigError(this.problems);
  }
}
