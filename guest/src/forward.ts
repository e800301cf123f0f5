import { connect, type Socket } from "node:net";
import type { Logger } from "./log.js";

/**
 * The port tunnel: pipes `socket` to `host:port` inside the sandbox, both ways, with half-close.
 * If the port does not accept, `socket` is closed without a byte.
 */
export function forwardToPort(socket: Socket, port: number, host: string, log: Logger): void {
  const upstream = connect({ port, host, allowHalfOpen: true });
  upstream.setNoDelay(true);
  let connected = false;
  upstream.once("connect", () => {
    connected = true;
  });
  upstream.on("error", (err) => {
    if (!connected) log.debug("forward target refused", { port, error: err.message });
    socket.destroy();
  });
  socket.on("error", () => upstream.destroy());
  upstream.on("close", (hadError) => {
    if (hadError) socket.destroy();
    else if (!socket.writableEnded) socket.end();
  });
  socket.on("close", (hadError) => {
    if (hadError) upstream.destroy();
    else if (!upstream.writableEnded) upstream.end();
  });
  socket.pipe(upstream);
  upstream.pipe(socket);
}
