import { setMaxListeners } from "node:events";
import { fileURLToPath } from "node:url";
import { type Client, createContextValues } from "@connectrpc/connect";
import {
  createServiceClient,
  createServiceServer,
  type Db,
  type Logger,
  listen,
  loadOrCreateControlKey,
  migrate,
  vmmAuthorization,
} from "@dnah/platform";
import { recodeConnectParseErrors } from "@dnah/platform/connect-parse-errors";
import { SandboxService } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import type { SchedulerService } from "@dnah/proto/dnah/scheduler/v1/scheduler_pb";
import { SnapshotService } from "@dnah/proto/dnah/snapshot/v1/snapshot_pb";
import websocket from "@fastify/websocket";
import type { FastifyError, FastifyInstance, FastifyRequest } from "fastify";
import { installActivityRoutes } from "./activity-routes.js";
import { ApiKeyVerifier, ensureDevKey } from "./auth/api-keys.js";
import { createAuthHook } from "./auth/hook.js";
import { installRateLimit } from "./auth/rate-limit.js";
import { createDaytonaCompat, isDaytonaRequest } from "./compat/daytona/index.js";
import { AccessTokens } from "./compat/e2b/access-token.js";
import { createE2bCompat, isE2bApiRequest } from "./compat/e2b/index.js";
import type { GatewayConfig } from "./config.js";
import { toErrorResponse, UnavailableError } from "./errors.js";
import { llmsRoutes } from "./llms.js";
import { mcpRoutes } from "./mcp.js";
import { docsOnlySchemas, openApiRoutes, registerOpenApi } from "./openapi.js";
import { requestIdHook } from "./request-id.js";
import type { RestOptions } from "./rest/common.js";
import { execRoutes } from "./rest/exec.js";
import { fileRoutes } from "./rest/files.js";
import { sandboxRoutes as restSandboxRoutes } from "./rest/sandboxes.js";
import { shareRoutes } from "./rest/share.js";
import { snapshotRoutes } from "./rest/snapshots.js";
import { templateRoutes } from "./rest/templates.js";
import { terminalRoutes } from "./rest/terminal.js";
import { watchRoutes } from "./rest/watch.js";
import { API_KEY_ID, sandboxRoutes } from "./routes.js";
import type { RpcDeps } from "./rpc/deps.js";
import { ActivityRecorder } from "./sandbox/activity.js";
import { AgentPool } from "./sandbox/agent-client.js";

/** How long close() waits for commands cut by the shutdown to be killed. */
const KILL_GRACE_MS = 5_000;
/** At the drain bound, how long calls get to send their `unavailable` answer before the cut. */
const ANSWER_GRACE_MS = 1_000;
/** GET routes that need no API key. */
const PUBLIC_GETS = new Set(["/health", "/openapi.json", "/llms.txt", "/llms-full.txt"]);
const isPublicGet = (req: FastifyRequest) =>
  (req.method === "GET" || req.method === "HEAD") && PUBLIC_GETS.has(req.routeOptions.url ?? "");
const MIGRATIONS_DIR = fileURLToPath(new URL("./db/migrations", import.meta.url));

export interface GatewayDeps {
  db: Db;
  scheduler: Client<typeof SchedulerService>;
  /** The snapshot service's client (public keys); built from cfg.snapshotUrl when absent. */
  snapshot?: Client<typeof SnapshotService> | undefined;
  logger: Logger;
}

export interface Gateway {
  /** Listens on cfg.host:cfg.port and returns the base URL. */
  start(): Promise<string>;
  /** The base URL; throws before start(). */
  readonly url: string;
  readonly app: FastifyInstance;
  /** Coalesced working calls, flushed to the scheduler every cfg.activityFlushMs (tests: flush()). */
  readonly activity: ActivityRecorder;
  /** The dev key when this start created it or configuration fixed it; else undefined. */
  readonly apiKey: string | undefined;
  /**
   * Stops accepting, lets in-flight requests finish within cfg.shutdownTimeoutMs (then ends
   * the calls still running with `unavailable`, and cuts what is left a moment later), closes
   * tunnels, then sends the activity still pending.
   */
  close(): Promise<void>;
}

/**
 * The public HTTP server: native REST under /v1 and Connect `dnah.sandbox.v1.SandboxService`
 * on one Fastify app, one auth hook and one error table for both. Applies the gateway's
 * migrations and makes sure a dev API key exists. The db is the caller's to close.
 */
export async function createGateway(cfg: Readonly<GatewayConfig>, deps: GatewayDeps): Promise<Gateway> {
  const logger = deps.logger;
  await migrate(deps.db, "gateway", MIGRATIONS_DIR);
  const apiKey = await ensureDevKey(deps.db, cfg.apiKey, logger);
  const verifier = new ApiKeyVerifier(deps.db);
  // One secret per installation seeds every sandbox's envd access token (E2B sandboxes have
  // one set; the native API sends it too, so both APIs reach every sandbox).
  const tokens = await AccessTokens.load(deps.db);
  // The control plane's key: every call to a vmm carries a token signed with it.
  const controlKey = await loadOrCreateControlKey(deps.db);
  const vmmAuth = (vmmUrl: string) => vmmAuthorization(controlKey, vmmUrl);
  const agents = new AgentPool({
    scheduler: deps.scheduler,
    logger,
    accessToken: (id) => tokens.tokenFor(id),
    vmmAuthorization: vmmAuth,
  });
  const activity = new ActivityRecorder({
    scheduler: deps.scheduler,
    logger,
    flushMs: cfg.activityFlushMs,
  });
  const rpcDeps: RpcDeps = {
    scheduler: deps.scheduler,
    activity,
    snapshot: deps.snapshot ?? createServiceClient(SnapshotService, cfg.snapshotUrl),
    agents,
    vmmAuthorization: vmmAuth,
    logger,
    limits: {
      execOutputLimitBytes: cfg.execOutputLimitBytes,
      fileLimitBytes: cfg.fileLimitBytes,
      execTimeoutMs: cfg.execTimeoutMs,
      createTimeoutMs: cfg.createTimeoutMs,
    },
  };

  const e2b = await createE2bCompat({
    db: deps.db,
    tokens,
    scheduler: deps.scheduler,
    verifier,
    rpc: rpcDeps,
    logger,
    templateContextMaxBytes: cfg.templateContextMaxBytes,
  });

  let url: string | undefined;
  const daytona = createDaytonaCompat({
    db: deps.db,
    verifier,
    rpc: rpcDeps,
    logger,
    origin: () => url,
  });

  // Aborted when close() reaches its bound: running calls answer `unavailable` and end.
  const shutdown = new AbortController();
  // Every running call listens to it: no listener limit (and no leak warning under load).
  setMaxListeners(0, shutdown.signal);
  const app = await createServiceServer({
    routes: sandboxRoutes(rpcDeps),
    // Connect handlers see who called (after the auth hook) as ctx.values.get(API_KEY_ID).
    contextValues: (req) => createContextValues().set(API_KEY_ID, req.apiKeyId),
    logger,
    bodyLimitBytes: Math.max(cfg.fileLimitBytes, cfg.jsonBodyLimitBytes),
    shutdownSignal: shutdown.signal,
    headersTimeoutMs: cfg.headersTimeoutMs,
    bodyIdleTimeoutMs: cfg.bodyIdleTimeoutMs,
  });
  app.decorate("shutdownSignal", shutdown.signal);
  // Before any route but Connect's: every route is classified as activity or not.
  installActivityRoutes(app, activity);
  // Once, at the root: WebSocket routes anywhere below (Daytona PTY, session logs).
  await app.register(websocket);
  // Clients often send `Content-Type: application/json` on bodiless DELETEs and GETs: an
  // empty JSON body means "no body", not a malformed one.
  const defaultJson = app.getDefaultJsonParser("error", "error");
  app.removeContentTypeParser("application/json");
  app.addContentTypeParser(
    "application/json",
    { parseAs: "string", bodyLimit: cfg.jsonBodyLimitBytes },
    (req, body, done) => {
      if (body === "" || (typeof body === "string" && body.trim() === "")) {
        done(null, undefined);
        return;
      }
      defaultJson(req, String(body), done);
    },
  );
  app.decorateRequest("requestId", "");
  app.decorateRequest("apiKeyId", "");
  app.addHook("onRequest", requestIdHook);
  // Garbage protobuf to a Connect method is the caller's fault: 400, not connect-es's 500.
  app.addHook("onRequest", (req, reply, done) => {
    if (req.url.startsWith(`/${SandboxService.typeName}/`)) recodeConnectParseErrors(reply.raw);
    done();
  });
  // Per-caller request budget: before the E2B proxy hook hijacks sandbox traffic and before any
  // key lookup. Health and the API's documents are not counted.
  await installRateLimit(app, {
    perMinute: cfg.rateLimitPerMinute,
    windowMs: cfg.rateLimitWindowMs,
    isExempt: isPublicGet,
    connectPrefixes: [`/${SandboxService.typeName}/`],
    logger,
  });
  // E2B sandbox traffic (E2b-Sandbox-Id) is proxied and leaves the lifecycle here, before the
  // API-key hook: the SDK sends envd no API key; envd checks its own access token.
  app.addHook("onRequest", e2b.proxyHook);
  app.addHook(
    "onRequest",
    createAuthHook({
      verifier,
      logger,
      // E2B control-API routes check the key themselves, to fail with E2B's error body.
      isPublic: (req) =>
        // The API's documents (/openapi.json, /llms*.txt) describe it and hold no secret.
        isPublicGet(req) ||
        isE2bApiRequest(req) ||
        // Daytona routes check the key (or preview token) themselves, to fail Daytona's way.
        isDaytonaRequest(req),
      connectPrefixes: [`/${SandboxService.typeName}/`],
    }),
  );
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const e = toErrorResponse(err, {
      logger,
      requestId: req.requestId,
      contentType: req.headers["content-type"],
    });
    return reply.code(e.httpStatus).type("application/json").send({ code: e.code, message: e.message });
  });
  app.setNotFoundHandler((req, reply) => {
    const path = req.url.split("?", 1)[0] ?? "";
    return reply
      .code(404)
      .type("application/json")
      .send({ code: "not_found", message: `no route ${req.method} ${path.slice(0, 200)}` });
  });

  app.get("/health", async () => ({ status: "ok" }));
  const restOpts: RestOptions = {
    deps: rpcDeps,
    jsonBodyLimitBytes: cfg.jsonBodyLimitBytes,
    fileLimitBytes: cfg.fileLimitBytes,
  };
  // Records the /v1 routes below; their schemas only document (docsOnlySchemas).
  await registerOpenApi(app);
  await app.register(
    async (v1) => {
      // JSON routes take application/json only (text/plain would reach them as a string).
      v1.removeContentTypeParser("text/plain");
      docsOnlySchemas(v1);
      await v1.register(restSandboxRoutes, restOpts);
      await v1.register(execRoutes, restOpts);
      await v1.register(fileRoutes, restOpts);
      await v1.register(snapshotRoutes, restOpts);
      await v1.register(shareRoutes, restOpts);
      await v1.register(watchRoutes, restOpts);
      await v1.register(terminalRoutes, restOpts);
      await v1.register(templateRoutes, {
        ...restOpts,
        templateContextMaxBytes: cfg.templateContextMaxBytes,
      });
    },
    { prefix: "/v1" },
  );
  await app.register(e2b.routes);
  await app.register(daytona.routes);
  await app.register(mcpRoutes);
  await app.register(openApiRoutes);
  await app.register(llmsRoutes);
  // socket.io joins the HTTP server through one upgrade dispatcher (after @fastify/websocket).
  daytona.attach(app.server);

  return {
    app,
    apiKey,
    activity,
    get url() {
      if (url === undefined) throw new Error("gateway not started");
      return url;
    },
    async start() {
      url = await listen(app, cfg.host, cfg.port);
      activity.start();
      logger.info({ url }, "gateway listening");
      return url;
    },
    async close() {
      // Long exec streams would hold close() forever: at the bound, calls still running end
      // with a clear `unavailable` (an exec stream's last line, a Connect call's status), and
      // the connections still open a moment later (raw proxies, uploads) are cut.
      let cut: NodeJS.Timeout | undefined;
      const timer = setTimeout(() => {
        logger.warn(
          { timeoutMs: cfg.shutdownTimeoutMs },
          "drain bound reached: ending the calls still running",
        );
        shutdown.abort(new UnavailableError("the gateway is shutting down; retry"));
        cut = setTimeout(() => app.server.closeAllConnections(), ANSWER_GRACE_MS);
        cut.unref();
      }, cfg.shutdownTimeoutMs);
      timer.unref();
      try {
        await daytona.close();
        await app.close();
        // Streams ended above are killing their processes in the sandboxes: let them finish.
        await agents.drain(KILL_GRACE_MS);
      } finally {
        clearTimeout(timer);
        clearTimeout(cut);
        agents.close();
        await e2b.close();
        // Last: the calls that just finished are in it.
        await activity.close();
      }
    },
  };
}
