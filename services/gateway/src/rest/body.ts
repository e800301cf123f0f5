import { InvalidArgumentError } from "../errors.js";

/**
 * Small, strict readers for REST input. Types are checked, never coerced ("5" is not a
 * number), and unknown fields are refused so that typos (`env` for `envs`) do not pass
 * silently.
 */
export type Json = Record<string, unknown>;

/** A JSON object body; an absent body counts as `{}`. */
export function objectBody(body: unknown, allowed: readonly string[]): Json {
  if (body === undefined || body === null) return {};
  if (typeof body !== "object" || Array.isArray(body) || Buffer.isBuffer(body)) {
    throw new InvalidArgumentError("request body must be a JSON object");
  }
  for (const k of Object.keys(body)) {
    if (!allowed.includes(k)) throw new InvalidArgumentError(`unknown field '${k.slice(0, 64)}'`);
  }
  return body as Json;
}

export function optString(o: Json, key: string): string | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new InvalidArgumentError(`'${key}' must be a string`);
  return v;
}

export function reqString(o: Json, key: string): string {
  const v = optString(o, key);
  if (v === undefined) throw new InvalidArgumentError(`'${key}' is required`);
  return v;
}

export function optStringMap(o: Json, key: string): Record<string, string> | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new InvalidArgumentError(`'${key}' must be an object of string values`);
  }
  const out: Record<string, string> = {};
  for (const [k, val] of Object.entries(v)) {
    if (typeof val !== "string")
      throw new InvalidArgumentError(`'${key}.${k.slice(0, 64)}' must be a string`);
    out[k] = val;
  }
  return out;
}

export function optUint32(o: Json, key: string): number | undefined {
  const v = o[key];
  if (v === undefined) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < 0 || v > 0xffffffff) {
    throw new InvalidArgumentError(`'${key}' must be an integer from 0 to 4294967295`);
  }
  return v;
}

/** One query parameter given at most once. */
export function queryParam(query: unknown, key: string): string | undefined {
  const v = (query as Record<string, unknown> | undefined)?.[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string") throw new InvalidArgumentError(`query parameter '${key}' must be given once`);
  return v;
}
