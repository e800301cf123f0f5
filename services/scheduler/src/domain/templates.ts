import { TemplateStepKind } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { InvalidArgumentError, NoCapacityError } from "./errors.js";
import { chooseHost, type HostLoad, type PlacementPolicy } from "./placement.js";

/**
 * User templates, pure: names, who sees what, the build request's checks and where a build
 * runs. No Connect, no SQL.
 */

/** Template names and aliases: lower-case, usable in a URL and as a folder name on a host. */
export const TEMPLATE_NAME_RE = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const MAX_ALIASES = 16;
/** As many steps as the vmm takes. */
export const MAX_STEPS = 200;
/** One step argument or start command, as long as the vmm takes. */
export const MAX_ARG_BYTES = 64 * 1024;
export const SHA256_RE = /^[0-9a-f]{64}$/;
const ENV_NAME_RE = /^[A-Za-z_][A-Za-z0-9_]{0,255}$/;
/** User names, owners and modes as the vmm takes them. */
const USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;
const OWNER_RE = /^[a-z_][a-z0-9_-]{0,31}(:[a-z_][a-z0-9_-]{0,31})?$/;
const MODE_RE = /^[0-7]{3,4}$/;
/** A build's outcome once it left `building`. */
export type BuildStatus = "waiting" | "building" | "ready" | "error" | "cancelled";

/** A step as stored (the vmm's TemplateStep as plain JSON). */
export interface StepSpec {
  kind: TemplateStepKind;
  args: string[];
  filesHash: string;
  force: boolean;
}

/** A start command as stored (the vmm's TemplateStart as plain JSON). */
export interface StartSpec {
  command: string;
  readyPort: number;
  readyCommand: string;
}

/** What a build was asked to make; applied to its template once the build is ready. */
export interface BuildSpec {
  baseTemplateId: string;
  steps: StepSpec[];
  start: StartSpec | null;
  cpuCount: number;
  memoryMib: number;
  force: boolean;
}

/** Who may see (and start sandboxes from) a template: its owner, or anyone when public or the installation's. */
export function isVisible(t: { owner: string; public: boolean }, caller: string): boolean {
  return t.public || t.owner === "" || (caller !== "" && t.owner === caller);
}

export function checkTemplateName(field: string, name: string): string {
  if (!TEMPLATE_NAME_RE.test(name))
    throw new InvalidArgumentError(
      `${field} '${name.slice(0, 80)}' must be 1-63 of a-z, 0-9, '.', '_', '-', starting with a letter or digit`,
    );
  return name;
}

/** Aliases: valid names, none twice, not the name itself. */
export function checkAliases(aliases: readonly string[], name: string): string[] {
  if (aliases.length > MAX_ALIASES) throw new InvalidArgumentError(`aliases: at most ${MAX_ALIASES}`);
  const seen = new Set<string>([name]);
  for (const a of aliases) {
    checkTemplateName("alias", a);
    if (seen.has(a)) throw new InvalidArgumentError(`alias '${a}' is given twice (or is the name)`);
    seen.add(a);
  }
  return [...aliases];
}

/** The caller's API key id: required to build or change a template. */
export function checkOwner(owner: string): string {
  if (owner === "") throw new InvalidArgumentError("owner (the caller's API key id) is required");
  if (owner.length > 256) throw new InvalidArgumentError("owner is longer than 256 characters");
  return owner;
}

function checkText(field: string, v: string, required: boolean): void {
  if (required && v.trim() === "") throw new InvalidArgumentError(`${field} is empty`);
  if (Buffer.byteLength(v, "utf8") > MAX_ARG_BYTES)
    throw new InvalidArgumentError(`${field} is longer than ${MAX_ARG_BYTES} bytes`);
  if (v.includes("\0")) throw new InvalidArgumentError(`${field} contains NUL`);
}

/**
 * Checks every step's shape as the vmm will (it checks again), so that a bad request fails
 * here rather than on a host: RUN [command, user?] (that user for this step only), COPY
 * [source, destination, owner?, mode?], ENV [name, value, …], WORKDIR [path], USER [name].
 * Returns them as stored.
 */
export function checkSteps(
  steps: readonly { kind: TemplateStepKind; args: readonly string[]; filesHash: string; force: boolean }[],
): StepSpec[] {
  if (steps.length > MAX_STEPS) throw new InvalidArgumentError(`steps: at most ${MAX_STEPS}`);
  return steps.map((s, i) => {
    const at = `steps[${i}]`;
    const args = [...s.args];
    const count = (min: number, max = min) => {
      if (args.length < min || args.length > max)
        throw new InvalidArgumentError(
          `${at}: expected ${min === max ? min : `${min} to ${max}`} argument(s), got ${args.length}`,
        );
    };
    const optional = (k: number, re: RegExp, what: string) => {
      const v = args[k];
      if (v !== undefined && v !== "" && !re.test(v)) throw new InvalidArgumentError(`${at}: ${what}`);
    };
    if (s.kind !== TemplateStepKind.COPY && s.filesHash !== "")
      throw new InvalidArgumentError(`${at}: files_hash belongs to COPY steps only`);
    switch (s.kind) {
      case TemplateStepKind.RUN:
        count(1, 2);
        checkText(`${at} command`, args[0]!, true);
        optional(1, USER_RE, `'${args[1]?.slice(0, 64)}' is not a user name`);
        break;
      case TemplateStepKind.COPY:
        count(2, 4);
        checkText(`${at} source`, args[0]!, true);
        checkText(`${at} destination`, args[1]!, true);
        optional(2, OWNER_RE, "the owner must be user or user:group");
        optional(3, MODE_RE, "the mode must be octal, like 0755");
        if (!SHA256_RE.test(s.filesHash))
          throw new InvalidArgumentError(
            `${at}: files_hash must be the sha256 (lower-case hex) of a context tar`,
          );
        break;
      case TemplateStepKind.ENV:
        if (args.length === 0 || args.length % 2 !== 0)
          throw new InvalidArgumentError(`${at}: expected name, value pairs`);
        for (let k = 0; k < args.length; k += 2) {
          if (!ENV_NAME_RE.test(args[k]!))
            throw new InvalidArgumentError(`${at}: '${args[k]!.slice(0, 64)}' is not a variable name`);
          checkText(`${at} ${args[k]}`, args[k + 1]!, false);
        }
        break;
      case TemplateStepKind.WORKDIR:
        count(1);
        checkText(`${at} path`, args[0]!, true);
        if (args[0]!.split("/").includes(".."))
          throw new InvalidArgumentError(`${at}: the workdir must not contain '..'`);
        break;
      case TemplateStepKind.USER:
        count(1);
        if (!USER_RE.test(args[0]!))
          throw new InvalidArgumentError(`${at}: '${args[0]!.slice(0, 64)}' is not a user name`);
        break;
      default:
        throw new InvalidArgumentError(`${at}: unknown step kind ${s.kind}`);
    }
    return { kind: s.kind, args, filesHash: s.filesHash, force: s.force };
  });
}

/** The start command, or null when none is given (sandboxes start with nothing of their own). */
export function checkStart(
  start: { command: string; readyPort: number; readyCommand: string } | undefined,
): StartSpec | null {
  if (start === undefined || (start.command === "" && start.readyPort === 0 && start.readyCommand === ""))
    return null;
  checkText("start.command", start.command, true);
  checkText("start.ready_command", start.readyCommand, false);
  if (start.readyPort > 65_535) throw new InvalidArgumentError("start.ready_port must be at most 65535");
  return { command: start.command, readyPort: start.readyPort, readyCommand: start.readyCommand };
}

/** The context tars a build needs, each once. */
export function contextHashes(steps: readonly StepSpec[]): string[] {
  return [...new Set(steps.filter((s) => s.kind === TemplateStepKind.COPY).map((s) => s.filesHash))];
}

export interface BuildPlacement {
  /** The template being built: a host that holds an earlier build has its cached layers. */
  templateId: string;
  /** The base: a built one exists only where it was built, an installed one anywhere. */
  baseTemplateId: string;
  baseIsBuilt: boolean;
  policy?: PlacementPolicy;
  cpuOvercommit?: number;
  minFreeDiskMib?: number;
}

/**
 * The host for a build: a live host that is not draining and holds the base (when the base is
 * a built template), among those holding an earlier build of the template first (its layers
 * are cached there, and its sandboxes are placed there). Throws NoCapacityError saying why.
 */
export function chooseBuildHost<H extends HostLoad>(
  hosts: readonly H[],
  now: Date,
  deadAfterMs: number,
  p: BuildPlacement,
): H {
  const req = {
    templateId: p.baseTemplateId,
    requireTemplate: p.baseIsBuilt,
    ...(p.policy !== undefined ? { policy: p.policy } : {}),
    ...(p.cpuOvercommit !== undefined ? { cpuOvercommit: p.cpuOvercommit } : {}),
    ...(p.minFreeDiskMib !== undefined ? { minFreeDiskMib: p.minFreeDiskMib } : {}),
  };
  const holding = hosts.filter((h) => h.templates?.includes(p.templateId));
  if (holding.length > 0) {
    try {
      return chooseHost(holding, now, deadAfterMs, req);
    } catch (err) {
      if (!(err instanceof NoCapacityError)) throw err;
    }
  }
  return chooseHost(hosts, now, deadAfterMs, req);
}
