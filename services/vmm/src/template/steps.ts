import { createHash } from "node:crypto";
import { TemplateStepKind } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { InvalidArgumentError } from "../domain/errors.js";

/**
 * Template build steps, pure: checking them, the build state each one leaves (env, workdir,
 * user), and the cache key of the layer each one makes. A layer's key hashes its parent's
 * key, the state the step runs in and the step itself (with its context's hash), so equal
 * keys are equal layers and a change reruns that step and every later one.
 */
export interface Step {
  readonly kind: TemplateStepKind;
  readonly args: readonly string[];
  readonly filesHash: string;
  readonly force: boolean;
}

/** What a step runs with; ENV, WORKDIR and USER change it. */
export interface BuildState {
  readonly env: Readonly<Record<string, string>>;
  readonly workdir: string;
  readonly user: string;
}

export const INITIAL_STATE: BuildState = { env: {}, workdir: "/", user: "root" };

export const MAX_STEPS = 200;
const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;
const SHA256_HEX = /^[0-9a-f]{64}$/;
const MAX_ARG = 64 * 1024;

/** The step's kind as the build log and errors name it. */
export function stepName(kind: TemplateStepKind): string {
  return TemplateStepKind[kind] ?? `kind ${kind}`;
}

/** A path inside the template's filesystem: absolute, no `..`, no NUL. */
function checkAbsolute(path: string, what: string): string {
  if (!path.startsWith("/") || path.includes("\0") || path.split("/").includes(".."))
    throw new InvalidArgumentError(`${what} must be an absolute path without '..': ${JSON.stringify(path)}`);
  return path;
}

/** A path inside a build context: relative, no `..`, no NUL ("." is the whole context). */
function checkContextPath(path: string): string {
  const p = path.replace(/^\.\/+/, "").replace(/\/+$/, "") || ".";
  if (p.startsWith("/") || p.includes("\0") || p.split("/").includes(".."))
    throw new InvalidArgumentError(`COPY source must be a path inside the context: ${JSON.stringify(path)}`);
  return p;
}

/**
 * Checks every step and returns them as `Step`s, or throws InvalidArgumentError naming the
 * first bad one (its 1-based number). `files` are the context hashes the request carries.
 */
export function checkSteps(
  steps: ReadonlyArray<{
    kind: TemplateStepKind;
    args: readonly string[];
    filesHash: string;
    force: boolean;
  }>,
  files: ReadonlySet<string>,
): Step[] {
  if (steps.length > MAX_STEPS) throw new InvalidArgumentError(`a template has at most ${MAX_STEPS} steps`);
  return steps.map((s, i) => {
    const at = `step ${i + 1} (${stepName(s.kind)})`;
    const need = (n: number) => {
      if (s.args.length !== n)
        throw new InvalidArgumentError(`${at}: takes ${n} argument(s), got ${s.args.length}`);
    };
    if (s.args.some((a) => a.length > MAX_ARG || a.includes("\0")))
      throw new InvalidArgumentError(`${at}: an argument is longer than ${MAX_ARG} bytes or holds NUL`);
    switch (s.kind) {
      case TemplateStepKind.RUN:
        // [command, user?]: a user runs this one step only.
        if (s.args.length < 1 || s.args.length > 2)
          throw new InvalidArgumentError(`${at}: takes a command and optionally a user`);
        if (s.args[0]!.trim() === "") throw new InvalidArgumentError(`${at}: empty command`);
        if (s.args[1] && !USER_NAME.test(s.args[1]))
          throw new InvalidArgumentError(`${at}: bad user name ${JSON.stringify(s.args[1])}`);
        break;
      case TemplateStepKind.COPY:
        // [source, destination, owner?, mode?]
        if (s.args.length < 2 || s.args.length > 4)
          throw new InvalidArgumentError(
            `${at}: takes a source, a destination, and optionally an owner and a mode`,
          );
        checkContextPath(s.args[0]!);
        if (s.args[1]!.trim() === "") throw new InvalidArgumentError(`${at}: empty destination`);
        if (s.args[2] && !/^[a-z_][a-z0-9_-]{0,31}(:[a-z_][a-z0-9_-]{0,31})?$/.test(s.args[2]))
          throw new InvalidArgumentError(`${at}: bad owner ${JSON.stringify(s.args[2])}`);
        if (s.args[3] && !/^[0-7]{3,4}$/.test(s.args[3]))
          throw new InvalidArgumentError(`${at}: mode must be octal, like 0755`);
        if (!SHA256_HEX.test(s.filesHash))
          throw new InvalidArgumentError(`${at}: files_hash must be a sha256 (hex)`);
        if (!files.has(s.filesHash))
          throw new InvalidArgumentError(`${at}: no context with hash ${s.filesHash}`);
        break;
      case TemplateStepKind.ENV:
        if (s.args.length === 0 || s.args.length % 2 !== 0)
          throw new InvalidArgumentError(`${at}: takes name/value pairs`);
        for (let j = 0; j < s.args.length; j += 2)
          if (!ENV_NAME.test(s.args[j]!))
            throw new InvalidArgumentError(`${at}: bad variable name ${JSON.stringify(s.args[j])}`);
        break;
      case TemplateStepKind.WORKDIR:
        need(1);
        if (s.args[0]!.includes("\0") || s.args[0]!.split("/").includes(".."))
          throw new InvalidArgumentError(`${at}: the workdir must be a path without '..'`);
        break;
      case TemplateStepKind.USER:
        need(1);
        if (!USER_NAME.test(s.args[0]!))
          throw new InvalidArgumentError(`${at}: bad user name ${JSON.stringify(s.args[0])}`);
        break;
      default:
        throw new InvalidArgumentError(`${at}: unknown step kind`);
    }
    return { kind: s.kind, args: [...s.args], filesHash: s.filesHash, force: s.force };
  });
}

/** The state after `step` (ENV, WORKDIR and USER change it; the others keep it). */
export function nextState(state: BuildState, step: Step): BuildState {
  switch (step.kind) {
    case TemplateStepKind.ENV: {
      const env = { ...state.env };
      for (let j = 0; j < step.args.length; j += 2) env[step.args[j]!] = step.args[j + 1]!;
      return { ...state, env };
    }
    case TemplateStepKind.WORKDIR:
      return { ...state, workdir: workdirPath(state, step.args[0]!) };
    case TemplateStepKind.USER:
      return { ...state, user: step.args[0]! };
    default:
      return state;
  }
}

/** Whether the step changes files (and so makes a layer). */
export function makesLayer(step: Step): boolean {
  return (
    step.kind === TemplateStepKind.RUN ||
    step.kind === TemplateStepKind.COPY ||
    step.kind === TemplateStepKind.WORKDIR
  );
}

/** A WORKDIR path made absolute against the current workdir. */
export function workdirPath(state: BuildState, path: string): string {
  return path.startsWith("/") ? path : `${state.workdir.replace(/\/+$/, "")}/${path}`;
}

/** A COPY destination made absolute against the workdir. */
export function copyDestination(state: BuildState, dest: string): string {
  const abs = dest.startsWith("/") ? dest : `${state.workdir.replace(/\/+$/, "")}/${dest}`;
  return checkAbsolute(abs, "COPY destination");
}

export function contextPath(src: string): string {
  return checkContextPath(src);
}

/** The key of the layer `step` makes on top of `parentKey`, in `state`. */
export function layerKey(parentKey: string, state: BuildState, step: Step): string {
  const h = createHash("sha256");
  h.update(
    JSON.stringify({
      format: 1,
      parent: parentKey,
      state: { env: Object.entries(state.env).sort(), workdir: state.workdir, user: state.user },
      kind: step.kind,
      args: step.args,
      files: step.kind === TemplateStepKind.COPY ? step.filesHash : "",
    }),
  );
  return h.digest("hex").slice(0, 32);
}

/** A value as one single-quoted shell word. */
export function shellQuote(s: string): string {
  return `'${s.replaceAll("'", `'\\''`)}'`;
}

/**
 * The start command with the template's environment in front of it: the agent starts it as
 * `sh -c "exec <command>"` before a sandbox's own variables arrive, so the template's ENV has
 * to travel with the command.
 */
export function startCommandWithEnv(command: string, env: Readonly<Record<string, string>>): string {
  const vars = Object.entries(env).map(([k, v]) => shellQuote(`${k}=${v}`));
  if (vars.length === 0) return command;
  return `env ${vars.join(" ")} /bin/sh -c ${shellQuote(command)}`;
}
