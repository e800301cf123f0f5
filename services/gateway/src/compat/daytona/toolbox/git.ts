import type { FastifyPluginAsync } from "fastify";
import { InvalidArgumentError } from "../../../errors.js";
import { daemonError } from "../errors.js";
import type { ToolboxContext } from "./context.js";
import { gitErrorCode, parseStatusV2 } from "./git-errors.js";
import { runShell, words } from "./shell.js";
import { body, optBool, optInt, optStr, query, sandboxPath, str, strArray } from "./validate.js";

type P = { Params: { sandboxId: string } };

/** Network operations (clone, push, pull) may take this long. */
const GIT_NETWORK_TIMEOUT_MS = 15 * 60_000;
const GIT_LOCAL_TIMEOUT_MS = 2 * 60_000;
const REF_RE = /^[^\s~^:?*[\\\0-\x1f]{1,255}$/;
const CONFIG_KEY_RE = /^[A-Za-z][A-Za-z0-9-]*(\.[^\s\0]+)*\.[A-Za-z][A-Za-z0-9-]*$/;

/**
 * Credentials reach git through a one-off credential helper that reads them from the
 * environment of that one command: never on a command line, in the URL or in .git/config.
 */
const CRED_HELPER = `credential.helper=!f() { test "$1" = get && echo "username=$DNAH_GIT_USER" && echo "password=$DNAH_GIT_PASS"; }; f`;

interface GitCall {
  args: string[];
  cwd?: string;
  username?: string | undefined;
  password?: string | undefined;
  network?: boolean;
  /** `-C <repo>`: commits made by this call (a merge) get a neutral identity if the repo has none. */
  identityFallback?: string[];
}

/**
 * `/git/…`: git run by the sandbox user inside the sandbox. Failures carry the `GIT_*` code
 * git's message points to (auth, missing repo or branch, rejected push, conflicts, transport).
 */
export const gitRoutes: FastifyPluginAsync<ToolboxContext> = async (app, ctx) => {
  const git = async (sandboxId: string, call: GitCall): Promise<string> => {
    const config: string[] = [];
    const envs: Record<string, string> = { GIT_TERMINAL_PROMPT: "0" };
    if (call.username !== undefined || call.password !== undefined) {
      config.push("-c", "credential.helper=", "-c", CRED_HELPER);
      envs.DNAH_GIT_USER = call.username ?? "";
      envs.DNAH_GIT_PASS = call.password ?? "";
    }
    let script = words("git", ...config, ...call.args);
    const fallback = call.identityFallback;
    if (fallback !== undefined) {
      // A merge on pull needs an identity; use a neutral one only where none is configured.
      const has = (key: string) => `${words("git", ...fallback, "config", key)} >/dev/null`;
      script =
        `${has("user.name")} || export GIT_AUTHOR_NAME=sandbox GIT_COMMITTER_NAME=sandbox\n` +
        `${has("user.email")} || export GIT_AUTHOR_EMAIL=sandbox@localhost GIT_COMMITTER_EMAIL=sandbox@localhost\n` +
        script;
    }
    const r = await runShell(ctx, sandboxId, script, {
      cwd: call.cwd,
      envs,
      timeoutMs: call.network === true ? GIT_NETWORK_TIMEOUT_MS : GIT_LOCAL_TIMEOUT_MS,
    });
    if (r.timedOut) throw daemonError("REQUEST_TIMEOUT", `git ${call.args[0]} timed out`);
    if (r.exitCode === 0) return r.stdout.toString("utf8");
    // Some failures are told on stdout (a merge's CONFLICT lines): both count.
    const stderr = `${r.stderr.toString("utf8")}\n${r.stdout.toString("utf8")}`.trim();
    const message = stderr.slice(-1000) || `git ${call.args[0]} failed with exit status ${r.exitCode}`;
    const code = gitErrorCode(stderr);
    if (code !== undefined) throw daemonError(code, message);
    if (/no such file or directory|cannot change to/i.test(stderr) || r.exitCode === 127)
      throw daemonError("GIT_REPO_NOT_FOUND", message);
    throw new InvalidArgumentError(message);
  };
  /** `git -C <repo>` for a path the caller named. */
  const repo = (o: Record<string, unknown>) => ["-C", sandboxPath(optStr(o, "path"), "path")];
  const ref = (o: Record<string, unknown>, key: string): string => {
    const v = str(o, key);
    if (!REF_RE.test(v) || v.startsWith("-"))
      throw new InvalidArgumentError(`${key} is not a valid git ref name`);
    return v;
  };
  const optRef = (o: Record<string, unknown>, key: string) =>
    o[key] === undefined || o[key] === "" ? undefined : ref(o, key);

  app.post<P>("/:sandboxId/git/clone", async (req) => {
    const b = body(req.body);
    const url = str(b, "url");
    if (url.startsWith("-")) throw new InvalidArgumentError("url must not start with '-'");
    const path = sandboxPath(optStr(b, "path"), "path");
    const branch = optRef(b, "branch");
    const commit = optRef(b, "commit_id");
    const depth = optInt(b, "depth", 1, 1_000_000);
    const args = ["clone"];
    if (optBool(b, "insecure_skip_tls") === true) args.unshift("-c", "http.sslVerify=false");
    if (branch !== undefined) args.push("--branch", branch);
    if (depth !== undefined && commit === undefined) args.push("--depth", String(depth));
    args.push("--", url, path);
    await git(req.params.sandboxId, {
      args,
      username: optStr(b, "username"),
      password: optStr(b, "password"),
      network: true,
    });
    if (commit !== undefined)
      await git(req.params.sandboxId, { args: ["-C", path, "checkout", "--detach", commit] });
    return {};
  });

  app.get<P>("/:sandboxId/git/status", async (req) => {
    const out = await git(req.params.sandboxId, {
      args: [
        ...repo(query(req.query)),
        "status",
        "--porcelain=v2",
        "--branch",
        "-z",
        "--untracked-files=all",
      ],
    });
    return parseStatusV2(out);
  });

  app.post<P>("/:sandboxId/git/add", async (req) => {
    const b = body(req.body);
    const files = strArray(b, "files", { required: true, max: 10_000 });
    if (files.length === 0) throw new InvalidArgumentError("files must name at least one path");
    await git(req.params.sandboxId, { args: [...repo(b), "add", "--", ...files] });
    return {};
  });

  app.post<P>("/:sandboxId/git/commit", async (req) => {
    const b = body(req.body);
    const message = str(b, "message");
    const author = str(b, "author");
    const email = str(b, "email");
    const args = [
      ...repo(b),
      "-c",
      `user.name=${author}`,
      "-c",
      `user.email=${email}`,
      "commit",
      "-m",
      message,
    ];
    if (optBool(b, "allow_empty") === true) args.push("--allow-empty");
    await git(req.params.sandboxId, { args });
    const hash = (await git(req.params.sandboxId, { args: [...repo(b), "rev-parse", "HEAD"] })).trim();
    return { hash };
  });

  const remoteOp = async (sandboxId: string, b: Record<string, unknown>, op: "push" | "pull") => {
    const args = [...repo(b), op];
    if (op === "push" && optBool(b, "set_upstream") === true) args.push("--set-upstream");
    const remote = optRef(b, "remote");
    const branch = optRef(b, "branch");
    if (remote !== undefined || branch !== undefined) args.push(remote ?? "origin");
    if (branch !== undefined) args.push(branch);
    else if (op === "push" && remote === undefined) args.push("origin", "HEAD");
    if (op === "pull") args.push("--no-rebase", "--no-edit");
    await git(sandboxId, {
      args,
      username: optStr(b, "username"),
      password: optStr(b, "password"),
      network: true,
      ...(op === "pull" ? { identityFallback: repo(b) } : {}),
    });
    return {};
  };
  app.post<P>("/:sandboxId/git/push", async (req) => remoteOp(req.params.sandboxId, body(req.body), "push"));
  app.post<P>("/:sandboxId/git/pull", async (req) => remoteOp(req.params.sandboxId, body(req.body), "pull"));

  app.get<P>("/:sandboxId/git/branches", async (req) => {
    const r = repo(query(req.query));
    const out = await git(req.params.sandboxId, {
      args: [...r, "for-each-ref", "--format=%(refname:short)", "refs/heads"],
    });
    const head = await git(req.params.sandboxId, { args: [...r, "branch", "--show-current"] });
    const current = head.trim();
    return {
      branches: out.split("\n").filter((l) => l !== ""),
      ...(current !== "" ? { current } : {}),
    };
  });

  app.post<P>("/:sandboxId/git/branches", async (req, reply) => {
    const b = body(req.body);
    // As Daytona's daemon: the new branch is also checked out.
    await git(req.params.sandboxId, { args: [...repo(b), "checkout", "-b", ref(b, "name")] });
    return reply.code(201).send({});
  });

  app.delete<P>("/:sandboxId/git/branches", async (req, reply) => {
    const b = body(req.body);
    const name = ref(b, "name");
    const r = repo(b);
    const exists = await runShell(
      ctx,
      req.params.sandboxId,
      words("git", ...r, "show-ref", "--verify", "--quiet", `refs/heads/${name}`),
      {
        timeoutMs: GIT_LOCAL_TIMEOUT_MS,
      },
    );
    if (exists.exitCode !== 0) {
      // Distinguish "no such branch" from "no repository".
      await git(req.params.sandboxId, { args: [...r, "rev-parse", "--git-dir"] });
      throw daemonError("GIT_BRANCH_NOT_FOUND", `branch '${name}' not found`);
    }
    await git(req.params.sandboxId, { args: [...r, "branch", "-D", name] });
    return reply.code(204).send();
  });

  app.post<P>("/:sandboxId/git/checkout", async (req) => {
    const b = body(req.body);
    await git(req.params.sandboxId, { args: [...repo(b), "checkout", ref(b, "branch"), "--"] });
    return {};
  });

  app.post<P>("/:sandboxId/git/init", async (req) => {
    const b = body(req.body);
    const path = sandboxPath(optStr(b, "path"), "path");
    const args = ["init"];
    if (optBool(b, "bare") === true) args.push("--bare");
    const initial = optRef(b, "initial_branch");
    if (initial !== undefined) args.push(`--initial-branch=${initial}`);
    args.push("--", path);
    await git(req.params.sandboxId, { args });
    return {};
  });

  app.get<P>("/:sandboxId/git/remotes", async (req) => {
    const out = await git(req.params.sandboxId, { args: [...repo(query(req.query)), "remote", "-v"] });
    const remotes = new Map<string, string>();
    for (const line of out.split("\n")) {
      const m = /^(\S+)\t(.+) \(fetch\)$/.exec(line);
      if (m?.[1] !== undefined && m[2] !== undefined) remotes.set(m[1], m[2]);
    }
    return { remotes: [...remotes].map(([name, url]) => ({ name, url })) };
  });

  app.post<P>("/:sandboxId/git/remotes", async (req) => {
    const b = body(req.body);
    const r = repo(b);
    const name = ref(b, "name");
    const url = str(b, "url");
    if (optBool(b, "overwrite") === true) {
      const has = await runShell(ctx, req.params.sandboxId, words("git", ...r, "remote", "get-url", name), {
        timeoutMs: GIT_LOCAL_TIMEOUT_MS,
      });
      if (has.exitCode === 0) {
        await git(req.params.sandboxId, { args: [...r, "remote", "set-url", "--", name, url] });
        return {};
      }
    }
    await git(req.params.sandboxId, { args: [...r, "remote", "add", "--", name, url] });
    if (optBool(b, "fetch") === true)
      await git(req.params.sandboxId, { args: [...r, "fetch", name], network: true });
    return {};
  });

  const configCmd = (o: Record<string, unknown>, rest: string[]): string[] => {
    const scope = optStr(o, "scope") ?? "global";
    if (scope === "global") return ["config", "--global", ...rest];
    if (scope === "local") return [...repo(o), "config", "--local", ...rest];
    throw new InvalidArgumentError("scope must be 'global' or 'local'");
  };
  const configKey = (o: Record<string, unknown>): string => {
    const key = str(o, "key");
    if (!CONFIG_KEY_RE.test(key))
      throw new InvalidArgumentError("key must be a git config key such as user.name");
    return key;
  };

  app.post<P>("/:sandboxId/git/config", async (req) => {
    const b = body(req.body);
    const value = typeof b.value === "string" ? b.value : undefined;
    if (value === undefined) throw new InvalidArgumentError("value is required (a string)");
    await git(req.params.sandboxId, { args: configCmd(b, ["--", configKey(b), value]) });
    return {};
  });

  app.get<P>("/:sandboxId/git/config", async (req) => {
    const q = query(req.query);
    const r = await runShell(
      ctx,
      req.params.sandboxId,
      words("git", ...configCmd(q, ["--get", "--", configKey(q)])),
      {
        timeoutMs: GIT_LOCAL_TIMEOUT_MS,
      },
    );
    if (r.exitCode === 1) return { value: "" };
    if (r.exitCode !== 0) throw new InvalidArgumentError(r.stderr.toString("utf8").trim().slice(0, 1000));
    return { value: r.stdout.toString("utf8").replace(/\n$/, "") };
  });

  app.post<P>("/:sandboxId/git/config/user", async (req) => {
    const b = body(req.body);
    await git(req.params.sandboxId, { args: configCmd(b, ["--", "user.name", str(b, "name")]) });
    await git(req.params.sandboxId, { args: configCmd(b, ["--", "user.email", str(b, "email")]) });
    return {};
  });

  app.post<P>("/:sandboxId/git/reset", async (req) => {
    const b = body(req.body);
    const mode = optStr(b, "mode");
    if (mode !== undefined && !["soft", "mixed", "hard", "merge", "keep"].includes(mode))
      throw new InvalidArgumentError("mode must be soft, mixed, hard, merge or keep");
    const files = strArray(b, "files", { required: false, max: 10_000 });
    const target = optRef(b, "target");
    const args = [...repo(b), "reset"];
    if (files.length === 0 && mode !== undefined) args.push(`--${mode}`);
    if (target !== undefined) args.push(target);
    if (files.length > 0) args.push("--", ...files);
    await git(req.params.sandboxId, { args });
    return {};
  });

  app.post<P>("/:sandboxId/git/restore", async (req) => {
    const b = body(req.body);
    const files = strArray(b, "files", { required: true, max: 10_000 });
    if (files.length === 0) throw new InvalidArgumentError("files must name at least one path");
    const args = [...repo(b), "restore"];
    if (optBool(b, "staged") === true) args.push("--staged");
    if (optBool(b, "worktree") === true) args.push("--worktree");
    const source = optRef(b, "source");
    if (source !== undefined) args.push(`--source=${source}`);
    args.push("--", ...files);
    await git(req.params.sandboxId, { args });
    return {};
  });
};
