import { InvalidArgumentError } from "../../errors.js";
import type { Json } from "../../rest/body.js";

/**
 * Readers for Daytona request bodies and parameters. Unknown body fields are accepted (the
 * SDK sends fields newer than this server); known ones are type-checked, never coerced.
 */
export function daytonaBody(body: unknown): Json {
  if (body === undefined || body === null || body === "") return {};
  if (typeof body !== "object" || Array.isArray(body) || Buffer.isBuffer(body)) {
    throw new InvalidArgumentError("request body must be a JSON object");
  }
  return body as Json;
}

export function optBool(o: Json, key: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw new InvalidArgumentError(`${key} must be a boolean`);
  return v;
}

export function optStr(o: Json, key: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new InvalidArgumentError(`${key} must be a string`);
  return v;
}

/** An integer within [min, max]. */
export function optInt(o: Json, key: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) {
    throw new InvalidArgumentError(`${key} must be an integer from ${min} to ${max}`);
  }
  return v;
}

/** A path parameter that must be an integer (`/autodelete/-1` is one). */
export function intParam(raw: string, name: string, min: number, max: number): number {
  if (!/^-?\d{1,12}$/.test(raw)) throw new InvalidArgumentError(`${name} must be an integer`);
  const n = Number(raw);
  if (n < min || n > max) throw new InvalidArgumentError(`${name} must be from ${min} to ${max}`);
  return n;
}

/** A string map (labels, env); `null` counts as absent. */
export function optMap(o: Json, key: string): Record<string, string> | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  return toStringMap(v, key);
}

export function toStringMap(v: unknown, what: string): Record<string, string> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new InvalidArgumentError(`${what} must be an object of string values`);
  }
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== "string") throw new InvalidArgumentError(`${what}.${k.slice(0, 64)} must be a string`);
    out[k] = val;
  }
  return out;
}

/** Query parameters from the raw URL: repeated keys are arrays (`states=a&states=b`). */
export function queryOf(url: string): URLSearchParams {
  const i = url.indexOf("?");
  return new URLSearchParams(i < 0 ? "" : url.slice(i + 1));
}

export function oneParam(q: URLSearchParams, key: string): string | undefined {
  const all = q.getAll(key);
  if (all.length > 1) throw new InvalidArgumentError(`query parameter ${key} must be given once`);
  return all[0];
}

/** Repeated keys, and comma-separated values within them. */
export function listParam(q: URLSearchParams, key: string): string[] | undefined {
  const all = q
    .getAll(key)
    .flatMap((v) => v.split(","))
    .filter((v) => v !== "");
  return all.length === 0 ? undefined : all;
}
