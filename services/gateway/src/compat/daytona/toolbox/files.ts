import { posix } from "node:path";
import type { FastifyPluginAsync } from "fastify";
import { GatewayError, InvalidArgumentError } from "../../../errors.js";
import { readBody } from "../../../sandbox/agent-client.js";
import { daemonError } from "../errors.js";
import type { ToolboxContext } from "./context.js";
import { toFileInfo } from "./file-info.js";
import { SandboxFs } from "./fs-agent.js";
import { parseGrepZ } from "./parse.js";
import { runShell, words } from "./shell.js";
import { body, octalMode, optBool, optInt, optStr, query, sandboxPath, str, strArray } from "./validate.js";

type P = { Params: { sandboxId: string } };

const SHELL_TIMEOUT_MS = 120_000;
/** find / search answers stop after this many hits. */
const MAX_MATCHES = 10_000;
/** replaceInFiles rewrites files up to this size. */
const REPLACE_MAX_BYTES = 16 * 1024 * 1024;

/**
 * `/files…`: list, info, folder, delete, move, permissions, find (content), search (names),
 * replace. Transfers (bulk upload / download) are in transfer.ts.
 */
export const fileRoutes: FastifyPluginAsync<ToolboxContext> = async (app, ctx) => {
  const list = async (req: { params: { sandboxId: string }; query: unknown }) => {
    const q = query(req.query);
    const path = sandboxPath(optStr(q, "path") ?? "~", "path");
    const depth = optInt(q, "depth", 1, 32) ?? 1;
    const fs = new SandboxFs(ctx, req.params.sandboxId);
    return (await fs.list(path, depth)).map(toFileInfo);
  };
  app.get<P>("/:sandboxId/files", list);
  app.get<P>("/:sandboxId/files/", list);

  app.get<P>("/:sandboxId/files/info", async (req) => {
    const path = sandboxPath(optStr(query(req.query), "path"), "path");
    return toFileInfo(await new SandboxFs(ctx, req.params.sandboxId).stat(path));
  });

  app.post<P>("/:sandboxId/files/folder", async (req, reply) => {
    const q = query(req.query);
    const path = sandboxPath(optStr(q, "path"), "path");
    const mode = octalMode(optStr(q, "mode") ?? "755", "mode");
    await checked(
      ctx,
      req.params.sandboxId,
      path,
      words("mkdir", "-p", "--", path),
      words("chmod", mode, "--", path),
    );
    return reply.code(201).send();
  });

  app.delete<P>("/:sandboxId/files", async (req, reply) => {
    const q = query(req.query);
    const path = sandboxPath(optStr(q, "path"), "path");
    const recursive = optBool(q, "recursive") === true;
    const fs = new SandboxFs(ctx, req.params.sandboxId);
    const entry = await fs.stat(path);
    if (toFileInfo(entry).isDir && !recursive)
      throw new InvalidArgumentError(`'${path}' is a directory; pass recursive=true to delete it`);
    if (path === "/") throw new InvalidArgumentError("refusing to delete '/'");
    await fs.remove(path);
    return reply.code(204).send();
  });

  app.post<P>("/:sandboxId/files/move", async (req) => {
    const q = query(req.query);
    const source = sandboxPath(optStr(q, "source"), "source");
    const destination = sandboxPath(optStr(q, "destination"), "destination");
    const fs = new SandboxFs(ctx, req.params.sandboxId);
    await fs.stat(source);
    if ((await fs.statOrUndefined(destination)) !== undefined)
      throw new GatewayError("already_exists", `destination '${destination}' already exists`);
    const parent = posix.dirname(destination);
    if ((await fs.statOrUndefined(parent)) === undefined)
      throw daemonError("FILE_NOT_FOUND", `destination folder '${parent}' does not exist`);
    await fs.move(source, destination);
    return {};
  });

  app.post<P>("/:sandboxId/files/permissions", async (req) => {
    const q = query(req.query);
    const path = sandboxPath(optStr(q, "path"), "path");
    const mode = optStr(q, "mode");
    const owner = optStr(q, "owner");
    const group = optStr(q, "group");
    for (const [k, v] of [
      ["owner", owner],
      ["group", group],
    ] as const)
      if (v !== undefined && !/^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$/.test(v))
        throw new InvalidArgumentError(`${k} must be a user or group name or a numeric id`);
    const steps: string[] = [];
    if (owner !== undefined) steps.push(words("chown", "--", owner, path));
    if (group !== undefined) steps.push(words("chgrp", "--", group, path));
    if (mode !== undefined) steps.push(words("chmod", octalMode(mode, "mode"), "--", path));
    if (steps.length === 0) throw new InvalidArgumentError("give at least one of mode, owner, group");
    await new SandboxFs(ctx, req.params.sandboxId).stat(path);
    // root: chown and chgrp need it, and Daytona's daemon can change any file.
    await checked(ctx, req.params.sandboxId, path, ...steps.map((s) => ({ script: s, user: "root" })));
    return {};
  });

  app.get<P>("/:sandboxId/files/find", async (req) => {
    const q = query(req.query);
    const path = sandboxPath(optStr(q, "path"), "path");
    const pattern = str(q, "pattern");
    await new SandboxFs(ctx, req.params.sandboxId).stat(path);
    // -I skips binary files, -F: the pattern is a plain string, -Z: NUL after each file name.
    const r = await runShell(
      ctx,
      req.params.sandboxId,
      `${words("grep", "-rnIZF", "-m", String(MAX_MATCHES), "-e", pattern, "--", path)} | head -n ${MAX_MATCHES}`,
      { timeoutMs: SHELL_TIMEOUT_MS },
    );
    return parseGrepZ(r.stdout.toString("utf8"));
  });

  app.get<P>("/:sandboxId/files/search", async (req) => {
    const q = query(req.query);
    const path = sandboxPath(optStr(q, "path"), "path");
    const pattern = str(q, "pattern");
    await new SandboxFs(ctx, req.params.sandboxId).stat(path);
    const r = await runShell(
      ctx,
      req.params.sandboxId,
      `${words("find", path, "-name", pattern, "-print0")} 2>/dev/null | head -z -n ${MAX_MATCHES}`,
      { timeoutMs: SHELL_TIMEOUT_MS },
    );
    return {
      files: r.stdout
        .toString("utf8")
        .split("\0")
        .filter((f) => f !== "" && f !== path),
    };
  });

  app.post<P>("/:sandboxId/files/replace", async (req) => {
    const b = body(req.body);
    const files = strArray(b, "files", { required: true, max: 1000 });
    const pattern = str(b, "pattern");
    const newValue = typeof b.newValue === "string" ? b.newValue : undefined;
    if (newValue === undefined) throw new InvalidArgumentError("newValue is required (a string)");
    const conn = await ctx.deps.agents.connect(req.params.sandboxId);
    const results: { file: string; success: boolean; error?: string }[] = [];
    for (const file of files) {
      try {
        const path = sandboxPath(file, "files[]");
        const res = await conn.getFile(path);
        const data = await readBody(res, REPLACE_MAX_BYTES + 1);
        if (data.length > REPLACE_MAX_BYTES) throw new Error(`larger than ${REPLACE_MAX_BYTES} bytes`);
        const text = data.toString("utf8");
        const next = text.replaceAll(pattern, newValue);
        if (next !== text) await conn.postFile(path, Buffer.from(next, "utf8"));
        results.push({ file, success: true });
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        results.push({ file, success: false, error: message.slice(0, 500) });
      }
    }
    return results;
  });
};

/** Runs shell steps in order; a failing one becomes a 4xx naming its stderr. */
async function checked(
  ctx: ToolboxContext,
  sandboxId: string,
  path: string,
  ...steps: (string | { script: string; user: string })[]
): Promise<void> {
  for (const step of steps) {
    const { script, user } = typeof step === "string" ? { script: step, user: undefined } : step;
    const r = await runShell(ctx, sandboxId, script, { timeoutMs: SHELL_TIMEOUT_MS, user });
    if (r.exitCode === 0) continue;
    const err = r.stderr.toString("utf8").trim().slice(0, 500) || `exit status ${r.exitCode}`;
    if (/permission denied|operation not permitted/i.test(err))
      throw daemonError("FILE_ACCESS_DENIED", `${path}: ${err}`);
    if (/no such file/i.test(err)) throw daemonError("FILE_NOT_FOUND", `${path}: ${err}`);
    throw new InvalidArgumentError(err);
  }
}
