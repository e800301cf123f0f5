import { TemplateStepKind } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { InvalidArgumentError } from "../../errors.js";
import type { Json } from "../../rest/body.js";
import { type Start, type Step, shellQuote, TEMPLATE_NAME_RE } from "../../templates/steps.js";

/**
 * E2B's `Template` builder (v2 build system) as dnah template builds, pure. Spec:
 * /shared/specs/e2b.md §5.1 and the SDK's `TemplateBuildStartV2` body:
 *
 *   {startCmd?, readyCmd?, steps: [{type, args, force, filesHash?}], force, fromImage? | fromTemplate?}
 *
 * - The base: `fromTemplate(name)` is that dnah template; `fromImage('e2bdev/base')` (the SDK's
 *   default) is dnah's `base`; any other image is refused (there is no image store).
 * - E2B's builds start as user `user` in /home/user; dnah's as root in /. From a built-in base
 *   two steps put the build where E2B's starts (USER user, WORKDIR /home/user); a template built
 *   here already carries its own user and workdir.
 * - RUN [cmd, user?], ENV [k, v, …], WORKDIR [path] map one to one. USER [name] first creates
 *   the user when missing (E2B does, dnah's USER does not). COPY [src, dest, user, mode] reads
 *   the context tar the caller uploaded under `filesHash` (E2B's hash is not the sha256 of the
 *   bytes: `hashes` resolves it); a glob source copies from its non-glob folder, which in the
 *   tar holds only what the glob matched (E2B's rule).
 * - ENV values are taken literally: E2B evaluates them with `printf` in a shell, so `$VAR`
 *   expands there and not here (a deliberate difference: no shell sees a value).
 * - The ready check: `waitForPort(p)`'s `ss` test becomes a port check (dnah's images have no
 *   `ss`); any other readyCmd runs as a command until it exits 0.
 */

/** The E2B image the SDK builds from when no `from*` is called; dnah's `base` plays it. */
export const E2B_BASE_IMAGE = "e2bdev/base";
const DNAH_BASE = "base";
const E2B_USER = "user";
const E2B_HOME = "/home/user";
const USER_RE = /^[a-z_][a-z0-9_-]{0,31}$/;
/** `waitForPort(p)` in SDK 2.x. */
const WAIT_FOR_PORT_RE = /^\[ -n "\$\(ss -Htuln sport = :(\d{1,5})\)" \]$/;
const GLOB_RE = /[*?[{]/;

export interface E2bBuildStart {
  /** The dnah template it starts from. */
  from: string;
  steps: E2bStep[];
  start: Start | undefined;
  force: boolean;
}

export interface E2bStep {
  type: string;
  args: string[];
  force: boolean;
  filesHash: string | undefined;
}

/** Where each dnah step came from: its E2B step number (1-based) or "base" for the prelude. */
export type StepOrigin = number | "base";

/** Reads and checks `TemplateBuildStartV2`; unknown keys are ignored (the SDK leaks some). */
export function parseBuildStart(body: Json): E2bBuildStart {
  const fromTemplate = optText(body, "fromTemplate");
  const fromImage = optText(body, "fromImage");
  if (body.fromImageRegistry !== undefined && body.fromImageRegistry !== null)
    throw new InvalidArgumentError(registryMessage(fromImage ?? "a registry image"));
  let from: string;
  if (fromTemplate !== undefined && fromImage !== undefined)
    throw new InvalidArgumentError("give fromTemplate or fromImage, not both");
  if (fromTemplate !== undefined) {
    if (fromTemplate === "") throw new InvalidArgumentError("'fromTemplate' must not be empty");
    from = templateRef(fromTemplate);
  } else {
    const image = fromImage ?? E2B_BASE_IMAGE;
    if (image !== E2B_BASE_IMAGE && image !== `${E2B_BASE_IMAGE}:latest`)
      throw new InvalidArgumentError(registryMessage(image));
    from = DNAH_BASE;
  }
  const raw = body.steps ?? [];
  if (!Array.isArray(raw)) throw new InvalidArgumentError("'steps' must be an array");
  const steps = raw.map((s, i) => parseStep(s, i + 1));
  const startCmd = optText(body, "startCmd");
  const readyCmd = optText(body, "readyCmd");
  return {
    from,
    steps,
    start: startOf(startCmd, readyCmd),
    force: body.force === true,
  };
}

function registryMessage(image: string): string {
  return `fromImage('${image.slice(0, 200)}'): this server builds from its own templates, not registry images; use Template().fromTemplate('base') (or fromBaseImage()) or fromTemplate('<one of your templates>')`;
}

/** A template reference may carry `:tag`; builds start from the template itself. */
function templateRef(ref: string): string {
  const colon = ref.lastIndexOf(":");
  return (colon < 0 ? ref : ref.slice(0, colon)).toLowerCase();
}

function parseStep(raw: unknown, n: number): E2bStep {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw))
    throw new InvalidArgumentError(`step ${n} must be an object`);
  const o = raw as Json;
  if (typeof o.type !== "string") throw new InvalidArgumentError(`step ${n}: 'type' must be a string`);
  const args = o.args ?? [];
  if (!Array.isArray(args) || args.some((a) => typeof a !== "string"))
    throw new InvalidArgumentError(`step ${n}: 'args' must be an array of strings`);
  const filesHash = o.filesHash === undefined || o.filesHash === null ? undefined : o.filesHash;
  if (filesHash !== undefined && typeof filesHash !== "string")
    throw new InvalidArgumentError(`step ${n}: 'filesHash' must be a string`);
  return { type: o.type.toUpperCase(), args: args as string[], force: o.force === true, filesHash };
}

function startOf(startCmd: string | undefined, readyCmd: string | undefined): Start | undefined {
  if (startCmd === undefined || startCmd.trim() === "") {
    if (readyCmd !== undefined && readyCmd.trim() !== "")
      throw new InvalidArgumentError("'readyCmd' needs a 'startCmd' (setStartCmd)");
    return undefined;
  }
  const port = readyCmd === undefined ? undefined : WAIT_FOR_PORT_RE.exec(readyCmd.trim());
  if (port) {
    const p = Number(port[1]);
    if (p < 1 || p > 65535) throw new InvalidArgumentError(`waitForPort(${p}): not a port`);
    return { command: startCmd, readyPort: p, readyCommand: "" };
  }
  return { command: startCmd, readyPort: 0, readyCommand: readyCmd?.trim() ?? "" };
}

/** The E2B files hashes the COPY steps name (each to resolve to an uploaded tar's sha256). */
export function filesHashesOf(steps: readonly E2bStep[]): string[] {
  return [...new Set(steps.flatMap((s) => (s.type === "COPY" && s.filesHash ? [s.filesHash] : [])))];
}

/**
 * The dnah steps for E2B's, and where each came from (for a failure's `reason.step`).
 * `builtinBase`: the base is a built-in template (start as E2B does: `user` in /home/user).
 * `sha256Of`: an E2B files hash → the sha256 of the tar the caller uploaded under it.
 */
export function translateSteps(
  steps: readonly E2bStep[],
  opts: { builtinBase: boolean; sha256Of: (filesHash: string) => string | undefined },
): { steps: Step[]; origins: StepOrigin[] } {
  const out: Step[] = [];
  const origins: StepOrigin[] = [];
  const push = (
    origin: StepOrigin,
    kind: TemplateStepKind,
    args: string[],
    force: boolean,
    filesHash = "",
  ) => {
    out.push({ kind, args, filesHash, force });
    origins.push(origin);
  };
  if (opts.builtinBase) {
    push("base", TemplateStepKind.USER, [E2B_USER], false);
    push("base", TemplateStepKind.WORKDIR, [E2B_HOME], false);
  }
  // E2B's force is sticky from the first forced step on; the vmm's is too.
  for (const [i, s] of steps.entries()) {
    const n = i + 1;
    const at = `step ${n} (${s.type})`;
    switch (s.type) {
      case "RUN": {
        if (s.args.length < 1 || s.args.length > 2 || (s.args[0] ?? "").trim() === "")
          throw new InvalidArgumentError(`${at}: takes a command and optionally a user`);
        const user = s.args[1] ?? "";
        if (user !== "" && !USER_RE.test(user)) throw new InvalidArgumentError(`${at}: bad user '${user}'`);
        push(n, TemplateStepKind.RUN, user === "" ? [s.args[0]!] : [s.args[0]!, user], s.force);
        break;
      }
      case "COPY":
      case "ADD": {
        if (s.args.length < 2 || s.args.length > 4)
          throw new InvalidArgumentError(`${at}: takes a source, a destination, a user and a mode`);
        if (s.filesHash === undefined || s.filesHash === "")
          throw new InvalidArgumentError(`${at}: 'filesHash' is required`);
        const sha256 = opts.sha256Of(s.filesHash);
        if (sha256 === undefined)
          throw new InvalidArgumentError(
            `${at}: the files of '${s.args[0]}' (filesHash ${s.filesHash.slice(0, 64)}) were not uploaded`,
          );
        const [src, dest, user = "", mode = ""] = s.args as [string, string, string?, string?];
        if (user !== "" && !USER_RE.test(user)) throw new InvalidArgumentError(`${at}: bad user '${user}'`);
        const args = [copySource(src), dest, user, mode];
        while (args.length > 2 && args[args.length - 1] === "") args.pop();
        push(n, TemplateStepKind.COPY, args, s.force, sha256);
        break;
      }
      case "ENV":
      case "ARG":
        if (s.args.length === 0) break;
        if (s.args.length % 2 !== 0) throw new InvalidArgumentError(`${at}: takes name/value pairs`);
        push(n, TemplateStepKind.ENV, [...s.args], s.force);
        break;
      case "WORKDIR":
        if (s.args.length !== 1 || s.args[0]!.trim() === "")
          throw new InvalidArgumentError(`${at}: takes a path`);
        push(n, TemplateStepKind.WORKDIR, [s.args[0]!], s.force);
        break;
      case "USER": {
        // [name] or [name, "true"] (sudoer: every user of a dnah base template may sudo).
        const name = s.args[0] ?? "";
        if (s.args.length < 1 || s.args.length > 2 || !USER_RE.test(name))
          throw new InvalidArgumentError(`${at}: takes a user name`);
        if (name !== "root" && name !== E2B_USER)
          push(
            n,
            TemplateStepKind.RUN,
            [
              `id -u ${shellQuote(name)} >/dev/null 2>&1 || useradd --create-home --shell /bin/bash ${shellQuote(name)}`,
              "root",
            ],
            s.force,
          );
        push(n, TemplateStepKind.USER, [name], s.force);
        break;
      }
      default:
        throw new InvalidArgumentError(`${at}: unknown step type (RUN, COPY, ENV, WORKDIR, USER)`);
    }
  }
  return { steps: out, origins };
}

/** E2B copies a glob's matches from its non-glob folder (`*.py` → `.`, `app/*.txt` → `app`). */
export function copySource(src: string): string {
  const parts = src.split("/");
  const i = parts.findIndex((p) => GLOB_RE.test(p));
  if (i < 0) return src;
  return parts.slice(0, i).join("/") || ".";
}

/**
 * E2B's `reason.step` for a failed build: the failing dnah step (the vmm names it "step N/M")
 * as the caller's step number, "base" for the prelude, "finalize" for the start command.
 */
export function failedStep(reason: string, origins: readonly StepOrigin[]): string | undefined {
  const m = /\bstep (\d+)\/\d+\b/.exec(reason);
  if (m === null) return /\bstart|ready\b/i.test(reason) ? "finalize" : undefined;
  const origin = origins[Number(m[1]) - 1];
  return origin === undefined ? undefined : String(origin);
}

function optText(o: Json, key: string): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") throw new InvalidArgumentError(`'${key}' must be a string`);
  return v;
}

/**
 * An E2B template name, `[namespace/]alias[:tag]`, lower-cased: dnah names templates by alias
 * (no namespaces: one installation is one team). Tags default to ["default"].
 */
export function parseTemplateName(raw: string): { name: string; tag: string | undefined } {
  const s = raw.trim().toLowerCase();
  if (s === "") throw new InvalidArgumentError("Name must be provided");
  if (s.includes("/"))
    throw new InvalidArgumentError(
      `template '${s.slice(0, 100)}': namespaces are not supported here; use the name without its 'namespace/'`,
    );
  const colon = s.indexOf(":");
  const name = colon < 0 ? s : s.slice(0, colon);
  const tag = colon < 0 ? undefined : s.slice(colon + 1);
  if (!TEMPLATE_NAME_RE.test(name))
    throw new InvalidArgumentError(
      `template name '${name.slice(0, 100)}' must be 1-63 of a-z, 0-9, '.', '_', '-' (starting with a letter or digit)`,
    );
  if (tag !== undefined && !TAG_RE.test(tag))
    throw new InvalidArgumentError(`tag '${tag.slice(0, 100)}' must be 1-63 of a-z, 0-9, '.', '_', '-'`);
  return { name, tag };
}

export const TAG_RE = TEMPLATE_NAME_RE;
export const DEFAULT_TAG = "default";

/** The tags a build gets: the name's, then the list's, deduplicated; none → ["default"]. */
export function buildTags(nameTag: string | undefined, tags: readonly string[]): string[] {
  const out: string[] = [];
  for (const t of [...(nameTag !== undefined ? [nameTag] : []), ...tags]) {
    const v = t.trim().toLowerCase();
    if (!TAG_RE.test(v))
      throw new InvalidArgumentError(`tag '${v.slice(0, 100)}' must be 1-63 of a-z, 0-9, '.', '_', '-'`);
    if (!out.includes(v)) out.push(v);
  }
  return out.length === 0 ? [DEFAULT_TAG] : out;
}
