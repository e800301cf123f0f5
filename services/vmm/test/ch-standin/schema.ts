import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { Ajv, type ErrorObject, type ValidateFunction } from "ajv";
import { parse } from "yaml";

/**
 * Request-body validation against the vendored upstream Cloud Hypervisor OpenAPI document
 * (`cloud-hypervisor.yaml` beside this file). Used by the CH stand-in for every request and
 * by the VmConfig builder tests.
 *
 * Stricter than the document in one way: an object schema that lists `properties` rejects
 * any other field (the document leaves `additionalProperties` open), so a misspelt field
 * fails here instead of being silently ignored. Integer `format`s are checked as ranges.
 */
export const SCHEMA_FILE = join(dirname(fileURLToPath(import.meta.url)), "cloud-hypervisor.yaml");

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

interface OpenApiDoc {
  info: { version: string };
  paths: Record<string, Record<string, { requestBody?: { required?: boolean; content?: JsonObject } }>>;
  components: { schemas: Record<string, JsonObject> };
}

const INT_RANGES: Record<string, [number, number]> = {
  int8: [-(2 ** 7), 2 ** 7 - 1],
  int16: [-(2 ** 15), 2 ** 15 - 1],
  int32: [-(2 ** 31), 2 ** 31 - 1],
  // JSON numbers past 2^53 lose precision anyway; the safe range is what we can check.
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  uint8: [0, 2 ** 8 - 1],
  uint16: [0, 2 ** 16 - 1],
  uint32: [0, 2 ** 32 - 1],
};

/** Closes every object schema that lists properties (see the module comment). */
function closeObjects(node: Json): Json {
  if (Array.isArray(node)) return node.map(closeObjects);
  if (node === null || typeof node !== "object") return node;
  const out: JsonObject = {};
  for (const [k, v] of Object.entries(node))
    out[k] = k === "properties" ? mapValues(v, closeObjects) : closeObjects(v);
  if (out.properties !== undefined && out.additionalProperties === undefined)
    out.additionalProperties = false;
  return out;
}

function mapValues(v: Json, fn: (x: Json) => Json): Json {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return v;
  return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, fn(x)]));
}

export interface RequestSpec {
  /** `#/components/schemas/<name>` of the body, undefined when the endpoint takes none. */
  readonly schema: string | undefined;
  readonly required: boolean;
}

export class ChSchema {
  readonly doc: OpenApiDoc;
  private readonly ajv: Ajv;
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(file = SCHEMA_FILE) {
    this.doc = parse(readFileSync(file, "utf8")) as OpenApiDoc;
    this.ajv = new Ajv({ allErrors: true, strict: false });
    for (const [name, [min, max]] of Object.entries(INT_RANGES))
      this.ajv.addFormat(name, {
        type: "number",
        validate: (n: number) => Number.isInteger(n) && n >= min && n <= max,
      });
    this.ajv.addSchema(
      { $id: "ch", components: { schemas: closeObjects(this.doc.components.schemas as Json) } },
      "ch",
    );
  }

  /** The API version of the document (`info.version`). */
  get apiVersion(): string {
    return this.doc.info.version;
  }

  /** What the document says `method /endpoint` takes; undefined for an unknown route. */
  request(method: string, endpoint: string): RequestSpec | undefined {
    const op = this.doc.paths[`/${endpoint}`]?.[method.toLowerCase()];
    if (!op) return undefined;
    const schema = op.requestBody?.content?.["application/json"] as
      | { schema?: { $ref?: string } }
      | undefined;
    const ref = schema?.schema?.$ref;
    return { schema: ref?.replace("#/components/schemas/", ""), required: op.requestBody?.required === true };
  }

  /** Problems of `value` against schema `name` (empty when valid). */
  validate(name: string, value: unknown): string[] {
    let v = this.validators.get(name);
    if (!v) {
      const found = this.ajv.getSchema(`ch#/components/schemas/${name}`);
      if (!found) throw new Error(`no schema ${name} in ${SCHEMA_FILE}`);
      v = found;
      this.validators.set(name, v);
    }
    if (v(value)) return [];
    return (v.errors ?? []).map(describe);
  }
}

function describe(e: ErrorObject): string {
  const where = e.instancePath || "(body)";
  if (e.keyword === "additionalProperties")
    return `${where}: unknown field '${(e.params as { additionalProperty: string }).additionalProperty}'`;
  return `${where}: ${e.message ?? e.keyword}`;
}
