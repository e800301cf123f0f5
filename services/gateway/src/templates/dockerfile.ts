import { posix } from "node:path";
import { InvalidArgumentError } from "../errors.js";
import {
  ENV_NAME_RE,
  MODE_RE,
  OWNER_RE,
  type Start,
  type Step,
  StepList,
  shellJoin,
  TEMPLATE_NAME_RE,
  USER_NAME_RE,
} from "./steps.js";

/**
 * A Dockerfile subset, pure: parsed into the same steps as the native spec. Supported:
 *
 *   FROM <dnah template>         once; a registry image (python:3.12, ghcr.io/x/y) is refused
 *   ARG name[=default] …         for substitution, and exported to later RUN commands
 *   RUN cmd | RUN ["exe", "arg"] shell and exec forms
 *   COPY [--chown=u[:g]] [--chmod=0755] src… dest | COPY ["src", "dest"]
 *                                from the build context (contextSha256)
 *   ENV k=v … | ENV k v
 *   WORKDIR path                 relative paths resolve against the previous one
 *   USER name
 *   CMD / ENTRYPOINT             shell and exec forms → the start command
 *   HEALTHCHECK CMD …            → the start's ready command (NONE clears it)
 *   EXPOSE, LABEL, MAINTAINER    accepted and ignored (a warning says so)
 *
 * Line continuations (`\`), comments and `$VAR` / `${VAR}` / `${VAR:-x}` / `${VAR:+x}`
 * substitution (in FROM, COPY, ENV, WORKDIR, USER, ARG) work as in Docker. Everything else is
 * refused with the line it is on: ADD, SHELL, VOLUME, ONBUILD, STOPSIGNAL, multi-stage builds,
 * heredocs, `RUN --mount`, `COPY --from/--link`, numeric ids in --chown, wildcards in COPY
 * sources.
 */
export interface ParsedDockerfile {
  /** The dnah template it starts from. */
  from: string;
  steps: Step[];
  /** From CMD / ENTRYPOINT (and HEALTHCHECK); undefined when there is none. */
  start: Start | undefined;
  /** Instructions accepted but ignored. */
  warnings: string[];
}

export const MAX_DOCKERFILE_BYTES = 256 * 1024;

/** The refusal for `FROM <registry image>`: dnah has no image store (yet). */
export function registryImageMessage(image: string): string {
  return `FROM '${image.slice(0, 200)}': FROM of a registry image needs an image store; FROM a dnah template (base, code-interpreter, or one of yours)`;
}

/** Whether a FROM names something a dnah template cannot be (a tag, a registry, a digest). */
export function isRegistryImage(ref: string): boolean {
  return ref === "scratch" || !TEMPLATE_NAME_RE.test(ref);
}

class DockerfileError extends InvalidArgumentError {
  constructor(line: number, message: string) {
    super(`Dockerfile line ${line}: ${message}`);
  }
}

interface Instruction {
  line: number;
  keyword: string;
  rest: string;
}

/**
 * Parses a Dockerfile. `contextSha256` is the uploaded context tar COPY reads from; COPY
 * without one is refused.
 */
export function parseDockerfile(text: string, contextSha256?: string): ParsedDockerfile {
  if (Buffer.byteLength(text, "utf8") > MAX_DOCKERFILE_BYTES)
    throw new InvalidArgumentError(`the Dockerfile is larger than ${MAX_DOCKERFILE_BYTES} bytes`);
  const list = new StepList();
  const warnings: string[] = [];
  /** ARGs declared before FROM: usable in FROM, and in later ARGs that name them. */
  const globalArgs = new Map<string, string>();
  const args = new Map<string, string>();
  const env = new Map<string, string>();
  let from: string | undefined;
  let workdir = "/";
  let cmd: { exec: boolean; value: string } | undefined;
  let entrypoint: { exec: boolean; value: string } | undefined;
  let readyCommand = "";
  const vars = () => new Map([...args, ...env]);

  for (const ins of instructions(text)) {
    const fail = (message: string): never => {
      throw new DockerfileError(ins.line, message);
    };
    if (from === undefined && ins.keyword !== "FROM" && ins.keyword !== "ARG")
      fail(`${ins.keyword} before FROM: a Dockerfile starts with FROM (ARG may come before it)`);
    switch (ins.keyword) {
      case "FROM": {
        if (from !== undefined) fail("multi-stage builds (a second FROM) are not supported");
        const [flags, rest] = splitFlags(ins.rest);
        if (flags.length > 0) fail(`FROM ${flags[0]!.split("=")[0]} is not supported`);
        const w = words(rest, globalArgs, fail);
        if (w.length === 3 && w[1]!.toLowerCase() === "as") w.length = 1;
        if (w.length !== 1) fail("FROM takes one template name");
        const ref = w[0]!;
        if (isRegistryImage(ref)) fail(registryImageMessage(ref));
        from = ref;
        break;
      }
      case "ARG": {
        const w = words(ins.rest, from === undefined ? globalArgs : vars(), fail);
        if (w.length === 0) fail("ARG needs a name");
        for (const a of w) {
          const eq = a.indexOf("=");
          const name = eq < 0 ? a : a.slice(0, eq);
          if (!ENV_NAME_RE.test(name)) fail(`ARG '${name.slice(0, 64)}' is not a variable name`);
          // No --build-arg here: an ARG without a default is the global one's value, or empty.
          const value = eq < 0 ? (globalArgs.get(name) ?? "") : a.slice(eq + 1);
          (from === undefined ? globalArgs : args).set(name, value);
        }
        break;
      }
      case "RUN": {
        const [flags, rest] = splitFlags(ins.rest);
        if (flags.length > 0) fail(`RUN ${flags[0]!.split("=")[0]} is not supported`);
        if (/<<-?\s*["']?[A-Za-z_]/.test(rest))
          fail("heredocs are not supported; use a RUN line or a copied script");
        const exec = execForm(rest);
        const command = exec !== undefined ? shellJoin(exec) : rest.trim();
        if (command === "") fail("RUN needs a command");
        const exported = [...args].map(([k, v]) => `${k}=${shellJoin([v])}`);
        list.run(exported.length > 0 ? `export ${exported.join(" ")}; ${command}` : command);
        break;
      }
      case "COPY": {
        const [flags, rest] = splitFlags(ins.rest);
        let owner: string | undefined;
        let mode: string | undefined;
        for (const flag of flags) {
          const [k, v = ""] = flag.split(/=(.*)/s) as [string, string?];
          if (k === "--chown") {
            owner = words(v, vars(), fail).join("");
            if (!OWNER_RE.test(owner))
              fail(`COPY --chown=${owner.slice(0, 64)}: give a user name, or user:group (not numeric ids)`);
          } else if (k === "--chmod") {
            if (!MODE_RE.test(v)) fail(`COPY --chmod=${v.slice(0, 64)}: give an octal mode like 0755`);
            mode = v;
          } else fail(`COPY ${k} is not supported`);
        }
        if (/<<-?\s*["']?[A-Za-z_]/.test(rest)) fail("heredocs are not supported");
        const paths = execForm(rest) ?? words(rest, vars(), fail);
        if (paths.length < 2) fail("COPY takes one or more sources and a destination");
        if (contextSha256 === undefined)
          fail(
            "COPY needs a build context: upload a tar to /v1/templates/files/{sha256} and pass its contextSha256",
          );
        const destIn = paths.at(-1)!;
        const sources = paths.slice(0, -1);
        if (sources.length > 1 && !destIn.endsWith("/"))
          fail("COPY of several sources needs a destination folder ending in '/'");
        const dest = resolvePath(workdir, destIn) + (destIn.endsWith("/") && destIn !== "/" ? "/" : "");
        for (const src of sources) {
          if (/[*?[]/.test(src))
            fail(`COPY '${src}': wildcards are not supported; name the files or their folder`);
          const norm = posix.normalize(src.replace(/^\/+/, ""));
          if (norm === ".." || norm.startsWith("../"))
            fail(`COPY '${src}': the source is outside the build context`);
          list.copy(norm, dest, contextSha256!, { owner, mode });
        }
        break;
      }
      case "ENV": {
        const pairs = envPairs(ins.rest, vars(), fail);
        for (const [k, v] of pairs) env.set(k, v);
        list.env(pairs);
        break;
      }
      case "WORKDIR": {
        const w = words(ins.rest, vars(), fail);
        if (w.length === 0) fail("WORKDIR needs a path");
        workdir = resolvePath(workdir, w.join(" "));
        list.workdir(workdir);
        break;
      }
      case "USER": {
        const w = words(ins.rest, vars(), fail);
        if (w.length !== 1) fail("USER takes one user name");
        const user = w[0]!;
        if (user.includes(":")) fail("USER with a group is not supported: give the user name only");
        if (!USER_NAME_RE.test(user)) fail(`USER '${user.slice(0, 64)}' is not a user name`);
        list.setUser(user);
        break;
      }
      case "CMD":
      case "ENTRYPOINT": {
        const exec = execForm(ins.rest);
        const value = exec !== undefined ? shellJoin(exec) : ins.rest.trim();
        if (value === "") fail(`${ins.keyword} needs a command`);
        if (ins.keyword === "CMD") cmd = { exec: exec !== undefined, value };
        else entrypoint = { exec: exec !== undefined, value };
        break;
      }
      case "HEALTHCHECK": {
        const [, rest] = splitFlags(ins.rest);
        if (/^NONE$/i.test(rest.trim())) {
          readyCommand = "";
          break;
        }
        const m = /^CMD\s+(.*)$/is.exec(rest.trim());
        if (m === null) fail("HEALTHCHECK takes NONE or CMD <command>");
        const exec = execForm(m![1]!);
        readyCommand = exec !== undefined ? shellJoin(exec) : m![1]!.trim();
        warnings.push(
          `line ${ins.line}: HEALTHCHECK becomes the start's ready check; its options are ignored`,
        );
        break;
      }
      case "EXPOSE":
        warnings.push(
          `line ${ins.line}: EXPOSE is ignored (every port is reachable; set start.readyPort to wait for one)`,
        );
        break;
      case "LABEL":
      case "MAINTAINER":
        warnings.push(`line ${ins.line}: ${ins.keyword} is ignored`);
        break;
      case "ADD":
        fail("ADD is not supported; use COPY (ADD's URLs and archive extraction are not)");
        break;
      case "SHELL":
      case "VOLUME":
      case "ONBUILD":
      case "STOPSIGNAL":
        fail(`${ins.keyword} is not supported`);
        break;
      default:
        fail(`unknown instruction '${ins.keyword.slice(0, 32)}'`);
    }
  }
  if (from === undefined) throw new InvalidArgumentError("the Dockerfile has no FROM");
  let command = "";
  if (entrypoint !== undefined && !entrypoint.exec) command = entrypoint.value;
  else if (entrypoint !== undefined && cmd !== undefined)
    command = `${entrypoint.value} ${cmd.exec ? cmd.value : shellJoin(["/bin/sh", "-c", cmd.value])}`;
  else command = entrypoint?.value ?? cmd?.value ?? "";
  if (command === "" && readyCommand !== "")
    throw new InvalidArgumentError("the Dockerfile has a HEALTHCHECK but no CMD or ENTRYPOINT to check");
  return {
    from,
    steps: list.steps,
    start: command === "" ? undefined : { command, readyPort: 0, readyCommand },
    warnings,
  };
}

/** Logical lines: comments and parser directives dropped, continuations joined. */
function instructions(text: string): Instruction[] {
  const out: Instruction[] = [];
  const lines = text.split(/\r?\n/);
  let acc: string | undefined;
  let startLine = 0;
  let seenInstruction = false;
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i]!;
    const trimmed = raw.trim();
    if (trimmed.startsWith("#")) {
      // Parser directives come first; only the default escape character is supported.
      const directive = /^#\s*escape\s*=\s*(\S)/i.exec(trimmed);
      if (directive !== null && !seenInstruction && directive[1] !== "\\")
        throw new DockerfileError(i + 1, "only the default escape character '\\' is supported");
      continue;
    }
    if (trimmed === "" && acc === undefined) continue;
    if (acc === undefined) startLine = i + 1;
    const body = raw.replace(/\s+$/, "");
    if (body.endsWith("\\")) {
      acc = (acc ?? "") + body.slice(0, -1);
      continue;
    }
    const logical = ((acc ?? "") + body).trim();
    acc = undefined;
    if (logical === "") continue;
    seenInstruction = true;
    const m = /^(\S+)\s*(.*)$/s.exec(logical)!;
    out.push({ line: startLine, keyword: m[1]!.toUpperCase(), rest: m[2]! });
  }
  if (acc !== undefined && acc.trim() !== "") {
    const m = /^(\S+)\s*(.*)$/s.exec(acc.trim())!;
    out.push({ line: startLine, keyword: m[1]!.toUpperCase(), rest: m[2]! });
  }
  return out;
}

/** Leading `--flag[=value]` words, and the rest. */
function splitFlags(rest: string): [string[], string] {
  const flags: string[] = [];
  let r = rest.trimStart();
  for (let m = /^(--\S+)\s*/.exec(r); m !== null; m = /^(--\S+)\s*/.exec(r)) {
    flags.push(m[1]!);
    r = r.slice(m[0].length);
  }
  return [flags, r];
}

/** The exec (JSON array of strings) form, or undefined for the shell form. */
function execForm(rest: string): string[] | undefined {
  const t = rest.trim();
  if (!t.startsWith("[")) return undefined;
  try {
    const v: unknown = JSON.parse(t);
    if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v as string[];
  } catch {
    // Not JSON: Docker reads it as the shell form too.
  }
  return undefined;
}

/** A path resolved against the working directory, normalised, absolute. */
function resolvePath(cwd: string, p: string): string {
  return posix.resolve(cwd, p);
}

/**
 * Words as Docker's lexer makes them: whitespace splits, '…' is literal, "…" and bare text
 * take `\` escapes and `$` substitution from `vars` (unknown variables are empty).
 */
function words(s: string, vars: ReadonlyMap<string, string>, fail: (m: string) => never): string[] {
  const out: string[] = [];
  let cur: string | undefined;
  let i = 0;
  const add = (t: string) => {
    cur = (cur ?? "") + t;
  };
  while (i < s.length) {
    const c = s[i]!;
    if (/\s/.test(c)) {
      if (cur !== undefined) out.push(cur);
      cur = undefined;
      i++;
    } else if (c === "'") {
      const end = s.indexOf("'", i + 1);
      if (end < 0) fail("unterminated single quote");
      add(s.slice(i + 1, end));
      i = end + 1;
    } else if (c === '"') {
      add("");
      i++;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === "\\" && i + 1 < s.length && ['"', "\\", "$"].includes(s[i + 1]!)) {
          add(s[i + 1]!);
          i += 2;
        } else if (s[i] === "$") {
          const [v, n] = substitute(s, i, vars, fail);
          add(v);
          i = n;
        } else {
          add(s[i]!);
          i++;
        }
      }
      if (i >= s.length) fail("unterminated double quote");
      i++;
    } else if (c === "\\" && i + 1 < s.length) {
      add(s[i + 1]!);
      i += 2;
    } else if (c === "$") {
      const [v, n] = substitute(s, i, vars, fail);
      add(v);
      i = n;
    } else {
      add(c);
      i++;
    }
  }
  if (cur !== undefined) out.push(cur);
  return out;
}

/** `$NAME`, `${NAME}`, `${NAME:-word}`, `${NAME:+word}` at s[i]; returns the value and the next index. */
function substitute(
  s: string,
  i: number,
  vars: ReadonlyMap<string, string>,
  fail: (m: string) => never,
): [string, number] {
  const bare = /^\$([A-Za-z_][A-Za-z0-9_]*)/.exec(s.slice(i));
  if (bare !== null) return [vars.get(bare[1]!) ?? "", i + bare[0].length];
  if (s[i + 1] !== "{") return ["$", i + 1];
  const end = s.indexOf("}", i + 2);
  if (end < 0) fail("unterminated variable substitution (no closing '}')");
  const inner = s.slice(i + 2, end);
  const m = /^([A-Za-z_][A-Za-z0-9_]*)(?::([-+])(.*))?$/s.exec(inner);
  if (m === null) fail(`unsupported substitution '\${${inner.slice(0, 40)}}'`);
  const value = vars.get(m![1]!);
  const word = m![3] ?? "";
  if (m![2] === "-") return [value !== undefined && value !== "" ? value : word, end + 1];
  if (m![2] === "+") return [value !== undefined && value !== "" ? word : "", end + 1];
  return [value ?? "", end + 1];
}

/** `ENV k=v k2="v 2"` or the legacy `ENV k the rest of the line`. */
function envPairs(
  rest: string,
  vars: ReadonlyMap<string, string>,
  fail: (m: string) => never,
): [string, string][] {
  const first = /^\s*([^\s=]+)(=?)/.exec(rest);
  if (first === null) fail("ENV needs a name and a value");
  const pairs: [string, string][] = [];
  if (first![2] === "=") {
    // As in Docker, every pair sees the values from before this ENV.
    for (const w of words(rest, vars, fail)) {
      const eq = w.indexOf("=");
      if (eq <= 0) fail(`ENV '${w.slice(0, 64)}': expected name=value`);
      pairs.push([w.slice(0, eq), w.slice(eq + 1)]);
    }
  } else {
    const name = first![1]!;
    const value = words(rest.slice(first![0].length), vars, fail).join(" ");
    if (value === "") fail(`ENV ${name} needs a value`);
    pairs.push([name, value]);
  }
  for (const [k] of pairs) if (!ENV_NAME_RE.test(k)) fail(`ENV '${k.slice(0, 64)}' is not a variable name`);
  return pairs;
}
