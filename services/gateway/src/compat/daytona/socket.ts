import type { Server as HttpServer, IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { Logger } from "@dnah/platform";
import type { Sandbox } from "@dnah/proto/dnah/sandbox/v1/sandbox_pb";
import { Server } from "socket.io";
import type { DaytonaRow } from "./db.js";
import { organizationIdOf, sandboxDto } from "./dto.js";
import type { DaytonaState } from "./lifecycle.js";

/** Where the SDK connects: `<apiUrl path>/socket.io/` (spec §11). */
export const SOCKET_IO_PATH = "/api/socket.io/";

type UpgradeListener = (req: IncomingMessage, socket: Duplex, head: Buffer) => void;

/**
 * Daytona's event stream (spec §11) on socket.io: a client authenticates with its API key in
 * the CONNECT `auth` payload and joins its organization's room; every state change of that
 * organization's sandboxes is emitted there as `sandbox.state.updated` `{sandbox, oldState,
 * newState}`, so SDK waits resolve at once. Without it the SDK still polls, but a script that
 * never disposes its client lingers ~170 s in socket.io reconnects.
 */
export class DaytonaEvents {
  private io: Server | undefined;

  constructor(private readonly logger: Logger) {}

  /**
   * Attaches to the HTTP server, taking over its `upgrade` event with ONE dispatcher:
   * `/api/socket.io/` goes to socket.io, everything else to the listeners already there
   * (@fastify/websocket's, which routes upgrades through Fastify). Left alone, both would
   * answer every upgrade. Call after @fastify/websocket is registered, before listening.
   */
  attach(server: HttpServer, authenticate: (token: string) => Promise<string | undefined>): void {
    const others = server.listeners("upgrade") as UpgradeListener[];
    server.removeAllListeners("upgrade");
    const io = new Server({ path: SOCKET_IO_PATH, transports: ["websocket"], serveClient: false });
    io.attach(server);
    // engine.io added its own upgrade listener (which would also close foreign upgrades): replaced.
    server.removeAllListeners("upgrade");
    const engine = io.engine as unknown as { handleUpgrade: UpgradeListener };
    server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if ((req.url ?? "").startsWith(SOCKET_IO_PATH)) {
        engine.handleUpgrade(req, socket, head);
        return;
      }
      for (const l of others) l.call(server, req, socket, head);
    });
    io.use((socket, next) => {
      const auth = socket.handshake.auth as { token?: unknown } | undefined;
      const token = typeof auth?.token === "string" ? auth.token : undefined;
      if (token === undefined || token === "") {
        next(new Error("missing API key: send it as the socket.io auth token"));
        return;
      }
      authenticate(token).then(
        (owner) => {
          if (owner === undefined) {
            next(new Error("invalid API key"));
            return;
          }
          void socket.join(organizationIdOf(owner));
          next();
        },
        (err: unknown) => {
          this.logger.warn({ err }, "cannot verify a socket.io API key");
          next(new Error("cannot verify the API key right now; retry"));
        },
      );
    });
    this.io = io;
  }

  /**
   * `sandbox.state.updated` to the owner's room. `native` (when the caller has it) adds the
   * intervals to the DTO; the SDK only applies the state of these events.
   */
  stateUpdated(
    row: DaytonaRow,
    oldState: DaytonaState,
    origin: string | undefined,
    native: Sandbox | undefined,
  ): void {
    if (this.io === undefined || oldState === row.state) return;
    this.io.to(organizationIdOf(row.owner_sha256)).emit("sandbox.state.updated", {
      sandbox: sandboxDto(row, native, `${origin ?? ""}/toolbox`, false),
      oldState,
      newState: row.state,
    });
  }

  /** `sandbox.state.updated` for a sandbox that is gone (its row is deleted). */
  destroyed(row: DaytonaRow, origin: string | undefined, native: Sandbox | undefined): void {
    this.stateUpdated({ ...row, state: "destroyed", updated_at: new Date() }, row.state, origin, native);
  }

  /** `sandbox.created` (the SDK applies the whole DTO: the native sandbox is required). */
  created(row: DaytonaRow, origin: string | undefined, native: Sandbox): void {
    this.io
      ?.to(organizationIdOf(row.owner_sha256))
      .emit("sandbox.created", sandboxDto(row, native, `${origin ?? ""}/toolbox`, false));
  }

  /** Disconnects every client and stops the engine; the HTTP server is the gateway's to close. */
  close(): void {
    const io = this.io;
    if (io === undefined) return;
    this.io = undefined;
    io.local.disconnectSockets(true);
    io.engine.close();
  }
}
