import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import type { FastifyInstance } from "fastify";

/** The repo's docs folder, which holds llms.txt and llms-full.txt. */
export const DOCS_DIR = fileURLToPath(new URL("../../../docs/", import.meta.url));
export const LLMS_FILES = ["llms.txt", "llms-full.txt"] as const;

/**
 * GET /llms.txt and /llms-full.txt (the llms.txt convention): what dnah is and how to use
 * its API, for coding agents. Public like /health: they document the API and hold no secret.
 * Read once, when the routes are registered.
 */
export async function llmsRoutes(app: FastifyInstance): Promise<void> {
  for (const name of LLMS_FILES) {
    const text = await readFile(`${DOCS_DIR}${name}`, "utf8");
    app.get(`/${name}`, async (_req, reply) =>
      reply.type("text/plain; charset=utf-8").header("cache-control", "public, max-age=300").send(text),
    );
  }
}
