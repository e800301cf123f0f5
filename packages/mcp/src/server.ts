import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import type { CallToolResult } from "@modelcontextprotocol/sdk/types.js";
import { DnahApiError, DnahClient } from "./client.js";
import { TOOLS } from "./tools.js";

export interface DnahMcpOptions {
  /** Where the tools call dnah's REST API. */
  baseUrl: string;
  apiKey: string;
  /** The gateway's origin as the MCP caller reaches it (port URLs); default baseUrl. */
  publicUrl?: string | undefined;
}

export const SERVER_NAME = "dnah";
export const SERVER_VERSION = "0.1.0";

/**
 * An MCP server whose tools are a thin client of dnah's native REST API. Connect it to any
 * transport (stdio for `dnah mcp`, streamable HTTP for the gateway's `/mcp`).
 */
export function createDnahMcpServer(opts: DnahMcpOptions): McpServer {
  const client = new DnahClient({ baseUrl: opts.baseUrl, apiKey: opts.apiKey });
  const publicUrl = opts.publicUrl ?? client.baseUrl;
  const server = new McpServer(
    { name: SERVER_NAME, version: SERVER_VERSION },
    { capabilities: { logging: {} } },
  );
  for (const tool of TOOLS)
    server.registerTool(
      tool.name,
      { description: tool.description, inputSchema: tool.input },
      async (args: Record<string, unknown>, extra): Promise<CallToolResult> => {
        try {
          const answer = await tool.run({ client, publicUrl, extra }, args);
          return { content: [{ type: "text", text: JSON.stringify(answer ?? null, null, 2) }] };
        } catch (err) {
          return { isError: true, content: [{ type: "text", text: toolErrorText(err) }] };
        }
      },
    );
  return server;
}

/** The message a failed call shows: dnah's own (`code: message`), never a stack trace. */
export function toolErrorText(err: unknown): string {
  if (err instanceof DnahApiError) return `${err.code}: ${err.message}`;
  if (err instanceof SyntaxError) return "internal: dnah sent an answer that is not JSON";
  return `internal: ${err instanceof Error ? err.message : String(err)}`;
}
