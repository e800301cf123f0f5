import type { IncomingMessage } from "node:http";
import type { Socket } from "node:net";
import type { Logger } from "@dnah/platform";
import { TUNNEL_PROTOCOL } from "@dnah/platform";
import { dialVsock } from "../vsock/dialer.js";

const PATH_RE = /^\/tunnel\/([a-z0-9]{1,64})\/(\d{1,5})$/;

const REASONS: Readonly<Record<number, string>> = {
  400: "Bad Request",
  404: "Not Found",
  409: "Conflict",
  502: "Bad Gateway",
};

/** Where a tunnel to a sandbox goes, and whether it may be opened now. */
export interface TunnelTarget {
  readonly vsockPath: string;
  /** A paused sandbox cannot answer: its tunnels are refused with 409. */
  readonly paused: boolean;
}

/** The open tunnels of each sandbox, so that pausing one can cut them. */
export class TunnelRegistry {
  private readonly open = new Map<string, Set<Socket>>();

  track(sandboxId: string, socket: Socket): void {
    let set = this.open.get(sandboxId);
    if (set === undefined) {
      set = new Set();
      this.open.set(sandboxId, set);
    }
    set.add(socket);
    socket.once("close", () => {
      set.delete(socket);
      if (set.size === 0 && this.open.get(sandboxId) === set) this.open.delete(sandboxId);
    });
  }

  /** Closes every open tunnel (a shutdown past its bound); returns how many there were. */
  severAll(): number {
    let n = 0;
    for (const id of [...this.open.keys()]) n += this.sever(id);
    return n;
  }

  /** Closes every open tunnel of the sandbox; returns how many there were. */
  sever(sandboxId: string): number {
    const set = this.open.get(sandboxId);
    if (set === undefined) return 0;
    this.open.delete(sandboxId);
    for (const s of set) s.destroy();
    return set.size;
  }
}

/**
 * Serves `GET /tunnel/<id>/<port>` upgrades (see platform's tunnel.ts): dials the sandbox's
 * vsock on that port and splices the two sockets. Nothing is parsed after the upgrade.
 */
export function createTunnelHandler(
  lookup: (sandboxId: string) => TunnelTarget | undefined,
  logger: Logger,
  registry: TunnelRegistry = new TunnelRegistry(),
) {
  return (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const reply = (status: number, code: string, message: string) => {
      const body = JSON.stringify({ code, message });
      socket.end(
        `HTTP/1.1 ${status} ${REASONS[status] ?? "Error"}\r\n` +
          `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      );
    };
    const refusePaused = (sandboxId: string) =>
      reply(409, "failed_precondition", `sandbox '${sandboxId}' is paused; resume it first`);
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
    const target = lookup(sandboxId);
    if (!target) {
      reply(404, "not_found", `sandbox '${sandboxId}' is not on this host`);
      return;
    }
    if (target.paused) {
      refusePaused(sandboxId);
      return;
    }
    dialVsock(target.vsockPath, port).then(
      (guest) => {
        // Paused while we dialled: the pause already cut the tunnels it knew of.
        if (lookup(sandboxId)?.paused) {
          guest.destroy();
          refusePaused(sandboxId);
          return;
        }
        socket.write(
          `HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: ${TUNNEL_PROTOCOL}\r\n\r\n`,
        );
        socket.setNoDelay(true);
        registry.track(sandboxId, socket);
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
        if (lookup(sandboxId)?.paused) refusePaused(sandboxId);
        else reply(502, "unavailable", `sandbox '${sandboxId}' port ${port} did not answer`);
      },
    );
  };
}
