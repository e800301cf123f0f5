import { InvalidArgumentError } from "../../errors.js";
import type { Json } from "../../rest/body.js";

/**
 * Readers for E2B request bodies. Unlike the native REST API, unknown fields are accepted:
 * the SDK sends fields this server does not implement yet (`mcp`, `network`, …).
 */
export function e2bBody(body: unknown): Json {
  if (body === undefined || body === null) return {};
  if (typeof body !== "object" || Array.isArray(body) || Buffer.isBuffer(body)) {
    throw new InvalidArgumentError("request body must be a JSON object");
  }
  return body as Json;
}

const INT32_MAX = 2_147_483_647;

/** An int32 number of seconds (E2B `timeout`). */
export function optInt32(o: Json, key: string): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < -INT32_MAX - 1 || v > INT32_MAX) {
    throw new InvalidArgumentError(`'${key}' must be an integer`);
  }
  return v;
}

export function optBool(o: Json, key: string): boolean | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean") throw new InvalidArgumentError(`'${key}' must be a boolean`);
  return v;
}
