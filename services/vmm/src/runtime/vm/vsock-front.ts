import { randomBytes } from "node:crypto";
import { rm } from "node:fs/promises";
import { connect, createServer, type Server, type Socket } from "node:net";
import type { Logger } from "@dnah/platform";

/**
 * The guest's fixed AF_VSOCK ports (the guest init binds them; `guest/src/ports.ts` and
 * `guest/image/init.c` carry the same numbers). Any other guest port is reached through the
 * forwarder: `CONNECT 49982\n` → `OK …\n`, then `CONNECT <port>\n` → `OK <port>\n` to the
 * agent, which connects to `127.0.0.1:<port>` inside the guest.
 */
export const GUEST_AGENT_PORT = 49983;
export const GUEST_CODE_INTERPRETER_PORT = 49999;
export const GUEST_FORWARDER_PORT = 49982;
/** The guest init's control port: `seed=<hex> clock=<unix s>\n` → `OK\n` (see `reseedGuest`). */
export const GUEST_CONTROL_PORT = 49981;
/**
 * What the guest init prints on the serial console once its AF_VSOCK sockets exist. Do not
 * dial the backend before: vhost-device-vsock 0.3.0 wedges for good on a connection that
 * arrives before the guest driver set up its rings, or while QEMU's queues are stopped.
 */
export const VSOCK_READY_MARKER = "dnah-init: vsock ready";
const DIRECT_PORTS = new Set([
  GUEST_AGENT_PORT,
  GUEST_CODE_INTERPRETER_PORT,
  GUEST_FORWARDER_PORT,
  GUEST_CONTROL_PORT,
]);

const LINE_MAX = 32;
const HANDSHAKE_TIMEOUT_MS = 5_000;

/**
 * Reads one handshake line from `sock` (bytes past it are pushed back); rejects on EOF, a
 * line longer than 32 bytes, or the timeout.
 */
function readLine(sock: Socket, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const done = (err: Error | undefined, line?: string) => {
      clearTimeout(timer);
      sock.off("data", onData);
      sock.off("end", onEnd);
      sock.off("error", onErr);
      sock.pause();
      if (err) reject(err);
      else resolve(line ?? "");
    };
    const onData = (c: Buffer) => {
      buf = Buffer.concat([buf, c]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length > LINE_MAX) done(new Error("handshake line too long"));
        return;
      }
      const rest = buf.subarray(nl + 1);
      if (rest.length > 0) sock.unshift(rest);
      done(undefined, buf.subarray(0, nl).toString("latin1"));
    };
    const onEnd = () => done(new Error("closed during the handshake (nothing listens on that guest port)"));
    const onErr = (e: Error) => done(e);
    const timer = setTimeout(() => done(new Error(`handshake timed out after ${timeoutMs} ms`)), timeoutMs);
    sock.on("data", onData);
    sock.on("end", onEnd);
    sock.on("error", onErr);
    sock.resume();
  });
}

/** `CONNECT <port>\n` on a connected stream; resolves once an `OK ` line came back. */
async function connectPort(sock: Socket, port: number, timeoutMs: number): Promise<void> {
  sock.write(`CONNECT ${port}\n`);
  const line = await readLine(sock, timeoutMs);
  if (!line.startsWith("OK ")) throw new Error(`CONNECT ${port} refused: ${JSON.stringify(line)}`);
}

/**
 * Dials guest `port` on a VM's hybrid-vsock backend socket: directly for the guest's fixed
 * ports, through the guest's forwarder for any other. Resolves with a paused raw stream.
 */
export function dialGuestPort(
  backendPath: string,
  port: number,
  timeoutMs = HANDSHAKE_TIMEOUT_MS,
): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const sock = connect(backendPath);
    sock.once("error", reject);
    sock.once("connect", () => {
      sock.off("error", reject);
      const steps = async () => {
        if (DIRECT_PORTS.has(port)) await connectPort(sock, port, timeoutMs);
        else {
          await connectPort(sock, GUEST_FORWARDER_PORT, timeoutMs);
          await connectPort(sock, port, timeoutMs);
        }
      };
      steps().then(
        () => resolve(sock),
        (err: Error) => {
          sock.destroy();
          reject(err);
        },
      );
    });
  });
}

/**
 * Tells a guest that time passed and that its RNG state may be shared (after a resume, a
 * snapshot restore or a fork): the init mixes 32 fresh random bytes into the kernel's pool
 * and sets the clock to the host's. Resolves once the guest answered `OK`.
 */
export async function reseedGuest(backendPath: string, timeoutMs = 5_000): Promise<void> {
  const sock = await dialGuestPort(backendPath, GUEST_CONTROL_PORT, timeoutMs);
  try {
    sock.write(`seed=${randomBytes(32).toString("hex")} clock=${(Date.now() / 1000).toFixed(3)}\n`);
    const line = await readLine(sock, timeoutMs);
    if (line !== "OK") throw new Error(`guest refused the reseed: ${JSON.stringify(line)}`);
  } finally {
    sock.destroy();
  }
}

export interface VsockFront {
  readonly path: string;
  /**
   * Closes every open connection to the guest and waits until the backend has had time to
   * pass the closes on. Call before stopping the VM's queues: vhost-device-vsock wedges for
   * good when a connection is closed while QEMU is stopped (a kept-alive tunnel cut by pause).
   */
  drain(): Promise<void>;
  close(): Promise<void>;
}

/** How long a closed host connection is given to reach the guest through the backend. */
const DRAIN_GRACE_MS = 150;

/**
 * The host-side socket the rest of the vmm dials for a VM (`RunningVm.vsockPath`): it speaks
 * the same `CONNECT <port>\n` → `OK <port>\n` handshake for every guest port and relays to the
 * VM's backend with `dialGuestPort`, so callers never learn that ports other than the
 * guest's fixed three go through its forwarder.
 */
export async function serveVsockFront(
  frontPath: string,
  backendPath: string,
  logger: Logger,
  sandboxId: string,
  /**
   * Whether the backend may be dialled now; when not, connections are closed without a reply
   * (what a guest that does not listen yet looks like). vhost-device-vsock must not be touched
   * before the guest's driver is up, nor while the VM's queues are stopped.
   */
  isOpen: () => boolean | Promise<boolean> = () => true,
): Promise<VsockFront> {
  await rm(frontPath, { force: true });
  const open = new Set<Socket>();
  const guests = new Set<Socket>();
  const server: Server = createServer({ allowHalfOpen: true, pauseOnConnect: true }, (client) => {
    open.add(client);
    client.once("close", () => open.delete(client));
    client.on("error", () => {});
    relay(client).catch((err: Error) => {
      logger.debug({ "sandbox.id": sandboxId, err: err.message }, "vsock front: connection refused");
      client.destroy();
    });
  });
  const relay = async (client: Socket) => {
    const line = await readLine(client, HANDSHAKE_TIMEOUT_MS);
    const m = /^CONNECT ([1-9][0-9]{0,4})$/.exec(line);
    const port = Number(m?.[1]);
    if (!m || port > 65535) throw new Error(`malformed handshake ${JSON.stringify(line)}`);
    if (!(await isOpen())) throw new Error("the guest's vsock is not ready (booting or paused)");
    if (client.destroyed) return;
    const guest = await dialGuestPort(backendPath, port);
    if (client.destroyed) {
      // The caller gave up while we dialled: do not leave a connection open in the backend.
      guest.destroy();
      return;
    }
    open.add(guest);
    guests.add(guest);
    guest.once("close", () => {
      open.delete(guest);
      guests.delete(guest);
    });
    guest.on("error", () => client.destroy());
    client.on("error", () => guest.destroy());
    client.write(`OK ${port}\n`);
    client.pipe(guest);
    guest.pipe(client);
    client.resume();
    guest.resume();
  };
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(frontPath, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    path: frontPath,
    drain: async () => {
      if (guests.size === 0) return;
      const closed = [...guests].map(
        (g) =>
          new Promise<void>((resolve) =>
            g.destroyed && g.closed ? resolve() : g.once("close", () => resolve()),
          ),
      );
      for (const g of guests) g.destroy();
      await Promise.all(closed);
      await new Promise((r) => setTimeout(r, DRAIN_GRACE_MS));
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of open) s.destroy();
        server.close(() => resolve());
      }),
  };
}
