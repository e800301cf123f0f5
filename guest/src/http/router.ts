import type { AgentContext } from "../context.js";
import { envs } from "./envs.js";
import { getFiles } from "./files-get.js";
import { postFiles } from "./files-post.js";
import { health } from "./health.js";
import { init } from "./init.js";
import { metrics } from "./metrics.js";
import { discardRestOfBody, type HttpRequest, type HttpResponse, sendError, sendFailure } from "./respond.js";

type Route = (ctx: AgentContext, req: HttpRequest, res: HttpResponse, url: URL) => Promise<void> | void;

/** envd's plain-HTTP endpoints (spec/envd/envd.yaml), by path and method. */
const ROUTES: Record<string, Partial<Record<string, Route>>> = {
  "/health": { GET: (_ctx, _req, res) => health(res) },
  "/files": { GET: getFiles, POST: postFiles },
  "/init": { POST: init },
  "/envs": { GET: (ctx, _req, res) => envs(ctx, res) },
  "/metrics": { GET: (ctx, _req, res) => metrics(ctx.cpu, res) },
};

/** Serves the non-Connect paths; every failure becomes a JSON `{code, message}` response. */
export function createHttpRoutes(ctx: AgentContext): (req: HttpRequest, res: HttpResponse) => void {
  return (req, res) => {
    let url: URL;
    try {
      url = new URL(req.url ?? "/", "http://guest");
    } catch {
      sendError(res, 400, "invalid request URL");
      return;
    }
    const methods = ROUTES[url.pathname];
    const method = req.method ?? "GET";
    const route = methods?.[method];
    if (!methods || !route) {
      req.resume();
      if (methods) res.setHeader("Allow", Object.keys(methods).join(", "));
      sendError(
        res,
        methods ? 405 : 404,
        methods ? `method ${method} not allowed` : `path ${url.pathname} not found`,
      );
      return;
    }
    const routeName = `${method} ${url.pathname}`;
    Promise.resolve()
      .then(() => route(ctx, req, res, url))
      .catch((err: unknown) => {
        if (res.headersSent) {
          ctx.log.debug("response aborted", { route: routeName, error: String(err) });
          res.destroy();
          return;
        }
        discardRestOfBody(req, res);
        sendFailure(res, err, ctx.log, routeName);
      });
  };
}
