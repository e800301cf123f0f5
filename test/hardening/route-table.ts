import type { FastifyInstance } from "fastify";

export interface RouteEntry {
  readonly method: string;
  /** Fastify's pattern: `:param` segments and a trailing `*`. */
  readonly url: string;
}

const LINE_RE = /^((?:[│ ] {3})*)[├└]── (.*?)(?: \(([A-Z, ]+)\))?$/u;

/**
 * Every (method, url) the app's router holds, read back from `printRoutes()`'s radix tree
 * (find-my-way prints each node's own segment; a route is the concatenation down its branch).
 * Fastify has no public route list, and an `onRoute` hook would miss the Connect routes that
 * `createServiceServer` mounts before the gateway can add one. HEAD twins of GETs are dropped.
 */
export function routeTable(app: FastifyInstance): RouteEntry[] {
  const lines = app.printRoutes({ includeMeta: false }).split("\n");
  const stack: string[] = [];
  const out: RouteEntry[] = [];
  for (const line of lines) {
    if (line.trim() === "") continue;
    const m = LINE_RE.exec(line);
    if (m === null) throw new Error(`cannot parse a printRoutes line: ${JSON.stringify(line)}`);
    const depth = (m[1] ?? "").length / 4;
    stack.length = depth;
    stack.push(m[2] ?? "");
    if (m[3] === undefined) continue;
    const url = stack.join("");
    for (const method of m[3].split(", ")) {
      if (method === "HEAD" && m[3].includes("GET")) continue;
      out.push({ method, url });
    }
  }
  return out;
}
