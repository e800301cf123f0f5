import { isAbsolute, join } from "node:path";
import { InvalidArgumentError } from "../../domain/errors.js";
import type { RestoreConfig, VmConfig, VmSnapshotConfig } from "./types.js";
import type { ChFeatures } from "./version.js";

/**
 * Pure builders for the bodies dnah sends Cloud Hypervisor, and the layout of a VM's folder.
 *
 * Every CH process runs in its own mount namespace where the sandbox's folder is bind-mounted
 * at the fixed path `VM_ROOT`, so every path CH records (and writes into a snapshot's
 * `config.json`) is the same for every sandbox: a snapshot restores into any sandbox folder
 * without editing its config (the E2B pattern, spec §3.4 / §8).
 */
export const VM_ROOT = "/run/dnah/vm";

/** The guest CID: CH's vsock is a per-VM userspace device, so every VM can use 3 (spec §2). */
export const GUEST_CID = 3;

/** virtio-fs tag of the host share; the guest init mounts it at /mnt/dnah-share. */
export const SHARE_TAG = "dnah-share";

export interface VmLayout {
  readonly root: string;
  readonly apiSocket: string;
  /** CH's hybrid-vsock socket (the guest's fixed ports only). */
  readonly vsockSocket: string;
  /** The vmm's front for it: any guest port, through the guest's forwarder when needed. */
  readonly vsockFront: string;
  readonly serialLog: string;
  readonly virtiofsSocket: string;
  /** Root disk path without extension; the CoW disk adds `.raw` or `.qcow2`. */
  readonly diskNoExt: string;
}

/** Where a VM's files live under `root` (the host folder, or `VM_ROOT` as CH sees it). */
export function vmLayout(root: string): VmLayout {
  return {
    root,
    apiSocket: join(root, "api.sock"),
    vsockSocket: join(root, "vm.vsock"),
    vsockFront: join(root, "vsock.sock"),
    serialLog: join(root, "serial.log"),
    virtiofsSocket: join(root, "virtiofsd.sock"),
    diskNoExt: join(root, "rootfs"),
  };
}

export interface VmConfigInput {
  readonly cpuCount: number;
  readonly memoryMib: number;
  readonly kernel: string;
  readonly initramfs?: string;
  readonly cmdline: string;
  /** The VM's own copy-on-write root disk. */
  readonly disk: { readonly path: string; readonly format: "raw" | "qcow2" };
  /** A TAP that already exists in the VM's network namespace. */
  readonly net?: { readonly tap: string; readonly mac: string };
  /** A running virtiofsd's vhost-user socket. */
  readonly share?: { readonly socket: string; readonly tag: string };
  readonly vsockSocket: string;
  readonly serialFile: string;
}

const MAX_CPUS = 64;
const MIN_MEMORY_MIB = 64;
const MAX_MEMORY_MIB = 1024 * 1024;
/** CH's vsock CONNECT line and socket paths: `<socket>_<port>` must fit sun_path (108). */
const MAX_SOCKET_PATH = 90;
const IFNAMSIZ_MAX = 15;
const MAC_RE = /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/;

/** The `vm.create` body for one sandbox. Throws InvalidArgumentError naming every problem. */
export function buildVmConfig(i: VmConfigInput): VmConfig {
  const problems: string[] = [];
  if (!Number.isInteger(i.cpuCount) || i.cpuCount < 1 || i.cpuCount > MAX_CPUS)
    problems.push(`cpuCount must be 1-${MAX_CPUS}`);
  if (!Number.isInteger(i.memoryMib) || i.memoryMib < MIN_MEMORY_MIB || i.memoryMib > MAX_MEMORY_MIB)
    problems.push(`memoryMib must be ${MIN_MEMORY_MIB}-${MAX_MEMORY_MIB}`);
  const paths: Array<[string, string | undefined]> = [
    ["kernel", i.kernel],
    ["initramfs", i.initramfs],
    ["disk", i.disk.path],
    ["vsock socket", i.vsockSocket],
    ["serial file", i.serialFile],
    ["share socket", i.share?.socket],
  ];
  for (const [what, p] of paths)
    if (p !== undefined && !isAbsolute(p)) problems.push(`${what} must be absolute`);
  if (i.vsockSocket.length > MAX_SOCKET_PATH)
    problems.push(`vsock socket path longer than ${MAX_SOCKET_PATH}`);
  if (i.net && (i.net.tap.length === 0 || i.net.tap.length > IFNAMSIZ_MAX))
    problems.push(`tap name must be 1-${IFNAMSIZ_MAX} characters`);
  if (i.net && !MAC_RE.test(i.net.mac)) problems.push(`mac must look like 02:00:00:00:00:01`);
  if (i.cmdline.length > 4096) problems.push("cmdline longer than 4096");
  if (problems.length > 0) throw new InvalidArgumentError(`invalid VM config: ${problems.join("; ")}`);

  return {
    payload: {
      kernel: i.kernel,
      cmdline: i.cmdline,
      ...(i.initramfs !== undefined ? { initramfs: i.initramfs } : {}),
    },
    cpus: { boot_vcpus: i.cpuCount, max_vcpus: i.cpuCount },
    // vhost-user devices (virtio-fs) need guest RAM the backend can map: shared memory.
    memory: { size: i.memoryMib * 1024 * 1024, ...(i.share ? { shared: true } : {}) },
    disks: [
      {
        path: i.disk.path,
        id: "rootfs",
        readonly: false,
        // Explicit type: an auto-detected raw image gets sector-0 writes disabled, and a qcow2
        // backing file is only honoured with an explicit Qcow2 type (v51+, spec §1.5).
        image_type: i.disk.format === "qcow2" ? "Qcow2" : "Raw",
        ...(i.disk.format === "qcow2" ? { backing_files: true } : {}),
      },
    ],
    ...(i.net
      ? { net: [{ tap: i.net.tap, mac: i.net.mac, id: "net0", num_queues: 2, queue_size: 256 }] }
      : {}),
    ...(i.share
      ? { fs: [{ tag: i.share.tag, socket: i.share.socket, num_queues: 1, queue_size: 1024, id: "fs0" }] }
      : {}),
    vsock: { cid: GUEST_CID, socket: i.vsockSocket, id: "vsock0" },
    // console defaults to Tty (CH's stdout) even over the API: switch it off, log the serial.
    serial: { mode: "File", file: i.serialFile },
    console: { mode: "Off" },
    rng: { src: "/dev/urandom" },
  };
}

/** `file://` URL of a snapshot folder (CH takes the rest of the URL as the path, verbatim). */
export function snapshotUrl(dir: string): string {
  if (!isAbsolute(dir)) throw new InvalidArgumentError(`snapshot folder must be absolute: ${dir}`);
  if (!/^[A-Za-z0-9._/-]+$/.test(dir))
    throw new InvalidArgumentError(`snapshot folder may use letters, digits and . _ / - only: ${dir}`);
  return `file://${dir}`;
}

export function buildSnapshotConfig(dir: string): VmSnapshotConfig {
  return { destination_url: snapshotUrl(dir) };
}

/**
 * The `vm.restore` body. `resume` exists only from v52; older releases leave the VM paused
 * and the caller resumes it with `vm.resume` (see `restoreLeavesPaused`).
 */
export function buildRestoreConfig(dir: string, resume: boolean, features: ChFeatures): RestoreConfig {
  const source_url = snapshotUrl(dir);
  if (!features.restoreResume) return { source_url };
  // Copy, not OnDemand: v53's OnDemand prefaults every page in the background and refuses
  // snapshots meanwhile (spec §3.3); Copy is the predictable choice until that settles.
  return { source_url, memory_restore_mode: "Copy", ...(resume ? { resume: true } : {}) };
}

/** True when a restore with `resume` asked still needs an explicit `vm.resume` (≤ v51). */
export function restoreLeavesPaused(resume: boolean, features: ChFeatures): boolean {
  return resume && !features.restoreResume;
}

/** Budget for a call that moves guest RAM (snapshot, restore): 30 s plus 30 s per GiB. */
export function memoryCallTimeoutMs(memoryMib: number): number {
  return 30_000 + Math.ceil((memoryMib / 1024) * 30_000);
}
