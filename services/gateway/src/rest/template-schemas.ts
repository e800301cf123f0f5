/**
 * OpenAPI shapes of the template routes (documentation only, like schemas.ts; the strict
 * readers in templates.ts and templates/steps.ts decide what is accepted).
 */
const str = (description?: string) => ({ type: "string", ...(description ? { description } : {}) });
const nullableStr = (description: string) => ({ type: ["string", "null"], description });

const STEP = {
  type: "object",
  required: ["type"],
  description:
    "A build step. run: {command, user?}; apt: {packages} (as root); npm: {packages, global?}; pip: {packages}; copy: {src, dest, filesHash}; env: {vars}; workdir: {path}; user: {name}. Any step may set `force: true` (rebuild it and every later step).",
  properties: {
    type: { type: "string", enum: ["run", "apt", "npm", "pip", "copy", "env", "workdir", "user"] },
    command: str("run: a bash command."),
    user: str("run: the user for this step only."),
    packages: { type: "array", items: { type: "string" }, description: "apt, npm, pip: package names." },
    global: { type: "boolean", description: "npm: install globally (as root)." },
    src: str("copy: a path in the context tar."),
    dest: str("copy: where it goes (absolute, or relative to the workdir)."),
    filesHash: str("copy: the sha256 of the uploaded context tar."),
    vars: { type: "object", additionalProperties: { type: "string" }, description: "env: variables." },
    path: str("workdir: an absolute path."),
    name: str("user: the user later steps and the start command run as."),
    force: { type: "boolean" },
  },
};

export const START = {
  type: "object",
  description: "What every sandbox of the template starts with, supervised, before it is handed out.",
  properties: {
    command: str("A bash command."),
    readyPort: { type: "integer", minimum: 1, maximum: 65535, description: "Ready once this port accepts." },
    readyCommand: str("Ready once this command exits 0."),
  },
};

export const TEMPLATE_SCHEMAS = [
  {
    $id: "Template",
    type: "object",
    properties: {
      templateId: str("Its name."),
      aliases: { type: "array", items: { type: "string" } },
      status: {
        type: "string",
        enum: ["building", "ready", "error"],
        description:
          "ready: sandboxes can start from it; building: no good build yet; error: none succeeded.",
      },
      public: { type: "boolean", description: "Every API key may start sandboxes from it." },
      builtin: { type: "boolean" },
      owned: { type: "boolean", description: "Built by the calling API key." },
      baseTemplateId: nullableStr("What it was built FROM."),
      latestBuildId: nullableStr("The newest build."),
      readyBuildId: nullableStr("The build its sandboxes start from."),
      cpuCount: { type: "integer" },
      memoryMib: { type: "integer" },
      createdAt: nullableStr("ISO 8601."),
      updatedAt: nullableStr("ISO 8601."),
    },
  },
  {
    $id: "TemplateBuild",
    type: "object",
    properties: {
      buildId: str(),
      templateId: str(),
      status: {
        type: "string",
        enum: ["waiting", "building", "ready", "error", "cancelled"],
        description: "waiting: reserved (E2B's builder), its steps not sent yet.",
      },
      reason: nullableStr("Why it failed or was cancelled."),
      hostId: str("Where it runs."),
      createdAt: nullableStr("ISO 8601."),
      finishedAt: nullableStr("ISO 8601."),
      result: {
        type: ["object", "null"],
        description: "Once ready: how much came from the layer cache.",
        properties: {
          buildKey: str("Hash of the base and every step."),
          cachedSteps: { type: "integer" },
          builtSteps: { type: "integer" },
          sizeBytes: { type: "integer" },
          durationMs: { type: "integer" },
        },
      },
    },
  },
  {
    $id: "TemplateBuildLog",
    type: "object",
    properties: {
      at: nullableStr("ISO 8601."),
      level: { type: "string", enum: ["info", "warn", "error"] },
      message: str(),
    },
  },
  { $id: "TemplateStep", ...STEP },
] as const;
