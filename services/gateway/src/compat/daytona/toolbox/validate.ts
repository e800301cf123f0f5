import { InvalidArgumentError } from "../../../errors.js";
import { checkEnvVars } from "../../../rpc/validate.js";
import { resolveSandboxPath } from "../../../sandbox/paths.js";

/**
 * Readers for toolbox request bodies and query strings: each names the offending field in a
 * 400 instead of letting a wrong type reach the sandbox.
 */
export type Json = Record<string, unknown>;

export function body(b: unknown): Json {
  if (b === undefined || b === null || b === "") return {};
  if (typeof b !== "object" || Array.isArray(b))
    throw new InvalidArgumentError("request body must be a JSON object");
  return b as Json;
}

export function str(o: Json, key: string): string {
  const v = o[key];
  if (typeof v !== "string" || v === "")
    throw new InvalidArgumentError(`${key} is required (a non-empty string)`);
  return v;
}

export function optStr(o: Json, key: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string") throw new InvalidArgumentError(`${key} must be a string`);
  return v;
}

export function optBool(o: Json, key: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v === "boolean") return v;
  if (v === "true") return true;
  if (v === "false") return false;
  throw new InvalidArgumentError(`${key} must be a boolean`);
}

export function optInt(o: Json, key: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined || v === null || v === "") return undefined;
  const n = typeof v === "string" ? Number(v) : v;
  if (typeof n !== "number" || !Number.isInteger(n) || n < min || n > max)
    throw new InvalidArgumentError(`${key} must be an integer from ${min} to ${max}`);
  return n;
}

export function strArray(o: Json, key: string, opts: { required: boolean; max: number }): string[] {
  const v = o[key];
  if (v === undefined || v === null) {
    if (opts.required) throw new InvalidArgumentError(`${key} is required (an array of strings)`);
    return [];
  }
  if (!Array.isArray(v) || v.some((s) => typeof s !== "string"))
    throw new InvalidArgumentError(`${key} must be an array of strings`);
  if (v.length > opts.max) throw new InvalidArgumentError(`${key}: at most ${opts.max} entries`);
  return v as string[];
}

export function envMap(o: Json, key: string): Record<string, string> {
  const v = o[key];
  if (v === undefined || v === null) return {};
  if (typeof v !== "object" || Array.isArray(v)) throw new InvalidArgumentError(`${key} must be an object`);
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== "string") throw new InvalidArgumentError(`${key}.${k.slice(0, 64)} must be a string`);
    out[k] = val;
  }
  checkEnvVars(key, out);
  return out;
}

/** A sandbox path from the caller: relative ones resolve against the user's home (= exec's default cwd). */
export function sandboxPath(value: string | undefined, field: string): string {
  if (value === undefined || value === "") throw new InvalidArgumentError(`${field} is required`);
  return resolveSandboxPath(value);
}

/** `"755"`, `"0644"` → the octal string chmod takes; anything else is a 400. */
export function octalMode(value: string, field: string): string {
  if (!/^0?[0-7]{3,4}$/.test(value))
    throw new InvalidArgumentError(`${field} must be an octal mode such as "755"`);
  return value;
}

/** Query values arrive as strings (or arrays when repeated): the first one counts. */
export function query(q: unknown): Json {
  if (typeof q !== "object" || q === null) return {};
  const out: Json = {};
  for (const [k, v] of Object.entries(q)) out[k] = Array.isArray(v) ? v[0] : v;
  return out;
}
