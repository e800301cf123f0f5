import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { InvalidArgumentError } from "../../domain/errors.js";
import { VHOST_USER_Q35 } from "./args.js";
import type { Qmp } from "./qmp.js";

/**
 * Memory snapshot and restore of a qemu VM through migration to a file (`qemu-microvm.md` §8).
 * Stock QEMU refuses to migrate with a vhost-user device attached (§8.2), so on q35 the vsock
 * and virtio-fs devices are hot-unplugged first and plugged back after (§8.4); the guest's
 * AF_VSOCK listeners survive that (they are bound to no device) and its init mounts the share
 * again when the host asks (`share=<tag>` on the control port). Verified in
 * `test/qemu-snapshot.test.ts`: the agent's listeners answer after the replug, in the source
 * and in a restored clone, with no re-listen. microvm has no hotplug and cannot be
 * snapshotted. Timings: `QemuRuntime.snapshot`.
 *
 * A snapshot folder (flat, plain files; the snapshot layer adds `share.tar` and `MANIFEST`)
 * holds:
 *   dnah-qemu-snapshot.json   the manifest below (what `restore` needs besides the folder)
 *   memory.bin                QEMU's migration stream: guest RAM and device state
 *   root.raw | root.qcow2     the disk as it was at the snapshot (reflink, or the qcow2 overlay
 *                             over the image's read-only base)
 *
 * A stop-snapped (paused) VM keeps the same stream in `<vm dir>/paused/memory.bin`, its disk
 * in place (`QemuRuntime.pause`).
 */
export const SNAPSHOT_MANIFEST = "dnah-qemu-snapshot.json";
export const MEMORY_FILE = "memory.bin";

export interface QemuSnapshotMeta {
  readonly runtime: "qemu";
  readonly templateId: string;
  /** The image the VM booted (its disk's base); restore uses the template's current kernel. */
  readonly imageKey: string;
  readonly machine: "q35";
  readonly cpuCount: number;
  readonly memoryMib: number;
  /** `query-version` of the QEMU that wrote the stream; restore needs the same. */
  readonly qemuVersion: string;
  readonly memory: string;
  readonly memoryBytes: number;
  readonly disk: string;
  readonly createdAt: string;
}

/** Validates a manifest's text (no I/O): a malformed folder is the caller's error. */
export function parseSnapshotMeta(text: string, where: string): QemuSnapshotMeta {
  let m: Partial<Record<keyof QemuSnapshotMeta, unknown>>;
  try {
    m = JSON.parse(text) as typeof m;
  } catch (err) {
    throw new InvalidArgumentError(`${where} is not a dnah qemu snapshot: ${(err as Error).message}`);
  }
  const posInt = (v: unknown) => Number.isInteger(v) && (v as number) > 0;
  const str = (v: unknown) => typeof v === "string" && v !== "";
  const checks: Record<keyof QemuSnapshotMeta, boolean> = {
    runtime: m.runtime === "qemu",
    machine: m.machine === "q35",
    templateId: str(m.templateId),
    imageKey: str(m.imageKey),
    qemuVersion: str(m.qemuVersion),
    memory: m.memory === MEMORY_FILE,
    memoryBytes: posInt(m.memoryBytes),
    // The VM's own disk file name, never a path.
    disk: typeof m.disk === "string" && /^root\.(raw|qcow2)$/.test(m.disk),
    cpuCount: posInt(m.cpuCount),
    memoryMib: posInt(m.memoryMib),
    createdAt: str(m.createdAt),
  };
  const bad = Object.entries(checks)
    .filter(([, ok]) => !ok)
    .map(([k]) => k);
  if (bad.length > 0) throw new InvalidArgumentError(`${where} is malformed (${bad.join(", ")})`);
  return m as QemuSnapshotMeta;
}

export async function readSnapshotMeta(dir: string): Promise<QemuSnapshotMeta> {
  const path = join(dir, SNAPSHOT_MANIFEST);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw new InvalidArgumentError(
      `${dir} is not a dnah qemu snapshot: ${(err as NodeJS.ErrnoException).code}`,
    );
  }
  return parseSnapshotMeta(text, path);
}

/**
 * QEMU 7.2 has no `file:` migration URI (8.2 has): `exec:` runs the command through
 * `/bin/sh -c`, so the path is single-quoted; snapshot paths are ours, but never trusted.
 */
export function execUri(verb: "save" | "load", file: string): string {
  if (!file.startsWith("/") || file.includes("'") || /[\0\n]/.test(file))
    throw new InvalidArgumentError(`snapshot path must be absolute, without quotes: ${file}`);
  return verb === "save" ? `exec:cat > '${file}'` : `exec:cat '${file}'`;
}

export async function qemuVersion(qmp: Qmp): Promise<string> {
  const v = (await qmp.execute("query-version")) as {
    qemu?: { major?: number; minor?: number; micro?: number };
    package?: string;
  };
  return `${v.qemu?.major}.${v.qemu?.minor}.${v.qemu?.micro}${v.package ? ` ${v.package.trim()}` : ""}`;
}

/**
 * Hot-unplugs the vsock and virtio-fs devices (ACPI hotplug: the guest must be running to
 * eject them; 60–110 ms on TCG), each followed by its chardev. Host connections still open on
 * the vsock get ECONNRESET; the guest's share mount answers ENOTCONN until it is remounted.
 */
export async function unplugVhostUser(qmp: Qmp, timeoutMs: number): Promise<void> {
  for (const d of [VHOST_USER_Q35.vsock, VHOST_USER_Q35.fs]) {
    const deleted = qmp.waitForEvent("DEVICE_DELETED", (e) => e.device === d.id, timeoutMs);
    try {
      await qmp.execute("device_del", { id: d.id });
    } catch (err) {
      deleted.catch(() => {});
      throw err;
    }
    await deleted;
    await qmp.execute("chardev-remove", { id: d.chardev });
  }
}

/** Which of the vhost-user devices are attached now (a failed unplug may leave one). */
export async function attachedVhostUser(qmp: Qmp): Promise<{ vsock: boolean; fs: boolean }> {
  const list = (await qmp.execute("qom-list", { path: "/machine/peripheral" })) as { name?: string }[];
  const names = new Set(list.map((p) => p.name));
  return { vsock: names.has(VHOST_USER_Q35.vsock.id), fs: names.has(VHOST_USER_Q35.fs.id) };
}

/**
 * Plugs the vhost-user devices that are not attached back, on their root ports, connected to
 * `vsockSocket` (the vsock backend; the same process accepts a new frontend) and `fsSocket`
 * (a new virtiofsd: it exits when its frontend leaves). A leftover chardev of a device that
 * is gone is removed first.
 */
export async function plugVhostUser(
  qmp: Qmp,
  o: { vsockSocket: string; fsSocket: string; tag: string },
): Promise<void> {
  const socket = (path: string) => ({
    type: "socket",
    data: { addr: { type: "unix", data: { path } }, server: false },
  });
  const attached = await attachedVhostUser(qmp);
  const chardevs = new Set(
    ((await qmp.execute("query-chardev")) as { label?: string }[]).map((c) => c.label),
  );
  const { vsock, fs } = VHOST_USER_Q35;
  const plug = async (d: typeof vsock | typeof fs, path: string, extra: Record<string, unknown>) => {
    if (chardevs.has(d.chardev)) await qmp.execute("chardev-remove", { id: d.chardev });
    await qmp.execute("chardev-add", { id: d.chardev, backend: socket(path) });
    await qmp.execute("device_add", { driver: d.driver, id: d.id, chardev: d.chardev, bus: d.bus, ...extra });
  };
  if (!attached.vsock) await plug(vsock, o.vsockSocket, {});
  if (!attached.fs) await plug(fs, o.fsSocket, { tag: o.tag });
}

/**
 * Waits until the guest's driver has set the plugged devices up (`DRIVER_OK`, vhost started).
 * vhost-device-vsock 0.3.0 wedges for good on a host connection that arrives before the
 * guest's rings exist, so nothing dials the backend before this.
 */
export async function waitDevicesReady(qmp: Qmp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (const d of [VHOST_USER_Q35.vsock, VHOST_USER_Q35.fs]) {
    for (let wait = 10; ; wait = Math.min(wait * 2, 100)) {
      const st = (await qmp.execute("x-query-virtio-status", {
        path: `/machine/peripheral/${d.id}/virtio-backend`,
      })) as { status?: { statuses?: string[] }; "vhost-started"?: boolean; started?: boolean };
      const driverOk = st.status?.statuses?.some((s) => s.includes("DRIVER_OK")) === true;
      if (driverOk && st.started !== false && st["vhost-started"] !== false) break;
      if (Date.now() > deadline)
        throw new Error(`the guest did not set up ${d.id} within ${timeoutMs} ms: ${JSON.stringify(st)}`);
      await sleep(wait);
    }
  }
}

/**
 * Saves the (stopped) VM's RAM and device state into `file`. The default 128 MiB/s cap is
 * lifted (it made most of a snapshot's time, §8.1); polls until the migration completes.
 */
export async function migrateToFile(qmp: Qmp, file: string, timeoutMs: number): Promise<void> {
  await qmp.execute("migrate-set-parameters", { "max-bandwidth": 20 * 1024 ** 3 });
  await qmp.execute("migrate", { uri: execUri("save", file) });
  await waitMigration(qmp, timeoutMs, "snapshot");
}

/** Loads a state file into a QEMU started with `-incoming defer`; it arrives paused. */
export async function migrateFromFile(qmp: Qmp, file: string, timeoutMs: number): Promise<void> {
  await qmp.execute("migrate-incoming", { uri: execUri("load", file) });
  await waitMigration(qmp, timeoutMs, "restore");
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const st = (await qmp.execute("query-status")) as { status?: string };
    if (st.status === "paused" || st.status === "postmigrate") return;
    if (st.status !== "inmigrate" || Date.now() > deadline)
      throw new Error(`restore: qemu reports '${st.status}' after loading the state`);
    await sleep(20);
  }
}

async function waitMigration(qmp: Qmp, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (let wait = 10; ; wait = Math.min(wait * 2, 100)) {
    const m = (await qmp.execute("query-migrate")) as { status?: string; "error-desc"?: string };
    if (m.status === "completed") return;
    if (m.status === "failed" || m.status === "cancelled")
      throw new Error(`${what}: migration ${m.status}: ${m["error-desc"] ?? "no detail"}`);
    if (Date.now() > deadline) {
      await qmp.execute("migrate_cancel").catch(() => {});
      throw new Error(`${what}: migration not done within ${timeoutMs} ms (status ${m.status})`);
    }
    await sleep(wait);
  }
}
