import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { type Supervised, spawnSupervised, waitForPath } from "./process.js";

/**
 * vhost-device-vsock: the qemu runtime's hybrid-vsock backend. The host dials `udsPath` with
 * `CONNECT <port>\n` and reads `OK <n>\n` (the number is the guest port here, a counter under
 * Cloud Hypervisor: callers check only the `OK ` prefix).
 */
export function findVsockBackend(cacheDir: string, override?: string): string | undefined {
  if (override) return override;
  // apt installs it in /usr/bin; setup-host.sh extracts it into the cache when apt can't.
  return ["/usr/bin/vhost-device-vsock", join(cacheDir, "bin", "vhost-device-vsock")].find((p) =>
    existsSync(p),
  );
}

export interface VsockBackendOptions {
  readonly binary: string;
  /** vhost-user socket QEMU connects to. */
  readonly socketPath: string;
  /** The host-side hybrid-vsock socket. */
  readonly udsPath: string;
  /** Guest CID; private to this backend process, so every VM can use 3. */
  readonly guestCid?: number;
  readonly logFile: string;
  readonly env: Readonly<Record<string, string>>;
  readonly cgroupProcs?: readonly string[];
  readonly timeoutMs?: number;
}

/** One backend process per VM; stale sockets are removed first. Resolves once it listens. */
export async function startVsockBackend(o: VsockBackendOptions): Promise<Supervised> {
  await Promise.all([rm(o.socketPath, { force: true }), rm(o.udsPath, { force: true })]);
  const proc = spawnSupervised({
    name: "vsock",
    command: o.binary,
    args: ["--vm", `guest-cid=${o.guestCid ?? 3},socket=${o.socketPath},uds-path=${o.udsPath}`],
    logFile: o.logFile,
    env: { RUST_LOG: "warn", ...o.env },
    ...(o.cgroupProcs && { cgroupProcs: o.cgroupProcs }),
  });
  try {
    await waitForPath(o.socketPath, proc, o.logFile, o.timeoutMs ?? 10_000);
  } catch (err) {
    await proc.kill();
    throw err;
  }
  return proc;
}
