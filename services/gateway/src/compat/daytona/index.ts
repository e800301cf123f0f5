// READY: create/get/delete
import type { Server as HttpServer } from "node:http";
import type { Db, Logger } from "@dnah/platform";
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { type ApiKeyVerifier, hashApiKey } from "../../auth/api-keys.js";
import { apiKeyFromHeaders } from "../../auth/hook.js";
import {
  FailedPreconditionError,
  InvalidArgumentError,
  SandboxNotFoundError,
  UnauthenticatedError,
  UnavailableError,
} from "../../errors.js";
import type { RpcDeps } from "../../rpc/deps.js";
import { sandboxBuildLogRoutes } from "./api/build-logs.js";
import { createRoute } from "./api/create.js";
import { deleteRoute } from "./api/delete.js";
import { forkRoute } from "./api/fork.js";
import { getRoute } from "./api/get.js";
import { lifecycleRoutes } from "./api/lifecycle.js";
import { listRoute } from "./api/list.js";
import { previewUrlRoute } from "./api/preview-url.js";
import { settingsRoutes } from "./api/settings.js";
import type { DaytonaContext } from "./context.js";
import { daytonaSandboxById } from "./db.js";
import { DaytonaHttpError, type DaytonaSource, toDaytonaError } from "./errors.js";
import { PREVIEW_TOKEN_QUERY, previewRoutes, sameToken } from "./preview.js";
import { snapshotRoutes } from "./snapshots/routes.js";
import { pushAccessRoute, STORAGE_PREFIX, storageRoutes } from "./snapshots/storage.js";
import { DaytonaEvents } from "./socket.js";
import { type ToolboxContext, toolboxRoutes } from "./toolbox/index.js";

const TOOLBOX_ID_RE = /^\/toolbox\/([^/?]+)/;

export interface DaytonaCompat {
  /** Registers `/api/…`, `/toolbox/…` and `/preview/…` (at the root, no prefix). */
  readonly routes: (app: FastifyInstance) => Promise<void>;
  /**
   * Attaches socket.io to the HTTP server and becomes its one upgrade dispatcher. Call after
   * @fastify/websocket is registered and before the server listens.
   */
  attach(server: HttpServer): void;
  close(): Promise<void>;
}

/** True for requests the Daytona surface authenticates itself (the native hook skips them). */
export function isDaytonaRequest(req: FastifyRequest): boolean {
  const u = req.url;
  return (
    u === "/api" ||
    u.startsWith("/api/") ||
    u.startsWith("/api?") ||
    u.startsWith("/toolbox/") ||
    u.startsWith("/preview/") ||
    u.startsWith(`${STORAGE_PREFIX}/`)
  );
}

/**
 * The Daytona compatibility surface (spec docs: daytona.md): the control API under `/api`, the
 * toolbox under `/toolbox/{id}`, preview links under `/preview/{id}/{port}`, socket.io events
 * at `/api/socket.io/`. Auto-stop / archive / delete are the native lifecycle's, enforced by
 * the scheduler's reaper; activity goes to the gateway's native recorder.
 */
export function createDaytonaCompat(deps: {
  db: Pick<Db, "query">;
  verifier: ApiKeyVerifier;
  rpc: RpcDeps;
  logger: Logger;
  origin: () => string | undefined;
}): DaytonaCompat {
  const logger = deps.logger;
  const events = new DaytonaEvents(logger);
  const ctx: DaytonaContext = {
    deps: deps.rpc,
    db: deps.db,
    verifier: deps.verifier,
    logger,
    events,
    origin: deps.origin,
    // The native recorder coalesces in memory (one scheduler call per flush).
    touch: (sandboxId) => deps.rpc.activity.touch(sandboxId),
  };
  const toolboxCtx: ToolboxContext = {
    deps: deps.rpc,
    logger,
    // The toolbox auth hook below has read the sandbox's row for this request: no second read.
    async resolve(req, sandboxId) {
      const state = req.daytonaSandboxState;
      if (state === "") throw new SandboxNotFoundError(sandboxId);
      if (state !== "started")
        throw new FailedPreconditionError(`Sandbox ${sandboxId} is ${state}; start it first`);
    },
    touch: ctx.touch,
  };

  /** The owner (API key hash) of a request with a valid key; the key's id goes on the request. */
  const ownerOf = async (req: FastifyRequest): Promise<string | undefined> => {
    const key = apiKeyFromHeaders(req.headers);
    if (key === undefined) return undefined;
    let id: string | undefined;
    try {
      id = await deps.verifier.identify(key);
    } catch (err) {
      logger.warn({ err, requestId: req.requestId }, "cannot verify an API key");
      throw new UnavailableError("cannot verify the API key right now; retry", { cause: err });
    }
    if (id === undefined) throw new UnauthenticatedError("invalid API key");
    req.daytonaKeyId = id;
    return hashApiKey(key);
  };

  const errorHandler =
    (source: DaytonaSource) => (err: FastifyError, req: FastifyRequest, reply: FastifyReply) => {
      const e = toDaytonaError(err, {
        logger,
        requestId: req.requestId,
        source,
        method: req.method,
        path: req.url,
        contentType: req.headers["content-type"],
      });
      return reply.code(e.status).type("application/json").send(e.body);
    };

  return {
    attach(server) {
      events.attach(server, async (token) =>
        (await deps.verifier.verify(token)) ? hashApiKey(token) : undefined,
      );
    },
    routes: async (app) => {
      await app.register(async (d) => {
        d.decorateRequest("daytonaOwner", "");
        d.decorateRequest("daytonaSandboxState", "");
        d.decorateRequest("daytonaKeyId", "");
        // Body-less POSTs from the SDK (axios) arrive as an empty form-urlencoded body.
        d.addContentTypeParser(
          "application/x-www-form-urlencoded",
          { parseAs: "string" },
          (_req, text, done) => {
            if (String(text).trim() === "") done(null, undefined);
            else done(new InvalidArgumentError("form bodies are not accepted; send JSON"), undefined);
          },
        );
        await d.register(previewRoutes, ctx);
        await d.register(storageRoutes, { ...ctx, prefix: STORAGE_PREFIX });
        await d.register(
          async (api) => {
            api.addHook("onRequest", async (req) => {
              const owner = await ownerOf(req);
              if (owner === undefined)
                throw new UnauthenticatedError("missing API key: send 'Authorization: Bearer <key>'");
              req.daytonaOwner = owner;
            });
            api.setErrorHandler(errorHandler("DAYTONA_API"));
            api.setNotFoundHandler((req) => {
              throw new DaytonaHttpError(
                404,
                "NOT_FOUND",
                `Cannot ${req.method} ${req.url.split("?", 1)[0]?.slice(0, 200)}`,
              );
            });
            for (const r of [
              createRoute,
              listRoute,
              getRoute,
              deleteRoute,
              lifecycleRoutes,
              settingsRoutes,
              previewUrlRoute,
              forkRoute,
              snapshotRoutes,
              pushAccessRoute,
              sandboxBuildLogRoutes,
            ])
              await api.register(r, ctx);
          },
          { prefix: "/api" },
        );
        await d.register(
          async (tb) => {
            tb.addHook("onRequest", async (req) => {
              const id = toolboxSandboxId(req.url);
              const owner = await ownerOf(req);
              if (owner === undefined) {
                // Browsers cannot set headers on WebSockets: the SDK sends the preview token instead.
                const token = new URLSearchParams(req.url.split("?")[1] ?? "").get(PREVIEW_TOKEN_QUERY);
                if (token === null)
                  throw new UnauthenticatedError("missing API key: send 'Authorization: Bearer <key>'");
                const row = id === "" ? undefined : await daytonaSandboxById(deps.db, id);
                if (row === undefined || !sameToken(token, row.preview_token))
                  throw new UnauthenticatedError("invalid token");
                req.daytonaOwner = row.owner_sha256;
                req.daytonaSandboxState = row.state;
                return;
              }
              const row = id === "" ? undefined : await daytonaSandboxById(deps.db, id);
              // Another key's sandbox is as unknown as a missing one.
              if (row === undefined || row.owner_sha256 !== owner)
                throw new SandboxNotFoundError(id || "(none)");
              req.daytonaOwner = owner;
              req.daytonaSandboxState = row.state;
            });
            tb.setErrorHandler(errorHandler("DAYTONA_DAEMON"));
            await tb.register(toolboxRoutes, toolboxCtx);
          },
          { prefix: "/toolbox" },
        );
      });
    },
    async close() {
      events.close();
    },
  };
}

/** The sandbox id of a toolbox URL (`/toolbox/<id>/…`); "" when there is none or it is malformed. */
function toolboxSandboxId(url: string): string {
  try {
    return decodeURIComponent(TOOLBOX_ID_RE.exec(url)?.[1] ?? "");
  } catch {
    return "";
  }
}
