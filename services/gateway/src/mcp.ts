import { isIPv6 } from "node:net";
import { createDnahMcpServer } from "@dnah/mcp";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { apiKeyFromHeaders } from "./auth/hook.js";

/**
 * The MCP server over streamable HTTP at `/mcp`, stateless: each POST gets its own server and
 * transport, whose tools call this gateway's REST API back over the address the request came
 * in on, with the caller's own API key (the auth hook checked it before this route runs, like
 * every other route). Those REST calls count as activity themselves; `/mcp` does not.
 * GET (a standalone notification stream) and DELETE (ending a session) have no meaning
 * without sessions: 405.
 */
export async function mcpRoutes(app: FastifyInstance): Promise<void> {
  app.route({
    method: ["GET", "POST", "DELETE"],
    url: "/mcp",
    handler: async (req, reply) => {
      if (req.method !== "POST" || req.body === undefined) {
        const status = req.method === "POST" ? 400 : 405;
        const message =
          status === 405 ? "method not allowed: this MCP server is stateless, POST only" : "empty body";
        return reply
          .code(status)
          .header("allow", "POST")
          .type("application/json")
          .send({ jsonrpc: "2.0", error: { code: status === 405 ? -32000 : -32700, message }, id: null });
      }
      const server = createDnahMcpServer({
        baseUrl: loopbackUrl(req),
        apiKey: apiKeyFromHeaders(req.headers) ?? "",
        publicUrl: `${req.protocol}://${req.host}`,
      });
      const transport = new StreamableHTTPServerTransport({}); // no sessionIdGenerator: stateless
      reply.hijack();
      reply.raw.once("close", () => {
        void transport.close();
        void server.close();
      });
      try {
        await server.connect(transport);
        await transport.handleRequest(req.raw, reply.raw, req.body);
      } catch (err) {
        req.log.warn({ err, requestId: req.requestId }, "mcp request failed");
        if (!reply.raw.headersSent)
          reply.raw.writeHead(500, { "content-type": "application/json" }).end(
            JSON.stringify({
              jsonrpc: "2.0",
              error: { code: -32603, message: "internal error" },
              id: null,
            }),
          );
        else reply.raw.destroy();
      }
    },
  });
}

/** This gateway as reached from itself: the local address the request arrived on. */
function loopbackUrl(req: FastifyRequest): string {
  const addr = req.socket.localAddress ?? "127.0.0.1";
  return `http://${isIPv6(addr) ? `[${addr}]` : addr}:${req.socket.localPort}`;
}
