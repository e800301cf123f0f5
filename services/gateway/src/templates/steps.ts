import { TemplateStepKind } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { InvalidArgumentError } from "../errors.js";

/**
 * Template build steps, pure: the native JSON steps (`{type: "apt", packages: [...]}` …) and a
 * builder that the Dockerfile subset and the E2B and Daytona builders share, all ending as the
 * vmm's five step kinds (RUN, COPY, ENV, WORKDIR, USER). The vmm runs RUN steps with bash as
 * the current user, root until a USER step says otherwise (as in a Dockerfile).
 */

/** One vmm TemplateStep, as a plain object (a valid init shape for the generated message). */
export interface Step {
  kind: TemplateStepKind;
  args: string[];
  /** COPY: the sha256 of the context tar holding the source; "" otherwise. */
  filesHash: string;
  force: boolean;
}

/** The command a template's sandboxes start with, and when they count as ready. */
export interface Start {
  command: string;
  /** 0: not checked. */
  readyPort: number;
  /** "": not checked. */
  readyCommand: string;
}

export const SHA256_RE = /^[0-9a-f]{64}$/;
/** A template name (its id) or alias, and an E2B tag: the scheduler's rule. */
export const TEMPLATE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,255}$/;
/** User names, owners and modes as the vmm takes them. */
export const USER_NAME_RE = /^[a-z_][a-z0-9_-]{0,31}$/;
export const OWNER_RE = /^[a-z_][a-z0-9_-]{0,31}(:[a-z_][a-z0-9_-]{0,31})?$/;
export const MODE_RE = /^[0-7]{3,4}$/;
const APT_PACKAGE_RE = /^[a-z0-9][A-Za-z0-9+.:=~/_-]{0,127}$/;
const NPM_PACKAGE_RE = /^[@A-Za-z0-9][\w@./:^~<>=*+#-]{0,213}$/;
const PIP_PACKAGE_RE = /^[A-Za-z0-9][\w.[\],<>=!~*+@:/-]{0,199}$/;
const MAX_PACKAGES = 500;
const ROOT = "root";

/** A word for bash, single-quoted unless it needs no quoting. */
export function shellQuote(s: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(s)) return s;
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/** An argv as one bash command line. */
export function shellJoin(argv: readonly string[]): string {
  return argv.map(shellQuote).join(" ");
}

/** `apt-get install` of packages, as root, leaving no package lists behind. */
export function aptInstallCommand(packages: readonly string[]): string {
  return `apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${shellJoin(packages)} && rm -rf /var/lib/apt/lists/*`;
}

export function npmInstallCommand(packages: readonly string[], global: boolean): string {
  return `npm install ${global ? "-g " : ""}--no-fund --no-audit ${shellJoin(packages)}`;
}

export function pipInstallCommand(packages: readonly string[]): string {
  return `python3 -m pip install --no-cache-dir --break-system-packages ${shellJoin(packages)}`;
}

/**
 * Builds a step list while tracking the user later steps run as (root until a USER step). A
 * RUN meant for another user (apt as root, a `run` with `user`) names that user on the step
 * itself, for that step only.
 */
export class StepList {
  readonly steps: Step[] = [];
  private user = ROOT;

  /** The user the start command and later steps run as. */
  get currentUser(): string {
    return this.user;
  }

  run(command: string, opts: { user?: string | undefined; force?: boolean } = {}): this {
    const as = opts.user !== undefined && opts.user !== this.user ? [opts.user] : [];
    return this.push(TemplateStepKind.RUN, [command, ...as], "", opts.force);
  }

  /** `owner` (user or user:group) and `mode` (octal) of what is copied; the build's user by default. */
  copy(
    src: string,
    dest: string,
    filesHash: string,
    opts: { owner?: string | undefined; mode?: string | undefined; force?: boolean } = {},
  ): this {
    const extra =
      opts.mode !== undefined ? [opts.owner ?? "", opts.mode] : opts.owner !== undefined ? [opts.owner] : [];
    return this.push(TemplateStepKind.COPY, [src, dest, ...extra], filesHash, opts.force);
  }

  env(vars: readonly (readonly [string, string])[], force = false): this {
    if (vars.length === 0) return this;
    return this.push(TemplateStepKind.ENV, vars.flat(), "", force);
  }

  workdir(path: string, force = false): this {
    return this.push(TemplateStepKind.WORKDIR, [path], "", force);
  }

  setUser(name: string, force = false): this {
    this.user = name;
    return this.push(TemplateStepKind.USER, [name], "", force);
  }

  private push(kind: TemplateStepKind, args: string[], filesHash: string, force = false): this {
    this.steps.push({ kind, args, filesHash, force });
    return this;
  }
}

type Json = Record<string, unknown>;

const STEP_FIELDS: Record<string, readonly string[]> = {
  run: ["command", "user"],
  apt: ["packages"],
  npm: ["packages", "global"],
  pip: ["packages"],
  copy: ["src", "dest", "filesHash", "owner", "mode"],
  env: ["vars"],
  workdir: ["path"],
  user: ["name"],
};

/**
 * The native JSON steps, checked strictly (unknown types and fields are refused, types never
 * coerced), as vmm steps:
 *
 *   {type: "run", command, user?}          RUN (as `user` for this step only)
 *   {type: "apt", packages: [...]}         RUN apt-get install … as root
 *   {type: "npm", packages, global?}       RUN npm install [-g] … (global as root)
 *   {type: "pip", packages}                RUN python3 -m pip install --break-system-packages …
 *   {type: "copy", src, dest, filesHash,   COPY from the context tar filesHash, owned by `owner`
 *    owner?, mode?}                        (user[:group]; the build's user by default), `mode` octal
 *   {type: "env", vars: {NAME: value}}     ENV
 *   {type: "workdir", path}                WORKDIR (absolute)
 *   {type: "user", name}                   USER for later steps and the start command
 *
 * Every step may carry `force: true` (rebuild it and every later step, cache or not).
 */
export function stepsFromJson(input: unknown, field = "steps"): Step[] {
  if (input === undefined) return [];
  if (!Array.isArray(input)) throw new InvalidArgumentError(`'${field}' must be an array of steps`);
  const list = new StepList();
  for (const [i, raw] of input.entries()) addJsonStep(list, raw, `${field}[${i}]`);
  return list.steps;
}

function addJsonStep(list: StepList, raw: unknown, at: string): void {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw new InvalidArgumentError(`${at} must be an object with a 'type'`);
  const s = raw as Json;
  const type = s.type;
  if (typeof type !== "string" || !Object.hasOwn(STEP_FIELDS, type))
    throw new InvalidArgumentError(`${at}.type must be one of ${Object.keys(STEP_FIELDS).join(", ")}`);
  const allowed = ["type", "force", ...STEP_FIELDS[type]!];
  for (const k of Object.keys(s))
    if (!allowed.includes(k))
      throw new InvalidArgumentError(`${at}: unknown field '${k.slice(0, 64)}' for a ${type} step`);
  const force = optBool(s, "force", at) ?? false;
  switch (type) {
    case "run":
      list.run(text(s, "command", at), { user: optUser(s, "user", at), force });
      return;
    case "apt":
      list.run(aptInstallCommand(packageList(s, at, APT_PACKAGE_RE)), { user: ROOT, force });
      return;
    case "npm": {
      const packages = packageList(s, at, NPM_PACKAGE_RE);
      const global = optBool(s, "global", at) ?? false;
      list.run(npmInstallCommand(packages, global), { user: global ? ROOT : undefined, force });
      return;
    }
    case "pip":
      list.run(pipInstallCommand(packageList(s, at, PIP_PACKAGE_RE)), { force });
      return;
    case "copy":
      list.copy(text(s, "src", at), text(s, "dest", at), filesHash(s.filesHash, `${at}.filesHash`), {
        owner: optMatch(s, "owner", at, OWNER_RE, "user or user:group"),
        mode: optMatch(s, "mode", at, MODE_RE, "an octal mode like 0755 (a string)"),
        force,
      });
      return;
    case "env": {
      const vars = s.vars;
      if (typeof vars !== "object" || vars === null || Array.isArray(vars) || Object.keys(vars).length === 0)
        throw new InvalidArgumentError(`${at}.vars must be a non-empty object of string values`);
      list.env(
        Object.entries(vars).map(([k, v]) => {
          if (!ENV_NAME_RE.test(k))
            throw new InvalidArgumentError(`${at}.vars: '${k.slice(0, 64)}' is not a variable name`);
          if (typeof v !== "string") throw new InvalidArgumentError(`${at}.vars.${k} must be a string`);
          return [k, v] as const;
        }),
        force,
      );
      return;
    }
    case "workdir": {
      const path = text(s, "path", at);
      if (!path.startsWith("/")) throw new InvalidArgumentError(`${at}.path must be absolute`);
      list.workdir(path, force);
      return;
    }
    case "user":
      list.setUser(optUser(s, "name", at) ?? missing(`${at}.name`), force);
      return;
  }
}

/** The start command's JSON: `{command, readyPort?, readyCommand?}`; undefined when absent. */
export function startFromJson(input: unknown, field = "start"): Start | undefined {
  if (input === undefined) return undefined;
  if (typeof input !== "object" || input === null || Array.isArray(input))
    throw new InvalidArgumentError(`'${field}' must be an object {command, readyPort?, readyCommand?}`);
  const s = input as Json;
  for (const k of Object.keys(s))
    if (!["command", "readyPort", "readyCommand"].includes(k))
      throw new InvalidArgumentError(`${field}: unknown field '${k.slice(0, 64)}'`);
  const readyPort = s.readyPort;
  if (
    readyPort !== undefined &&
    (typeof readyPort !== "number" || !Number.isInteger(readyPort) || readyPort < 1 || readyPort > 65_535)
  )
    throw new InvalidArgumentError(`${field}.readyPort must be a port from 1 to 65535`);
  const readyCommand = s.readyCommand;
  if (readyCommand !== undefined && typeof readyCommand !== "string")
    throw new InvalidArgumentError(`${field}.readyCommand must be a string`);
  return { command: text(s, "command", field), readyPort: readyPort ?? 0, readyCommand: readyCommand ?? "" };
}

/** A context tar's hash as given by a caller (hex, either case). */
export function filesHash(v: unknown, at: string): string {
  if (typeof v !== "string" || !SHA256_RE.test(v.toLowerCase()))
    throw new InvalidArgumentError(`${at} must be the sha256 (64 hex digits) of an uploaded context tar`);
  return v.toLowerCase();
}

function missing(at: string): never {
  throw new InvalidArgumentError(`${at} is required`);
}

function text(s: Json, key: string, at: string): string {
  const v = s[key];
  if (v === undefined) missing(`${at}.${key}`);
  if (typeof v !== "string" || v.trim() === "")
    throw new InvalidArgumentError(`${at}.${key} must be a non-empty string`);
  if (v.includes("\0")) throw new InvalidArgumentError(`${at}.${key} must not contain NUL`);
  return v;
}

function optBool(s: Json, key: string, at: string): boolean | undefined {
  const v = s[key];
  if (v === undefined) return undefined;
  if (typeof v !== "boolean") throw new InvalidArgumentError(`${at}.${key} must be true or false`);
  return v;
}

function optMatch(s: Json, key: string, at: string, re: RegExp, what: string): string | undefined {
  const v = s[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string" || !re.test(v)) throw new InvalidArgumentError(`${at}.${key} must be ${what}`);
  return v;
}

function optUser(s: Json, key: string, at: string): string | undefined {
  const v = s[key];
  if (v === undefined) return undefined;
  if (typeof v !== "string" || !USER_NAME_RE.test(v))
    throw new InvalidArgumentError(`${at}.${key} must be a user name (a-z, 0-9, '_', '-')`);
  return v;
}

function packageList(s: Json, at: string, re: RegExp): string[] {
  const v = s.packages;
  if (!Array.isArray(v) || v.length === 0 || v.length > MAX_PACKAGES)
    throw new InvalidArgumentError(`${at}.packages must be an array of 1 to ${MAX_PACKAGES} package names`);
  return v.map((p, i) => {
    if (typeof p !== "string" || !re.test(p))
      throw new InvalidArgumentError(
        `${at}.packages[${i}]: '${String(p).slice(0, 64)}' is not a package name`,
      );
    return p;
  });
}
