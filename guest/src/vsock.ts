import { chmod, lstat, unlink } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { errnoOf } from "./errors.js";
import type { Logger } from "./log.js";
import { MAX_PORT, MIN_PORT } from "./ports.js";

/** The handshake line may not be longer than this, newline included. */
export const HANDSHAKE_MAX_BYTES = 32;
export const HANDSHAKE_TIMEOUT_MS = 5_000;

export interface HybridVsockOptions {
  /** Unix socket path to listen on (a stale socket file there is replaced). */
  path: string;
  /** Receives each connection after a good handshake, with bytes past the line unshifted. */
  onConnection: (socket: Socket, port: number) => void;
  log: Logger;
  /** Permission bits of the socket file; default 0600 (whoever connects runs code as root). */
  mode?: number;
  handshakeTimeoutMs?: number;
}

export interface HybridVsockListener {
  readonly path: string;
  close(): Promise<void>;
}

/** The port in a `CONNECT <port>` line (newline stripped), or undefined if malformed. */
export function parseConnectLine(line: string): number | undefined {
  const m = /^CONNECT ([1-9][0-9]{0,4})$/.exec(line);
  if (!m?.[1]) return undefined;
  const port = Number(m[1]);
  return port >= MIN_PORT && port <= MAX_PORT ? port : undefined;
}

/**
 * Cloud Hypervisor's hybrid vsock, guest side, over a Unix socket (jail mode): each connection
 * starts with `CONNECT <port>\n`, answered `OK <port>\n`; then the bytes belong to that port.
 * A malformed, oversized or late line closes the connection without a reply.
 */
export async function listenHybridVsock(opts: HybridVsockOptions): Promise<HybridVsockListener> {
  await removeStaleSocket(opts.path);
  const timeoutMs = opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: false }, (socket) =>
    handshake(socket, timeoutMs, opts),
  );
  server.on("error", (err) =>
    opts.log.error("vsock listener error", { path: opts.path, error: err.message }),
  );
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.path, () => {
      server.off("error", reject);
      resolve();
    });
  });
  await chmod(opts.path, opts.mode ?? 0o600);
  return {
    path: opts.path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
      }),
  };
}

function handshake(socket: Socket, timeoutMs: number, opts: HybridVsockOptions): void {
  let buf: Buffer = Buffer.alloc(0);
  const reject = (why: string): void => {
    cleanup();
    opts.log.debug("vsock handshake refused", { reason: why });
    socket.destroy();
  };
  const timer = setTimeout(() => reject("timeout"), timeoutMs);
  const onError = (err: Error): void => reject(err.message);
  const onEnd = (): void => reject("closed before handshake");
  const cleanup = (): void => {
    clearTimeout(timer);
    socket.off("data", onData);
    socket.off("error", onError);
    socket.off("end", onEnd);
  };
  const onData = (chunk: Buffer): void => {
    buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
    const nl = buf.indexOf(0x0a);
    if (nl < 0) {
      if (buf.length >= HANDSHAKE_MAX_BYTES) reject("handshake line too long");
      return;
    }
    if (nl + 1 > HANDSHAKE_MAX_BYTES) {
      reject("handshake line too long");
      return;
    }
    const port = parseConnectLine(buf.subarray(0, nl).toString("latin1"));
    if (port === undefined) {
      reject("malformed handshake line");
      return;
    }
    cleanup();
    socket.pause();
    const rest = buf.subarray(nl + 1);
    if (rest.length > 0) socket.unshift(rest);
    socket.write(`OK ${port}\n`);
    opts.onConnection(socket, port);
  };
  socket.on("data", onData);
  socket.on("error", onError);
  socket.on("end", onEnd);
}

async function removeStaleSocket(path: string): Promise<void> {
  try {
    const st = await lstat(path);
    if (!st.isSocket()) throw new Error(`${path} exists and is not a socket`);
    await unlink(path);
  } catch (err) {
    if (errnoOf(err) !== "ENOENT") throw err;
  }
}
