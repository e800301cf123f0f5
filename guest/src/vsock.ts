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

/**
 * Inside a microVM, the guest port forwarder's vsock port: each connection names the guest
 * port to reach with the hybrid-vsock handshake (`CONNECT <port>\n`). The agent (49983) and
 * the code interpreter (49999) have vsock ports of their own.
 */
export const FORWARDER_PORT = 49982;

export interface VsockFdOptions {
  /** A listening (or bound) AF_VSOCK socket the guest init created and passed down. */
  fd: number;
  /** The guest vsock port it is bound to. */
  port: number;
  /**
   * false: every connection belongs to `port`. true (the port forwarder): each connection
   * starts with the hybrid-vsock handshake naming the guest port to reach.
   */
  handshake: boolean;
  onConnection: (socket: Socket, port: number) => void;
  log: Logger;
  handshakeTimeoutMs?: number;
}

/** Parses `--listen-vsock-fd <fd>:<port>`; undefined when malformed. */
export function parseVsockFdSpec(spec: string): { fd: number; port: number } | undefined {
  const m = /^([0-9]{1,4}):([1-9][0-9]{0,9})$/.exec(spec);
  const fd = Number(m?.[1]);
  const port = Number(m?.[2]);
  return m && fd >= 3 && port <= 0xffffffff ? { fd, port } : undefined;
}

/**
 * Serves connections on an inherited AF_VSOCK listening socket (inside a microVM). Node's
 * `net` cannot adopt an AF_VSOCK fd by itself (it guesses the fd's type and refuses), but its
 * TCP handle can open any stream socket fd: libuv then listens and accepts with `accept4`,
 * which AF_VSOCK supports. `process.binding` is deprecated (DEP0111) yet present in Node 20,
 * the version the guest image carries; the qemu runtime's tests boot a VM to prove this path.
 */
export async function listenVsockFd(opts: VsockFdOptions): Promise<HybridVsockListener> {
  const { TCP, constants } = (
    process as unknown as {
      binding(name: "tcp_wrap"): {
        TCP: new (type: number) => { open(fd: number): number };
        constants: { SERVER: number };
      };
    }
  ).binding("tcp_wrap");
  const handle = new TCP(constants.SERVER);
  const rc = handle.open(opts.fd);
  if (rc !== 0) throw new Error(`cannot open vsock fd ${opts.fd} (port ${opts.port}): uv error ${rc}`);
  const timeoutMs = opts.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
  const server: Server = createServer({ allowHalfOpen: true }, (socket) => {
    if (opts.handshake) handshake(socket, timeoutMs, { ...opts, path: `vsock:${opts.port}` });
    else opts.onConnection(socket, opts.port);
  });
  server.on("error", (err) =>
    opts.log.error("vsock listener error", { port: opts.port, error: err.message }),
  );
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    // `listen` accepts a TCP handle; Node's typings only know the public overloads.
    (server.listen as (h: unknown, cb: () => void) => void)(handle, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    path: `vsock:${opts.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
      }),
  };
}
