import { InvalidArgumentError } from "./errors.js";

const HOST_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$/;
const MAX_MAP_ENTRIES = 256;
const MAX_KEY_CHARS = 256;
const MAX_VALUE_CHARS = 64 * 1024;

export function requireId(field: string, value: string): string {
  if (value === "") throw new InvalidArgumentError(`${field} is required`);
  if (value.length > 256) throw new InvalidArgumentError(`${field} is longer than 256 characters`);
  return value;
}

/**
 * Metadata and environment maps are stored as jsonb, which cannot hold U+0000; environment
 * variable names also cannot contain '='.
 */
export function checkStringMap(field: string, map: Readonly<Record<string, string>>, env = false): void {
  const entries = Object.entries(map);
  if (entries.length > MAX_MAP_ENTRIES)
    throw new InvalidArgumentError(`${field}: more than ${MAX_MAP_ENTRIES} entries`);
  for (const [k, v] of entries) {
    if (k === "") throw new InvalidArgumentError(`${field}: empty key`);
    if (k.length > MAX_KEY_CHARS)
      throw new InvalidArgumentError(`${field}: key longer than ${MAX_KEY_CHARS} characters`);
    if (v.length > MAX_VALUE_CHARS)
      throw new InvalidArgumentError(`${field}['${k}']: value longer than ${MAX_VALUE_CHARS} characters`);
    if (k.includes("\0") || v.includes("\0"))
      throw new InvalidArgumentError(`${field}: keys and values cannot contain NUL`);
    if (env && k.includes("=")) throw new InvalidArgumentError(`${field}: name '${k}' contains '='`);
  }
}

/** Counts arrive as uint32 but are stored as Postgres integer. */
const MAX_COUNT = 2 ** 31 - 1;

export function checkCount(field: string, n: number): number {
  if (n > MAX_COUNT) throw new InvalidArgumentError(`${field} is larger than ${MAX_COUNT}`);
  return n;
}

export interface HostRegistration {
  hostId: string;
  vmmUrl: string;
  runtime: string;
  capacity: number;
  /** 0 = not reported. */
  vcpus?: number;
  memoryMib?: number;
  diskFreeMib?: number;
  labels?: Record<string, string>;
  templates?: string[];
}

const LABEL_RE = /^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$/;
const MAX_LABELS = 32;
const MAX_TEMPLATES = 1_000;

/** Placement labels: at most 32, keys and values `[A-Za-z0-9][A-Za-z0-9._/-]{0,62}`. */
export function checkLabels(name: string, labels: Record<string, string>): Record<string, string> {
  const entries = Object.entries(labels);
  if (entries.length > MAX_LABELS) throw new InvalidArgumentError(`${name}: at most ${MAX_LABELS} labels`);
  for (const [k, v] of entries)
    if (!LABEL_RE.test(k) || !LABEL_RE.test(v))
      throw new InvalidArgumentError(
        `${name}: '${k.slice(0, 64)}=${v.slice(0, 64)}' must be letters, digits, '.', '_', '/', '-' (at most 63 each)`,
      );
  return labels;
}

/** Template ids a host reports it holds (at most 1000, each a plausible id). */
export function checkTemplateList(templates: readonly string[]): string[] {
  if (templates.length > MAX_TEMPLATES) throw new InvalidArgumentError(`templates: at most ${MAX_TEMPLATES}`);
  for (const t of templates)
    if (!LABEL_RE.test(t))
      throw new InvalidArgumentError(`templates: '${t.slice(0, 64)}' is not a template id`);
  return [...templates];
}

export function checkHostId(hostId: string): string {
  if (!HOST_ID_RE.test(hostId)) {
    throw new InvalidArgumentError(
      hostId === ""
        ? "host_id is required"
        : `host_id '${hostId.slice(0, 140)}' does not match ${HOST_ID_RE.source}`,
    );
  }
  return hostId;
}

export function checkHostRegistration(h: HostRegistration): HostRegistration {
  checkHostId(h.hostId);
  let url: URL;
  try {
    url = new URL(h.vmmUrl);
  } catch {
    throw new InvalidArgumentError(`vmm_url '${h.vmmUrl.slice(0, 200)}' is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new InvalidArgumentError(`vmm_url must be http:// or https://, got '${url.protocol}'`);
  }
  if (url.username !== "" || url.password !== "")
    throw new InvalidArgumentError("vmm_url must not hold credentials");
  if (h.runtime === "" || h.runtime.length > 64)
    throw new InvalidArgumentError("runtime is required (at most 64 characters)");
  checkCount("capacity_sandboxes", h.capacity);
  checkLabels("labels", h.labels ?? {});
  checkTemplateList(h.templates ?? []);
  return { ...h, vmmUrl: url.origin + url.pathname.replace(/\/$/, "") };
}
