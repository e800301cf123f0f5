import { Agent, type AgentOptions, request } from "node:http";
import type { Socket } from "node:net";

/**
 * The data plane between the gateway and a sandbox port. A tunnel is an HTTP/1.1 upgrade to
 * the sandbox's vmm:
 *
 *   GET /tunnel/<sandboxId>/<port>   Connection: Upgrade   Upgrade: dnah-tunnel
 *   -> 101 Switching Protocols, then raw bytes to and from the guest port.
 *
 * Errors before the upgrade are JSON `{code, message}` with 404 (unknown sandbox), 409 (the
 * sandbox is paused; `failed_precondition`), 502 (the guest did not answer) or 400 (bad
 * port). Bytes are never re-encoded on the way.
 */
export const TUNNEL_PROTOCOL = "dnah-tunnel";

export class TunnelError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "TunnelError";
  }
}

export interface DialOptions {
  /** Gives up on the vmm after this long. */
  timeoutMs?: number;
  headers?: Record<string, string>;
  /** The `authorization` header for one dial (a fresh vmm token each time; see vmm-auth.ts). */
  authorization?: () => string;
}

/** Opens a raw byte stream to `port` inside sandbox `sandboxId` through its vmm at `vmmUrl`. */
export function dialTunnel(
  vmmUrl: string,
  sandboxId: string,
  port: number,
  opts: DialOptions = {},
): Promise<Socket> {
  const url = new URL(`/tunnel/${encodeURIComponent(sandboxId)}/${port}`, vmmUrl);
  return new Promise((resolve, reject) => {
    const req = request(url, {
      method: "GET",
      headers: {
        ...opts.headers,
        ...(opts.authorization ? { authorization: opts.authorization() } : {}),
        Connection: "Upgrade",
        Upgrade: TUNNEL_PROTOCOL,
      },
      timeout: opts.timeoutMs ?? 10_000,
    });
    req.on("upgrade", (res, socket, head) => {
      if (res.statusCode !== 101) {
        socket.destroy();
        reject(new TunnelError(502, "unavailable", `vmm answered ${res.statusCode} to a tunnel upgrade`));
        return;
      }
      socket.setNoDelay(true);
      if (head.length > 0) socket.unshift(head);
      resolve(socket);
    });
    req.on("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        let code = "unavailable";
        let message = `tunnel refused with HTTP ${res.statusCode}`;
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString("utf8")) as {
            code?: string;
            message?: string;
          };
          code = body.code ?? code;
          message = body.message ?? message;
        } catch {
          // not JSON: keep the status-derived message
        }
        reject(new TunnelError(res.statusCode ?? 502, code, message));
      });
    });
    req.on("timeout", () => req.destroy(new TunnelError(504, "deadline_exceeded", "tunnel dial timed out")));
    req.on("error", (err) =>
      reject(
        err instanceof TunnelError
          ? err
          : new TunnelError(502, "unavailable", `tunnel dial failed: ${err.message}`),
      ),
    );
    req.end();
  });
}

/** Pauses before the second and third tries of a dial that got no answer from the guest. */
const DIAL_RETRY_DELAYS_MS = [50, 250];

/**
 * A dial whose failure is a 502 (the guest did not answer, or the vmm could not be reached)
 * is tried again twice: no byte of the caller's request has gone anywhere yet, so even a
 * non-idempotent call is safe, and a busy guest agent or vmm is often there a moment later.
 * Other answers (404 unknown sandbox, 409 paused, 504 timed out) are final.
 */
async function dialRetrying(
  vmmUrl: string,
  sandboxId: string,
  port: number,
  opts: DialOptions,
): Promise<Socket> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await dialTunnel(vmmUrl, sandboxId, port, opts);
    } catch (err) {
      const delay = DIAL_RETRY_DELAYS_MS[attempt];
      if (delay === undefined || !(err instanceof TunnelError) || err.status !== 502) throw err;
      await new Promise((r) => setTimeout(r, delay));
    }
  }
}

/**
 * An http.Agent whose connections are tunnels to one sandbox port, kept alive and reused, so
 * that HTTP clients (Connect transports, proxies) talk to the guest as if it were local.
 */
export function createTunnelAgent(
  vmmUrl: string,
  sandboxId: string,
  port: number,
  opts: AgentOptions & DialOptions = {},
): Agent {
  const agent = new Agent({ keepAlive: true, maxSockets: 64, maxFreeSockets: 16, ...opts });
  // http.Agent supports an asynchronous createConnection through its callback form.
  (agent as unknown as { createConnection: unknown }).createConnection = (
    _options: unknown,
    callback: (err: Error | null, socket?: Socket) => void,
  ) => {
    dialRetrying(vmmUrl, sandboxId, port, opts).then(
      (socket) => callback(null, socket),
      (err: Error) => callback(err),
    );
    return undefined;
  };
  return agent;
}
