import type { IncomingMessage } from "node:http";
import { DnahApiError } from "@dnah/mcp/client";
import type { Env } from "@dnah/platform";
import WebSocket from "ws";
import { apiClient, CliError, EXIT } from "../api.js";

/**
 * `dnah sandbox shell <id>`: an interactive terminal in the sandbox over the gateway's
 * `GET /v1/sandboxes/{id}/terminal` WebSocket. The local terminal is put in raw mode (every
 * key, ^C included, goes to the remote shell), window size changes follow, and the local
 * terminal is restored however the session ends. Resolves to the remote shell's exit code.
 */
export async function sandboxShell(id: string, opts: { cwd?: string }, env: Env): Promise<number> {
  const client = apiClient(env);
  const stdin = process.stdin;
  const stdout = process.stdout;
  const size = () => ({ cols: stdout.columns || 80, rows: stdout.rows || 24 });
  const q = new URLSearchParams({ cols: String(size().cols), rows: String(size().rows) });
  if (opts.cwd !== undefined) q.set("cwd", opts.cwd);
  const ws = new WebSocket(client.wsUrl(`/v1/sandboxes/${encodeURIComponent(id)}/terminal?${q}`), {
    headers: client.authHeaders(),
  });

  const raw = stdin.isTTY === true;
  const restore = () => {
    if (raw && stdin.isRaw) stdin.setRawMode(false);
  };
  // Whatever ends the process, the user's terminal is left as it was found.
  process.once("exit", restore);
  const onInput = (data: Buffer) => {
    if (ws.readyState === WebSocket.OPEN) ws.send(data, { binary: true });
  };
  const onResize = () => {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ resize: size() }));
  };

  try {
    return await new Promise<number>((resolve, reject) => {
      let exit: number | undefined;
      ws.on("unexpected-response", (_req, res: IncomingMessage) => {
        // Refused before the upgrade (401, 404, 409…): the gateway's JSON error.
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () => {
          const status = res.statusCode ?? 502;
          let code = `http_${status}`;
          let message = Buffer.concat(chunks).toString("utf8").slice(0, 500) || `HTTP ${status}`;
          try {
            const b = JSON.parse(message) as { code?: string; message?: string };
            code = b.code ?? code;
            message = b.message ?? message;
          } catch {
            // Not JSON: the text itself is the message.
          }
          reject(new DnahApiError(status, code, message));
        });
        res.on("error", reject);
      });
      ws.on("error", (err: NodeJS.ErrnoException) =>
        reject(new CliError(`cannot reach dnah at ${client.baseUrl}: ${err.code ?? err.message}`)),
      );
      ws.on("open", () => {
        if (raw) stdin.setRawMode(true);
        stdin.on("data", onInput);
        stdin.resume();
        // Node reads the new size and emits `resize` on SIGWINCH (stdout a terminal).
        stdout.on("resize", onResize);
      });
      ws.on("message", (data: Buffer, isBinary: boolean) => {
        if (isBinary) {
          stdout.write(data);
          return;
        }
        const msg = JSON.parse(data.toString("utf8")) as {
          exit?: { code: number; reason?: string };
          error?: { code: string; message: string };
        };
        if (msg.exit !== undefined) {
          if (msg.exit.reason !== undefined) process.stderr.write(`\r\ndnah: ${msg.exit.reason}\r\n`);
          const c = msg.exit.code;
          exit = Number.isInteger(c) && c >= 0 && c <= 255 ? c : EXIT.failure;
        } else if (msg.error !== undefined) {
          reject(new CliError(`${msg.error.code}: ${msg.error.message}`));
        }
      });
      ws.on("close", () => {
        if (exit !== undefined) resolve(exit);
        else reject(new CliError("the terminal closed without an exit status"));
      });
    });
  } finally {
    stdin.off("data", onInput);
    stdin.pause();
    stdout.off("resize", onResize);
    restore();
    process.off("exit", restore);
    ws.terminate();
  }
}
