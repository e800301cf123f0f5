import type { FastifyInstance, FastifyReply, FastifyRequest, RouteOptions } from "fastify";
import type { ActivitySink } from "./sandbox/activity.js";

/**
 * Which calls reset a sandbox's idle clock (auto-stop), in one table.
 *
 * - `false`: not counted (health, detail reads, listings, events, lifecycle changes, pause,
 *   resume — a resume is recorded by the scheduler itself).
 * - `{ param }`: counted; the sandbox is the route parameter (REST) or request field
 *   (Connect) of that name. The gateway holds the sandbox active for the whole call: marked
 *   when the handler starts (after authentication and the surface's own checks), at every
 *   flush while it runs, and when the response ends.
 * - `"handler"`: counted, but only the handler knows the sandbox (a Daytona name resolved to
 *   an id, several ids in a query, a proxied request routed by header): it marks it itself
 *   through `RpcDeps.activity`. A watch (`/files/watch`, SSE or WebSocket) is one: it counts
 *   once, when it starts; merely keeping a watch open does not keep the sandbox awake.
 *
 * Keys are `<METHOD> <route URL>` as Fastify registers them; `*` as the method matches any,
 * and a URL ending in `/*` matches every route below it. Every route the gateway serves must
 * be here: an unlisted one fails the gateway's start (see `installActivityRoutes`).
 */
export type ActivityRule = false | { readonly param: string } | "handler";

const ID = { param: "id" } as const;
const SANDBOX_ID = { param: "sandboxId" } as const;
const CONNECT = "POST /dnah.sandbox.v1.SandboxService";

export const ACTIVITY_ROUTES: Readonly<Record<string, ActivityRule>> = {
  "GET /health": false,
  // The API's documents (public, like /health).
  "GET /openapi.json": false,
  "GET /llms.txt": false,
  "GET /llms-full.txt": false,

  // native REST
  "POST /v1/sandboxes": false,
  "GET /v1/sandboxes": false,
  "GET /v1/sandboxes/:id": false,
  "DELETE /v1/sandboxes/:id": false,
  "POST /v1/sandboxes/:id/pause": false,
  "POST /v1/sandboxes/:id/resume": false,
  "POST /v1/sandboxes/:id/archive": false,
  "PATCH /v1/sandboxes/:id/lifecycle": false,
  "GET /v1/sandboxes/:id/events": false,
  "GET /v1/sandboxes/:id/metrics": ID,
  "POST /v1/sandboxes/:id/exec": ID,
  "POST /v1/sandboxes/:id/exec/stream": ID,
  "PUT /v1/sandboxes/:id/files": ID,
  "GET /v1/sandboxes/:id/files": ID,
  "GET /v1/sandboxes/:id/files/list": ID,
  "GET /v1/sandboxes/:id/files/watch": "handler",
  // A terminal (WebSocket) holds its sandbox active for as long as it is open.
  "GET /v1/sandboxes/:id/terminal": ID,
  "POST /v1/sandboxes/:id/snapshot": ID,
  "GET /v1/sandboxes/:id/share/*": ID,
  "PUT /v1/sandboxes/:id/share/*": ID,
  "POST /v1/sandboxes/:id/share/*": ID,
  "DELETE /v1/sandboxes/:id/share/*": ID,
  "POST /v1/sandboxes/:id/fork": ID,
  "GET /v1/snapshots": false,
  "GET /v1/snapshots/:idOrName": false,
  "DELETE /v1/snapshots/:idOrName": false,
  "POST /v1/snapshots/:idOrName/restore": false,
  "GET /v1/snapshot-keys": false,
  // Templates: no sandbox is touched.
  "POST /v1/templates": false,
  "GET /v1/templates": false,
  "GET /v1/templates/:id": false,
  "DELETE /v1/templates/:id": false,
  "POST /v1/templates/files/:sha256": false,
  "GET /v1/templates/files/:sha256": false,
  "GET /v1/templates/:id/builds/:buildId": false,
  "GET /v1/templates/:id/builds/:buildId/logs": false,
  "POST /v1/templates/:id/builds/:buildId/cancel": false,

  // Connect dnah.sandbox.v1.SandboxService (the param is the request's field)
  [`${CONNECT}/CreateSandbox`]: false,
  [`${CONNECT}/GetSandbox`]: false,
  [`${CONNECT}/ListSandboxes`]: false,
  [`${CONNECT}/DeleteSandbox`]: false,
  [`${CONNECT}/PauseSandbox`]: false,
  [`${CONNECT}/ResumeSandbox`]: false,
  [`${CONNECT}/ArchiveSandbox`]: false,
  [`${CONNECT}/UpdateLifecycle`]: false,
  [`${CONNECT}/ListSandboxEvents`]: false,
  [`${CONNECT}/GetSnapshot`]: false,
  [`${CONNECT}/ListSnapshots`]: false,
  [`${CONNECT}/DeleteSnapshot`]: false,
  [`${CONNECT}/RestoreSnapshot`]: false,
  [`${CONNECT}/ListSnapshotKeys`]: false,
  [`${CONNECT}/Exec`]: SANDBOX_ID,
  [`${CONNECT}/ExecStream`]: SANDBOX_ID,
  [`${CONNECT}/WriteFile`]: SANDBOX_ID,
  [`${CONNECT}/ReadFile`]: SANDBOX_ID,
  [`${CONNECT}/ListFiles`]: SANDBOX_ID,
  [`${CONNECT}/GetSandboxMetrics`]: SANDBOX_ID,
  [`${CONNECT}/SnapshotSandbox`]: SANDBOX_ID,
  [`${CONNECT}/ForkSandbox`]: SANDBOX_ID,

  // E2B: sandbox traffic (envd: commands, files, watch…; any port, by E2b-Sandbox-Id or
  // <port>-<id>.<domain>; signed /files URLs) is taken by the proxy hook before routing.
  "PROXY e2b sandbox traffic": "handler",
  "POST /sandboxes": false,
  "POST /v2/sandboxes": false,
  "GET /sandboxes": false,
  "GET /v2/sandboxes": false,
  "GET /sandboxes/:id": false,
  "DELETE /sandboxes/:id": false,
  "POST /sandboxes/:id/timeout": false,
  "POST /sandboxes/:id/pause": false,
  "POST /sandboxes/:id/connect": false,
  "POST /v2/sandboxes/:id/connect": false,
  "POST /sandboxes/:id/resume": false,
  "GET /sandboxes/:id/metrics": ID,
  "GET /sandboxes/metrics": "handler",
  "POST /sandboxes/:id/snapshots": ID,
  "GET /snapshots": false,
  "DELETE /templates/:id": false,
  // E2B's template builder: no sandbox involved.
  "POST /v3/templates": false,
  "POST /v2/templates/:templateId/builds/:buildId": false,
  "GET /templates/:templateId/builds/:buildId/status": false,
  "GET /templates/:templateId/files/:hash": false,
  "PUT /templates/:templateId/files/:hash": false,
  "GET /templates/aliases/:alias": false,
  "POST /templates/tags": false,
  "DELETE /templates/tags": false,
  "GET /templates/:templateId/tags": false,
  "POST /sandboxes/:id/fork": ID,

  // Daytona: the API (by id or name), the toolbox, preview links
  "POST /api/sandbox": false,
  "GET /api/sandbox": false,
  "GET /api/sandbox/:idOrName": false,
  "GET /api/sandbox/:idOrName/toolbox-proxy-url": false,
  "DELETE /api/sandbox/:idOrName": false,
  "POST /api/sandbox/:idOrName/start": false,
  "POST /api/sandbox/:idOrName/stop": false,
  "POST /api/sandbox/:idOrName/pause": false,
  "POST /api/sandbox/:idOrName/archive": false,
  "POST /api/sandbox/:idOrName/autostop/:interval": false,
  "POST /api/sandbox/:idOrName/autoarchive/:interval": false,
  "POST /api/sandbox/:idOrName/autodelete/:interval": false,
  "PUT /api/sandbox/:idOrName/labels": false,
  "GET /api/sandbox/:idOrName/ports/:port/preview-url": false,
  // The SDK's refreshActivity(): an explicit "I am still working".
  "POST /api/sandbox/:idOrName/last-activity": "handler",
  "POST /api/sandbox/:idOrName/fork": "handler",
  // Daytona snapshots, image builds and their context store (compat/daytona/snapshots).
  "GET /api/sandbox/:idOrName/build-logs-url": false,
  "GET /api/sandbox/:idOrName/build-logs": false,
  "POST /api/snapshots": false,
  "GET /api/snapshots": false,
  "GET /api/snapshots/:id": false,
  "DELETE /api/snapshots/:id": false,
  "POST /api/snapshots/:id/activate": false,
  "GET /api/snapshots/:id/build-logs-url": false,
  "GET /api/snapshots/:id/build-logs": false,
  "GET /api/object-storage/push-access": false,
  "* /daytona-storage/*": false,
  "* /toolbox/:sandboxId/*": SANDBOX_ID,
  "* /preview/*": "handler",

  // MCP over streamable HTTP: its tools call the REST routes above, which count themselves.
  "* /mcp": false,
};

/** The rule for a route; undefined when the table does not list it. */
export function activityRule(method: string, url: string): ActivityRule | undefined {
  const m = method === "HEAD" ? "GET" : method;
  const exact = ACTIVITY_ROUTES[`${m} ${url}`] ?? ACTIVITY_ROUTES[`* ${url}`];
  if (exact !== undefined) return exact;
  for (const [key, rule] of Object.entries(ACTIVITY_ROUTES)) {
    const [km, ku] = key.split(" ", 2) as [string, string];
    if ((km === m || km === "*") && ku.endsWith("/*") && url.startsWith(ku.slice(0, -1))) return rule;
  }
  return undefined;
}

/**
 * Registers an onRoute hook (call before any route but the Connect ones, which
 * `connectActivity` covers): every route must be in the table, and each `{param}` route
 * holds its sandbox active while it runs.
 */
export function installActivityRoutes(app: FastifyInstance, activity: ActivitySink): void {
  app.addHook("onRoute", (route: RouteOptions) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method];
    const rules = methods.map((m) => activityRule(m, route.url));
    const missing = methods.filter((_m, i) => rules[i] === undefined);
    if (missing.length > 0)
      throw new Error(`route ${missing.join(",")} ${route.url} is not in ACTIVITY_ROUTES: classify it`);
    const rule = rules[0];
    if (rules.some((r) => JSON.stringify(r) !== JSON.stringify(rule)))
      throw new Error(`route ${route.url}: its methods have different activity rules`);
    if (rule === false || rule === "handler" || rule === undefined) return;
    const param = rule.param;
    const hold = async (req: FastifyRequest, reply: FastifyReply) => {
      const id = (req.params as Record<string, unknown> | undefined)?.[param];
      if (typeof id !== "string") return;
      const release = activity.hold(id);
      // A plain response ends with its `close`; a WebSocket (no real response) with its socket.
      const res = reply.raw;
      const socket = req.raw.socket;
      const done = () => {
        res.off("close", done);
        socket?.off("close", done);
        release();
      };
      res.once("close", done);
      socket?.once("close", done);
    };
    // Route-level preHandlers run after every onRequest (authentication), the app-level
    // preHandlers (the Daytona toolbox's state check) and the route's own: refused calls are
    // not activity.
    const own = route.preHandler;
    route.preHandler = [...(own === undefined ? [] : Array.isArray(own) ? own : [own]), hold];
  });
}
