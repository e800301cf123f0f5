import { existsSync } from "node:fs";
import { rm } from "node:fs/promises";
import { type Supervised, spawnSupervised, waitForPath } from "./process.js";

/** The virtiofsd binaries we know: Rust (trixie on), then bookworm's C one from qemu. */
const CANDIDATES = [
  { path: "/usr/libexec/virtiofsd", flavour: "rust" },
  { path: "/usr/lib/qemu/virtiofsd", flavour: "c" },
] as const;

export interface VirtiofsdBinary {
  readonly path: string;
  readonly flavour: "rust" | "c";
}

/** The virtiofsd on this host, or undefined. `override` (a config path) wins, as Rust. */
export function findVirtiofsd(override?: string): VirtiofsdBinary | undefined {
  if (override) return { path: override, flavour: override.includes("/qemu/") ? "c" : "rust" };
  return CANDIDATES.find((c) => existsSync(c.path));
}

export interface VirtiofsdOptions {
  readonly binary: VirtiofsdBinary;
  /** Host folder the guest mounts (read-write). */
  readonly sharedDir: string;
  /** vhost-user socket the VMM connects to. */
  readonly socketPath: string;
  readonly logFile: string;
  readonly env: Readonly<Record<string, string>>;
  readonly cgroupProcs?: readonly string[];
  readonly timeoutMs?: number;
}

/**
 * Starts one virtiofsd for one VM's share, with no guest caching (`--cache=never` /
 * `cache=none`: host writes are seen on the guest's next access), sandboxed in its own
 * namespaces, and waits for its socket. One daemon per VM: the C daemon serves one frontend
 * and exits when it leaves.
 */
export async function startVirtiofsd(o: VirtiofsdOptions): Promise<Supervised> {
  await rm(o.socketPath, { force: true });
  const args =
    o.binary.flavour === "rust"
      ? [
          `--socket-path=${o.socketPath}`,
          `--shared-dir=${o.sharedDir}`,
          "--cache=never",
          "--sandbox=namespace",
        ]
      : [
          `--socket-path=${o.socketPath}`,
          "-o",
          `source=${o.sharedDir}`,
          "-o",
          "cache=none",
          "-o",
          "sandbox=namespace",
        ];
  const proc = spawnSupervised({
    name: "virtiofsd",
    command: o.binary.path,
    args,
    logFile: o.logFile,
    env: o.env,
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
