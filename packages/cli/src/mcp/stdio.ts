import { createDnahMcpServer } from "@dnah/mcp";
import type { Env } from "@dnah/platform";
import { StdioServerTransport } from "@modelcontextprotocol/sdk/server/stdio.js";

export const DEFAULT_DNAH_URL = "http://127.0.0.1:3000";

/**
 * `dnah mcp`: the MCP server on stdin/stdout (stdout carries only MCP messages), calling the
 * gateway at DNAH_URL with DNAH_API_KEY. Runs until stdin closes.
 */
export async function mcpStdio(env: Env): Promise<void> {
  const apiKey = env.DNAH_API_KEY?.trim();
  if (apiKey === undefined || apiKey === "")
    throw new Error("set DNAH_API_KEY to a dnah API key (and DNAH_URL, default http://127.0.0.1:3000)");
  const baseUrl = env.DNAH_URL?.trim() || DEFAULT_DNAH_URL;
  try {
    new URL(baseUrl);
  } catch {
    throw new Error(`DNAH_URL is not a URL: '${baseUrl.slice(0, 200)}'`);
  }
  const server = createDnahMcpServer({ baseUrl, apiKey });
  const transport = new StdioServerTransport();
  const closed = new Promise<void>((resolve) => {
    transport.onclose = () => resolve();
    process.stdin.once("end", () => resolve());
  });
  await server.connect(transport);
  await closed;
  await server.close();
}
