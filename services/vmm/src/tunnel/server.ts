import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import type { Logger } from "@dnah/platform";
import { TUNNEL_PROTOCOL } from "@dnah/platform";
import { dialVsock } from "../vsock/dialer.js";

const PATH_RE = /^\/tunnel\/([a-z0-9]{1,64})\/(\d{1,5})$/;

/**
 * Serves `GET /tunnel/<id>/<port>` upgrades (see platform's tunnel.ts): dials the sandbox's
 * vsock on that port and splices the two sockets. Nothing is parsed after the upgrade.
 */
export function createTunnelHandler(lookup: (sandboxId: string) => string | undefined, logger: Logger) {
  return (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const reply = (status: number, code: string, message: string) => {
      const body = JSON.stringify({ code, message });
      socket.end(
        `HTTP/1.1 ${status} ${status === 404 ? "Not Found" : status === 400 ? "Bad Request" : "Bad Gateway"}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    };
    socket.on("error", () => {});
    if ((req.headers.upgrade ?? "").toLowerCase() !== TUNNEL_PROTOCOL) {
      reply(400, "invalid_argument", `expected Upgrade: ${TUNNEL_PROTOCOL}`);
      return;
    }
    const m = PATH_RE.exec(req.url ?? "");
    const port = Number(m?.[2]);
    if (!m || port < 1 || port > 65535) {
      reply(400, "invalid_argument", "expected /tunnel/<sandboxId>/<port>");
      return;
    }
    const sandboxId = m[1]!;
    const vsockPath = lookup(sandboxId);
    if (!vsockPath) {
      reply(404, "not_found", `sandbox '${sandboxId}' is not on this host`);
      return;
    }
    dialVsock(vsockPath, port).then(
      (guest) => {
        socket.write(
          `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${TUNNEL_PROTOCOL}\r\n\r\n`,
        );
        socket.setNoDelay(true);
        if (head.length > 0) guest.write(head);
        guest.on("error", () => socket.destroy());
        socket.on("error", () => guest.destroy());
        guest.on("close", () => socket.destroy());
        socket.on("close", () => guest.destroy());
        guest.pipe(socket);
        socket.pipe(guest);
        guest.resume();
      },
      (err: Error) => {
        logger.debug({ "sandbox.id": sandboxId, port, err: err.message }, "tunnel dial failed");
        reply(502, "unavailable", `sandbox '${sandboxId}' port ${port} did not answer`);
      },
    );
  };
}
