import multipart from "@fastify/multipart";
import type { FastifyPluginAsync } from "fastify";
import { InvalidArgumentError } from "../../../errors.js";
import type { ToolboxContext } from "./context.js";
import { fileRoutes } from "./files.js";
import { gitRoutes } from "./git.js";
import { infoRoutes } from "./info.js";
import { processRoutes } from "./process.js";
import { ptyRoutes } from "./pty.js";
import { SessionRegistry, sessionRoutes } from "./sessions.js";
import { transferRoutes } from "./transfer.js";

export type { ToolboxContext } from "./context.js";

const SANDBOX_ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
/** Multipart uploads: at most this many parts and fields. */
const MAX_UPLOAD_PARTS = 2_000;

/**
 * The Daytona toolbox (`{toolboxProxyUrl}/{sandboxId}/…`), mapped onto the guest agent: process
 * (execute, code-run, sessions, PTY), files and git. Paths are relative to the mount point
 * (the Daytona surface registers this at `/toolbox`, inside its auth and error mapping).
 * Every request first checks that the sandbox is a live Daytona sandbox and records activity.
 */
export const toolboxRoutes: FastifyPluginAsync<ToolboxContext> = async (app, opts) => {
  // Only the context goes down to the route plugins, not this plugin's own options (its prefix).
  const ctx: ToolboxContext = {
    deps: opts.deps,
    logger: opts.logger,
    resolve: (req, id) => opts.resolve(req, id),
    touch: (id) => opts.touch(id),
  };
  // Body-less POSTs from the SDK (axios) arrive as an empty form-urlencoded body.
  if (!app.hasContentTypeParser("application/x-www-form-urlencoded")) {
    app.addContentTypeParser(
      "application/x-www-form-urlencoded",
      { parseAs: "string" },
      (_req, text, done) => {
        if (String(text).trim() === "") done(null, undefined);
        else done(new InvalidArgumentError("form bodies are not accepted; send JSON"), undefined);
      },
    );
  }
  if (!app.hasContentTypeParser("multipart/form-data")) {
    await app.register(multipart, {
      limits: {
        fileSize: ctx.deps.limits.fileLimitBytes,
        files: MAX_UPLOAD_PARTS,
        fields: MAX_UPLOAD_PARTS,
        parts: MAX_UPLOAD_PARTS * 2,
      },
    });
  }

  app.addHook("preHandler", async (req) => {
    const id = (req.params as { sandboxId?: unknown } | undefined)?.sandboxId;
    if (typeof id !== "string" || !SANDBOX_ID_RE.test(id))
      throw new InvalidArgumentError("invalid sandbox id");
    await ctx.resolve(req, id);
    ctx.touch(id);
  });
  app.addHook("onResponse", async (req) => {
    const id = (req.params as { sandboxId?: unknown } | undefined)?.sandboxId;
    if (typeof id === "string" && SANDBOX_ID_RE.test(id)) ctx.touch(id);
  });

  const sessions = new SessionRegistry();
  app.addHook("onClose", () => sessions.closeAll());

  await app.register(infoRoutes, ctx);
  await app.register(processRoutes, ctx);
  await app.register(sessionRoutes(sessions), ctx);
  await app.register(ptyRoutes(), ctx);
  await app.register(fileRoutes, ctx);
  await app.register(transferRoutes, ctx);
  await app.register(gitRoutes, ctx);
};
