import type { Client } from "@connectrpc/connect";
import type { Db, Logger } from "@dnah/platform";
import type { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import type { FastifyInstance, FastifyRequest, onRequestHookHandler } from "fastify";
import type { ApiKeyVerifier } from "../../auth/api-keys.js";
import { apiKeyFromHeaders } from "../../auth/hook.js";
import { UnauthenticatedError, UnavailableError } from "../../errors.js";
import type { RpcDeps } from "../../rpc/deps.js";
import type { AccessTokens } from "./access-token.js";
import type { E2bContext } from "./context.js";
import { e2bSandboxIds, isE2bSandbox } from "./db.js";
import { toE2bError } from "./errors.js";
import { createProxyHook } from "./proxy.js";
import { startRecordPruner } from "./prune.js";
import { connectRoute } from "./routes/connect.js";
import { createRoute } from "./routes/create.js";
import { forkRoute } from "./routes/fork.js";
import { getRoute } from "./routes/get.js";
import { killRoute } from "./routes/kill.js";
import { listRoute } from "./routes/list.js";
import { metricsRoute } from "./routes/metrics.js";
import { pauseRoute } from "./routes/pause.js";
import { snapshotRoutes } from "./routes/snapshots.js";
import { templateFileRoutes } from "./routes/template-files.js";
import { templateRoutes } from "./routes/templates.js";
import { timeoutRoute } from "./routes/timeout.js";
import { serveShareFile } from "./share-files.js";
import { parseSignedFileRequest, SignedFileRouter } from "./signed-files.js";
import { SandboxTunnels } from "./tunnels.js";

declare module "fastify" {
  interface FastifyContextConfig {
    /** An E2B control-API route: authenticated (and failing) E2B's way, not by the native hook. */
    e2bApi?: boolean;
  }
}

export interface E2bCompat {
  /** onRequest hook, registered before the API-key hook: proxies sandbox traffic. */
  readonly proxyHook: onRequestHookHandler;
  /** The control API routes (register at the root, no prefix). */
  readonly routes: (app: FastifyInstance) => Promise<void>;
  close(): Promise<void>;
}

/** True for requests the E2B routes authenticate themselves (the native hook skips them). */
export function isE2bApiRequest(req: FastifyRequest): boolean {
  return req.routeOptions.config?.e2bApi === true;
}

/**
 * The E2B compatibility surface: the control API (`/sandboxes…`, `/v2/sandboxes…`) and the
 * sandbox URL (requests with `E2b-Sandbox-Id`, or signed `/files` URLs routed by their
 * signature, proxied to the sandbox).
 */
export async function createE2bCompat(deps: {
  db: Db;
  tokens: AccessTokens;
  scheduler: Client<typeof SchedulerService>;
  verifier: ApiKeyVerifier;
  rpc: RpcDeps;
  logger: Logger;
  templateContextMaxBytes: number;
}): Promise<E2bCompat> {
  const tunnels = new SandboxTunnels({
    agents: deps.rpc.agents,
    admit: (sandboxId) => isE2bSandbox(deps.db, sandboxId),
  });
  const ctx: E2bContext = {
    deps: deps.rpc,
    db: deps.db,
    tokens: deps.tokens,
    tunnels,
    verifier: deps.verifier,
    logger: deps.logger,
    templateContextMaxBytes: deps.templateContextMaxBytes,
  };
  const stopPruner = startRecordPruner(ctx);
  const shareFiles = {
    scheduler: deps.scheduler,
    vmmAuthorization: deps.rpc.vmmAuthorization,
    tokens: deps.tokens,
    admit: (sandboxId: string) => isE2bSandbox(deps.db, sandboxId),
    activity: deps.rpc.activity,
    logger: deps.logger,
  };
  const signedFiles = new SignedFileRouter({
    tokens: deps.tokens,
    candidates: (limit) => e2bSandboxIds(deps.db, limit),
  });
  return {
    proxyHook: createProxyHook(
      tunnels,
      deps.logger,
      deps.rpc.activity,
      (url, method) => {
        const signed = parseSignedFileRequest(url, method);
        return signed === undefined ? undefined : signedFiles.sandboxFor(signed);
      },
      (sandboxId, req, res) => serveShareFile(shareFiles, sandboxId, req, res),
    ),
    routes: async (app) => {
      await app.register(async (e2b) => {
        e2b.addHook("onRequest", async (req) => {
          if (!isE2bApiRequest(req)) return;
          // Template uploads: the URL's signature is the credential (checked by the route).
          if (req.routeOptions.config?.e2bSigned === true) return;
          const key = apiKeyFromHeaders(req.headers);
          if (key === undefined) throw new UnauthenticatedError("missing API key");
          let id: string | undefined;
          try {
            id = await ctx.verifier.identify(key);
          } catch (err) {
            ctx.logger.warn({ err, requestId: req.requestId }, "cannot verify an API key");
            throw new UnavailableError("cannot verify the API key right now; retry", { cause: err });
          }
          if (id === undefined) throw new UnauthenticatedError("invalid API key");
          req.apiKeyId = id;
        });
        e2b.setErrorHandler((err, req, reply) => {
          const e = toE2bError(err, {
            logger: ctx.logger,
            requestId: req.requestId,
            contentType: req.headers["content-type"],
          });
          return reply.code(e.status).type("application/json").send(e.body);
        });
        await e2b.register(createRoute, ctx);
        await e2b.register(connectRoute, ctx);
        await e2b.register(listRoute, ctx);
        await e2b.register(getRoute, ctx);
        await e2b.register(killRoute, ctx);
        await e2b.register(timeoutRoute, ctx);
        await e2b.register(pauseRoute, ctx);
        await e2b.register(metricsRoute, ctx);
        await e2b.register(snapshotRoutes, ctx);
        await e2b.register(forkRoute, ctx);
        await e2b.register(templateRoutes, ctx);
        await e2b.register(templateFileRoutes, ctx);
      });
    },
    close: async () => {
      await stopPruner();
      tunnels.close();
    },
  };
}
