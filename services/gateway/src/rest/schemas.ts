/**
 * JSON Schemas of the native REST API, for its OpenAPI document (`/openapi.json`) only: the
 * `/v1` scope compiles them to no-ops (see `docsOnlySchemas` in ../openapi.ts), so the strict
 * hand-written readers of body.ts still decide what is accepted, with their own messages.
 * Shared shapes are components, referenced as `{ $ref: "<Name>#" }`.
 */

const str = (description?: string) => ({ type: "string", ...(description ? { description } : {}) });
const nullableStr = (description: string) => ({ type: ["string", "null"], description });
const int = (description: string) => ({ type: "integer", description });
const stringMap = (description: string) => ({
  type: "object",
  additionalProperties: { type: "string" },
  description,
});

export const LIFECYCLE_PROPERTIES = {
  autoStopMinutes: {
    type: "integer",
    minimum: 0,
    maximum: 4294967295,
    description: "Idle minutes before auto-stop; 0 never.",
  },
  autoArchiveDays: {
    type: "number",
    minimum: 0,
    description: "Days stopped before auto-archive; 0 never (fractions allowed).",
  },
  autoDeleteDays: {
    type: "number",
    minimum: 0,
    description: "Days stopped before auto-delete; 0 never (fractions allowed).",
  },
  clock: {
    type: "string",
    enum: ["state_change", "last_activity"],
    description: "What archive and delete count from.",
  },
  deleteOnStop: { type: "boolean", description: "Delete the sandbox when it stops." },
  expiresInSeconds: {
    type: "integer",
    minimum: 0,
    maximum: 4294967295,
    description: "A deadline from now whatever the activity; 0 removes it.",
  },
  onExpire: { type: "string", enum: ["delete", "stop"], description: "What the deadline does." },
} as const;

/** The shared shapes, each with its `$id` (its name under `components.schemas`). */
export const COMPONENT_SCHEMAS = [
  {
    $id: "Error",
    type: "object",
    description: "Every failure: a code from the gateway's error table and a message.",
    required: ["code", "message"],
    properties: {
      code: str("invalid_argument, unauthenticated, not_found, failed_precondition, payload_too_large, …"),
      message: str(),
    },
  },
  {
    $id: "Lifecycle",
    type: "object",
    properties: {
      type: { type: "string", enum: ["persistent", "ephemeral"] },
      autoStopMinutes: { type: "integer" },
      autoArchiveDays: { type: "number" },
      autoDeleteDays: { type: "number" },
      clock: LIFECYCLE_PROPERTIES.clock,
      deleteOnStop: { type: "boolean" },
      expiresAt: nullableStr("A running sandbox's deadline (ISO 8601); null for none."),
      onExpire: LIFECYCLE_PROPERTIES.onExpire,
    },
  },
  {
    $id: "Sandbox",
    type: "object",
    properties: {
      sandboxId: str(),
      templateId: str(),
      state: {
        type: "string",
        enum: ["unspecified", "starting", "running", "paused", "stopped", "archived", "lost", "deleted"],
      },
      metadata: stringMap("The caller's labels."),
      createdAt: nullableStr("ISO 8601."),
      cpuCount: { type: "integer" },
      memoryMib: { type: "integer" },
      hostId: str(),
      runtime: str("The VMM that runs it (e.g. qemu, firecracker)."),
      pausedAt: nullableStr("ISO 8601; null unless paused."),
      sourceSnapshotId: nullableStr("The snapshot it was restored or forked from."),
      lifecycle: { $ref: "Lifecycle#" },
      lastActivityAt: nullableStr("The last working call (the idle clock of auto-stop)."),
      archivedAt: nullableStr("ISO 8601; null unless archived."),
    },
  },
  {
    $id: "SandboxEvent",
    type: "object",
    properties: {
      eventId: str("A 64-bit counter, as a string."),
      sandboxId: str(),
      at: nullableStr("ISO 8601."),
      kind: str("created, paused, resumed, …"),
      fromState: { type: ["string", "null"] },
      toState: { type: ["string", "null"] },
      actor: str(),
      detail: str(),
    },
  },
  {
    $id: "SandboxMetrics",
    type: "object",
    properties: {
      timestamp: nullableStr("ISO 8601."),
      cpuCount: { type: "integer" },
      cpuUsedPct: { type: "number" },
      memUsedBytes: { type: "integer" },
      memTotalBytes: { type: "integer" },
      memCacheBytes: { type: "integer" },
      diskUsedBytes: { type: "integer" },
      diskTotalBytes: { type: "integer" },
    },
  },
  {
    $id: "ExecResult",
    type: "object",
    required: ["exitCode", "stdout", "stderr", "truncated"],
    properties: {
      exitCode: { type: "integer" },
      stdout: str("UTF-8."),
      stderr: str("UTF-8."),
      error: str("Why the process did not run or end normally (e.g. a timeout)."),
      truncated: { type: "boolean", description: "Output over the gateway's limit was dropped." },
    },
  },
  {
    $id: "FileEntry",
    type: "object",
    properties: {
      name: str(),
      path: str(),
      type: { type: "string", enum: ["file", "dir", "symlink"] },
      sizeBytes: { type: "integer" },
      modifiedAt: nullableStr("ISO 8601."),
    },
  },
  {
    $id: "Snapshot",
    type: "object",
    properties: {
      snapshotId: str(),
      sandboxId: str(),
      templateId: str(),
      name: { type: ["string", "null"] },
      runtime: str(),
      memory: { type: "boolean", description: "Whether a restore brings memory back (running processes)." },
      restoreSemantics: str(),
      sizeBytes: { type: "integer" },
      manifestSha256: str("Lower-case hex."),
      kid: str("The signing key's id (see /v1/snapshot-keys)."),
      signature: str("Base64."),
      createdAt: nullableStr("ISO 8601."),
      files: {
        type: "array",
        items: {
          type: "object",
          properties: { name: str(), sizeBytes: { type: "integer" }, sha256: str() },
        },
      },
      metadata: stringMap("The caller's labels."),
    },
  },
  {
    $id: "SnapshotKey",
    type: "object",
    properties: {
      kid: str(),
      publicKey: str("Base64 (Ed25519)."),
      status: { type: "string", enum: ["active", "verifying", "retired"] },
      createdAt: nullableStr("ISO 8601."),
      retiredAt: str("ISO 8601."),
    },
  },
  {
    $id: "ForkResult",
    type: "object",
    description: "One clone: `{sandbox}`, or `{error, code}` when that clone failed.",
    properties: {
      sandbox: { $ref: "Sandbox#" },
      error: str(),
      code: str("An error code of the gateway's table."),
    },
  },
] as const;

const ref = (name: string) => ({ $ref: `${name}#` });

/** A JSON answer. */
export const jsonAnswer = (description: string, schema: object) => ({
  description,
  content: { "application/json": { schema } },
});
export const sandboxAnswer = (description: string) => jsonAnswer(description, ref("Sandbox"));
export const objectOf = (key: string, schema: object) => ({
  type: "object",
  required: [key],
  properties: { [key]: schema },
});
export const listOf = (key: string, name: string) => objectOf(key, { type: "array", items: ref(name) });
export { ref };

export const noContent = { 204: { description: "Done; no body.", type: "null" } };

/** The failures every authenticated route can answer, plus the ones named. */
export function errorAnswers(...extra: (400 | 403 | 404 | 409 | 413 | 415 | 422 | 416 | 502 | 507)[]) {
  const out: Record<number, object> = {};
  const why: Record<number, string> = {
    400: "Bad input (invalid_argument).",
    401: "Missing or invalid API key.",
    403: "This key may not change it (permission_denied): built in, or another key's.",
    404: "No such sandbox, snapshot, file or route.",
    409: "The sandbox is not in a state that allows this (failed_precondition).",
    413: "Body over its limit.",
    415: "Not application/json.",
    416: "Range not satisfiable.",
    422: "Checksum mismatch: nothing written.",
    429: "Over this key's request budget (rate_limited); retry after `Retry-After` seconds.",
    502: "The sandbox's host did not answer.",
    503: "Scheduler, host or agent unavailable; retry.",
    507: "The share's quota is full.",
  };
  for (const code of [401, ...extra, 429, 503]) out[code] = jsonAnswer(why[code] ?? "Failure.", ref("Error"));
  return out;
}

export const sandboxParams = {
  type: "object",
  required: ["id"],
  properties: { id: str("The sandbox's id.") },
};
export const snapshotParams = {
  type: "object",
  required: ["idOrName"],
  properties: { idOrName: str("A snapshot's id or name.") },
};
/** A JSON request body (optional unless `required`). */
export const jsonBody = (properties: object, required: string[] = []) => ({
  type: "object",
  additionalProperties: false,
  properties,
  ...(required.length > 0 ? { required } : {}),
});
export const labels = stringMap("Labels (string values).");
export const envVars = stringMap("Environment variables of the sandbox's processes.");
export { int, str };

const BYTES = {
  "application/octet-stream": { schema: { type: "string", contentMediaType: "application/octet-stream" } },
};
const SHARE_QUERY = {
  type: "object",
  properties: {
    sha256: { type: "string", description: "GET: answer `{sizeBytes, sha256}` instead of the bytes." },
    uploads: { type: "string", description: "POST: start a chunked upload." },
    uploadId: { type: "string", description: "A chunked upload's id." },
    complete: { type: "string", description: "POST with uploadId: check and rename the upload into place." },
    format: {
      type: "string",
      enum: ["tar"],
      description: "A folder as a tar stream (GET out of it, PUT into it).",
    },
    digest: { type: "string", enum: ["sha256"], description: "PUT: compute the sha256 and answer it." },
    durable: { type: "string", description: "PUT: `true` fsyncs before the answer." },
  },
};
const SHARE: Record<
  "GET" | "PUT" | "POST" | "DELETE",
  { operationId: string; summary: string; rest: object }
> = {
  GET: {
    operationId: "shareDownload",
    summary: "Download from the share (Range, ?sha256, ?format=tar; works while paused)",
    rest: {
      headers: { type: "object", properties: { range: str("`bytes=a-b`: a part (206).") } },
      response: {
        200: { description: "The bytes (or `{sizeBytes, sha256}` with ?sha256).", content: BYTES },
        206: { description: "The requested range.", content: BYTES },
        ...errorAnswers(400, 404, 409, 416, 502),
      },
    },
  },
  PUT: {
    operationId: "shareUpload",
    summary:
      "Upload to the share, streamed (x-dnah-sha256 optional; ?uploadId with Content-Range for a chunk)",
    rest: {
      headers: {
        type: "object",
        properties: {
          "x-dnah-sha256": str("The expected sha256 (hex): a mismatch is 422 and nothing is written."),
          "x-dnah-durable": str("`1`: fsync before the answer."),
          "content-range": str("With ?uploadId: `bytes a-b/total`, the chunk's place."),
        },
      },
      body: { description: "The raw bytes.", content: BYTES },
      response: {
        200: jsonAnswer("Written whole (never a partial file); `sha256` when one was given or asked for.", {
          type: "object",
          properties: { path: str(), sizeBytes: { type: "integer" }, sha256: str() },
        }),
        ...errorAnswers(400, 404, 409, 413, 422, 502, 507),
      },
    },
  },
  POST: {
    operationId: "shareUploadControl",
    summary: "Start (?uploads) or complete (?uploadId=U&complete) a chunked upload",
    rest: {
      response: {
        200: jsonAnswer("Completed.", {
          type: "object",
          properties: { path: str(), sizeBytes: { type: "integer" }, sha256: str() },
        }),
        201: jsonAnswer("Started.", {
          type: "object",
          properties: { uploadId: str(), path: str(), size: { type: "integer" }, expiresAt: str() },
        }),
        ...errorAnswers(400, 404, 409, 422, 502, 507),
      },
    },
  },
  DELETE: {
    operationId: "shareUploadAbort",
    summary: "Abort a chunked upload (?uploadId=U)",
    rest: { response: { ...noContent, ...errorAnswers(400, 404, 409, 502) } },
  },
};

/** The schema of `<method> /v1/sandboxes/:id/share/*` (the wildcard documented as `path`). */
export function shareSchema(method: keyof typeof SHARE) {
  const { operationId, summary, rest } = SHARE[method];
  return {
    schema: {
      tags: ["share"],
      operationId,
      summary,
      params: {
        type: "object",
        required: ["id", "*"],
        properties: { id: str("The sandbox's id."), "*": str("A path inside the share folder.") },
      },
      querystring: SHARE_QUERY,
      ...rest,
    },
  };
}
