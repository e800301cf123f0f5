import type { FastifyPluginAsync } from "fastify";
import { SANDBOX_HOME } from "../../../sandbox/paths.js";
import type { ToolboxContext } from "./context.js";

/** The toolbox version this surface reports (`GET /version`). */
export const TOOLBOX_VERSION = "0.1.0";

/**
 * `GET /user-home-dir`, `GET /work-dir`, `GET /version`. Relative paths, exec's default cwd and
 * sessions all start in the sandbox user's home, so the work dir is the home too.
 */
export const infoRoutes: FastifyPluginAsync<ToolboxContext> = async (app) => {
  app.get("/:sandboxId/user-home-dir", async () => ({ dir: SANDBOX_HOME }));
  app.get("/:sandboxId/work-dir", async () => ({ dir: SANDBOX_HOME }));
  app.get("/:sandboxId/version", async () => ({ version: TOOLBOX_VERSION }));
};
