import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { constants, existsSync } from "node:fs";
import { copyFile, mkdir, readdir, readFile, rm, rmdir, stat, writeFile } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { promisify } from "node:util";
import type { Logger } from "@dnah/platform";
import type { VmmConfig } from "../../config.js";
import { InvalidArgumentError, VmExistsError, VmNotFoundError, VmStateError } from "../../domain/errors.js";
import {
  type Cgroup,
  cpuUsedPct,
  createCgroup,
  listCgroups,
  openCgroup,
  removeCgroupParent,
} from "../jail/cgroup.js";
import { mountsUnder, unmount } from "../jail/mounts.js";
import { KeyedSerial } from "../keyed-serial.js";
import type {
  RestoreHooks,
  RunningVm,
  Runtime,
  RuntimeSnapshot,
  SnapshotHooks,
  TemplateImage,
  VmMetricsSample,
  VmSpec,
} from "../runtime.js";
import { createShareDir, shareFolder, shareFsMib } from "../share.js";
import { type CowDisk, createCowDisk, diskAllocatedBytes, diskVirtualBytes } from "../vm/disk.js";
import { VmImages } from "../vm/flatten.js";
import { guestHostname, tellGuest } from "../vm/guest-control.js";
import {
  createVmNetwork,
  guestNetCmdline,
  listVmNetworks,
  netnsName,
  removeVmNetwork,
  type VmNetwork,
} from "../vm/network.js";
import { fileContains, type Supervised, spawnSupervised, tailFile, waitForPath } from "../vm/process.js";
import { findVirtiofsd, startVirtiofsd, type VirtiofsdBinary } from "../vm/virtiofsd.js";
import { findVsockBackend, startVsockBackend } from "../vm/vsock-backend.js";
import { reseedGuest, serveVsockFront, VSOCK_READY_MARKER, type VsockFront } from "../vm/vsock-front.js";
import { guestCmdline, type QemuMachine, type QemuVmLayout, qemuArgs } from "./args.js";
import { Qmp } from "./qmp.js";
import {
  attachedVhostUser,
  MEMORY_FILE,
  migrateFromFile,
  migrateToFile,
  plugVhostUser,
  type QemuSnapshotMeta,
  qemuVersion,
  readSnapshotMeta,
  SNAPSHOT_MANIFEST,
  unplugVhostUser,
  waitDevicesReady,
} from "./snapshot.js";

const run = promisify(execFile);

export interface QemuOptions {
  /** Per-VM folders live in `<stateDir>/sandboxes/<id>`. */
  readonly stateDir: string;
  /** Images are read from `<cacheDir>/images/<template>/current`. */
  readonly cacheDir: string;
  /** cgroup parent of the VMs' process groups; also scopes their network namespaces. */
  readonly cgroupParent: string;
  readonly pidsMax: number;
  readonly hostPath: string;
  readonly logger: Logger;
  readonly machine?: QemuMachine;
  /** NAT egress from the guest (default on). Off: the guest's NIC reaches nothing. */
  readonly egress?: boolean;
  readonly qemuBinary?: string;
  readonly vsockBackend?: string;
  readonly virtiofsd?: string;
  /** How long QEMU and its daemons may take to create their sockets (default 20 s). */
  readonly startTimeoutMs?: number;
  /**
   * What `pause` does (default "stop-snap" on q35): "stop-snap" writes the VM's memory to its
   * folder and ends QEMU, so a paused sandbox holds no RAM; "freeze" is QMP `stop` / `cont`
   * (QEMU keeps the RAM). microvm can only freeze (no hotplug, so no memory snapshot).
   */
  readonly pauseMode?: "stop-snap" | "freeze";
  /** See `VmmConfig.qemuAccel` (default "auto"). */
  readonly accel?: "auto" | "kvm" | "tcg";
  /**
   * The share's size: a filesystem of its own (`createShareDir`), so the guest cannot write
   * more than this to the host's disk through it. Unset: a plain folder (unit tests).
   */
  readonly shareMib?: number;
}

/** What QEMU, virtiofsd and the vsock backend use beyond the guest's RAM (TCG cache included). */
const OVERHEAD_MIB = 320;
const TCG_CACHE_MIB = 64;
const SHARE_TAG = "dnah-share";
/** How long the vsock stays closed after QMP `cont` (see `resume`). */
const RESUME_SETTLE_MS = 1_000;
/** A stop-snapped VM's memory: `<vm dir>/paused/memory.bin` (see `pause`). */
const PAUSED_DIR = "paused";
/** How long QEMU gets to exit on `quit` after its state was saved. */
const QUIT_GRACE_MS = 5_000;

interface QemuVm {
  readonly vm: RunningVm;
  readonly dir: string;
  readonly cgroup: Cgroup;
  readonly disk: CowDisk;
  readonly net: VmNetwork;
  /** The current QEMU process and its QMP (a stop-snap resume replaces both). */
  qemu: Supervised;
  qmp: Qmp;
  readonly helpers: Supervised[];
  readonly front: VsockFront;
  readonly cpuCount: number;
  readonly memoryMib: number;
  readonly machine: QemuMachine;
  readonly imageKey: string;
  readonly fsBin: VirtiofsdBinary;
  readonly vsockBin: string;
  /** The VM's QEMU command line without `incoming`: a stop-snap resume starts it again. */
  readonly layout: QemuVmLayout;
  /** See `guestHostname`. */
  readonly hostname: string;
  /** Processes that were meant to exit (a virtiofsd whose device was unplugged, a parked QEMU). */
  readonly retired: Set<Supervised>;
  stopping: boolean;
  paused: boolean;
  /** Set while stop-snapped: QEMU is gone, its state is in `memoryFile`. */
  parked: { readonly memoryFile: string; readonly qemuVersion: string } | undefined;
  lastCpu: { cpuUsec: number; atMs: number };
}

/** Per-MiB-of-guest-RAM allowance for saving or loading memory (TCG, loaded host), plus 30 s. */
const migrateTimeoutMs = (memoryMib: number) => 30_000 + memoryMib * 100;
/** Unplug, replug and the guest's driver set-up, each. */
const HOTPLUG_TIMEOUT_MS = 20_000;

/**
 * The qemu runtime: one real microVM per sandbox under QEMU (KVM where it starts, TCG
 * otherwise), booting the template's image (`dnah image build`): copy-on-write root disk, its
 * own network namespace and TAP, hybrid vsock through vhost-device-vsock, the share through
 * virtiofsd. The agent listens on AF_VSOCK only. Pause is a stop-snap on q35 (memory to the
 * VM's folder, QEMU ends) and QMP `stop` on microvm; snapshot / restore migrate to a file.
 */
export class QemuRuntime implements Runtime {
  readonly name = "qemu" as const;
  readonly isolation =
    "qemu microVM per sandbox (own kernel, KVM or TCG), own network namespace and TAP, agent reachable only over vsock";
  readonly pauseReleasesMemory: boolean;
  private readonly vms = new Map<string, QemuVm>();
  private readonly exitListeners: Array<(id: string, reason: string) => void> = [];
  private readonly ops = new KeyedSerial();
  private readonly env: Record<string, string>;
  /** Template images, flattened here for templates built from steps. */
  private readonly images: VmImages;

  constructor(private readonly opts: QemuOptions) {
    this.env = { PATH: opts.hostPath };
    this.pauseReleasesMemory = (opts.machine ?? "q35") === "q35" && opts.pauseMode !== "freeze";
    this.images = new VmImages({ cacheDir: opts.cacheDir, hostPath: opts.hostPath, logger: opts.logger });
  }

  private dirOf(id: string): string {
    return join(this.opts.stateDir, "sandboxes", id);
  }

  /** The share folder of a VM folder (in the share's own filesystem when it has a size). */
  private shareOf(dir: string): string {
    return shareFolder(dir, (this.opts.shareMib ?? 0) > 0);
  }

  /** Missing host pieces, in words (empty when the runtime can start VMs). */
  static missing(
    opts: Pick<QemuOptions, "cacheDir" | "qemuBinary" | "vsockBackend" | "virtiofsd">,
  ): string[] {
    const out: string[] = [];
    const qemu = opts.qemuBinary ?? "/usr/bin/qemu-system-x86_64";
    if (!existsSync(qemu)) out.push(`${qemu} (apt-get install qemu-system-x86)`);
    if (!findVsockBackend(opts.cacheDir, opts.vsockBackend))
      out.push("vhost-device-vsock (scripts/setup-host.sh)");
    if (!findVirtiofsd(opts.virtiofsd)) out.push("virtiofsd");
    return out;
  }

  async prepareTemplate(template: TemplateImage, log: (line: string) => void): Promise<void> {
    if (template.built) await this.images.find(template, log);
  }

  start(spec: VmSpec): Promise<RunningVm> {
    return this.launch(spec, undefined);
  }

  /** Boots a VM, or (with `snap`) restores one from a snapshot folder. */
  private async launch(
    spec: VmSpec,
    snap: { dir: string; meta: QemuSnapshotMeta; hooks: RestoreHooks } | undefined,
  ): Promise<RunningVm> {
    const { sandboxId: id } = spec;
    if (this.vms.has(id)) throw new VmExistsError(id);
    const dir = this.dirOf(id);
    if (existsSync(dir)) throw new VmExistsError(id);
    // A template built from steps with no (or a stale) disk image gets it made here first.
    const image = await this.images.find(spec.template);
    const vsockBin = findVsockBackend(this.opts.cacheDir, this.opts.vsockBackend);
    const fsBin = findVirtiofsd(this.opts.virtiofsd);
    if (!vsockBin || !fsBin)
      throw new Error(`qemu runtime: missing ${QemuRuntime.missing(this.opts).join(", ")}`);
    await mkdir(dir, { recursive: true });
    const machine = snap ? snap.meta.machine : (this.opts.machine ?? "q35");
    const hostname = guestHostname(id);
    let cgroup: Cgroup | undefined;
    let net: VmNetwork | undefined;
    const procs: Supervised[] = [];
    let front: VsockFront | undefined;
    let qmp: Qmp | undefined;
    try {
      await createShareDir(
        this.shareOf(dir),
        this.opts.shareMib ? { sizeMib: this.opts.shareMib, hostPath: this.opts.hostPath } : undefined,
      );
      // The share is filled (a snapshot's share.tar) before anything can see it.
      if (snap) await snap.hooks.beforeStart(this.shareOf(dir));
      cgroup = await createCgroup(this.opts.cgroupParent, id, {
        memoryMib: spec.memoryMib + OVERHEAD_MIB,
        cpuCount: spec.cpuCount,
        pidsMax: this.opts.pidsMax,
        cpuWeight: spec.background ? "low" : "normal",
      });
      const [disk, network] = await Promise.all([
        snap
          ? copySnapshotDisk(snap.dir, snap.meta.disk, dir)
          : createCowDisk(image.rootfs, join(dir, "root"), this.env),
        createVmNetwork(this.opts.cgroupParent, id, this.opts.egress ?? true, this.env),
      ]);
      net = network;
      const cgroupProcs = cgroup.procsFiles;
      const [vsock, fs] = await Promise.all([
        this.startVsock(dir, cgroupProcs, vsockBin),
        this.startFs(dir, fsBin, cgroupProcs),
      ]);
      procs.push(vsock, fs);
      const layout: QemuVmLayout = {
        machine,
        accelerators: this.accelerators(),
        cpuCount: spec.cpuCount,
        memoryMib: spec.memoryMib,
        kernel: image.kernel,
        initramfs: image.initramfs,
        cmdline: guestCmdline({
          machine,
          sandboxId: id,
          hostname,
          shareTag: SHARE_TAG,
          seedHex: randomBytes(32).toString("hex"),
          clockSec: Date.now() / 1000,
          net: guestNetCmdline(network),
          tscKhz: await hostTscKhz(),
        }),
        disk,
        tap: { name: network.tap, mac: network.guestMac },
        vsockSocket: join(dir, "vhu.sock"),
        fs: { socket: join(dir, "vfs.sock"), tag: SHARE_TAG },
        serialLog: join(dir, "serial.log"),
        qmpSocket: join(dir, "qmp.sock"),
        tcgCacheMib: TCG_CACHE_MIB,
      };
      const started = await this.spawnQemu(dir, layout, network, cgroupProcs, snap !== undefined);
      procs.push(started.qemu);
      qmp = started.qmp;
      const kvm = (await qmp.execute("query-kvm")) as { enabled?: boolean };
      if (snap) await this.loadSnapshot(qmp, snap, dir, id, hostname);
      // Gate the backend: not before the init says its vsock is up, never while stopped.
      // A restored guest is past its boot: loadSnapshot saw its vsock answer.
      let guestReady = snap !== undefined;
      let gate: QemuVm | undefined;
      front = await serveVsockFront(
        join(dir, "vsock.sock"),
        join(dir, "vm.vsock"),
        this.opts.logger,
        id,
        async () => {
          if (gate?.paused || gate?.stopping) return false;
          guestReady ||= await fileContains(join(dir, "serial.log"), VSOCK_READY_MARKER);
          return guestReady;
        },
      );
      const vm: RunningVm = {
        sandboxId: id,
        templateId: spec.template.templateId,
        vsockPath: front.path,
        startedAt: Date.now(),
      };
      const rec: QemuVm = {
        vm,
        dir,
        cgroup,
        disk,
        net: network,
        qemu: started.qemu,
        helpers: [vsock, fs],
        front,
        qmp,
        cpuCount: spec.cpuCount,
        memoryMib: spec.memoryMib,
        machine,
        imageKey: image.key,
        fsBin,
        vsockBin,
        layout,
        hostname,
        retired: new Set(),
        stopping: false,
        paused: false,
        parked: undefined,
        lastCpu: { cpuUsec: 0, atMs: vm.startedAt },
      };
      gate = rec;
      this.vms.set(id, rec);
      this.opts.logger.info(
        {
          "sandbox.id": id,
          machine,
          accel: kvm.enabled ? "kvm" : "tcg",
          disk: disk.method,
          image: image.key,
          egress: network.egress,
        },
        "qemu vm started",
      );
      for (const p of procs) this.watch(rec, p);
      return vm;
    } catch (err) {
      qmp?.close();
      await front?.close();
      await Promise.all(procs.map((p) => p.kill()));
      const serial = await tailFile(join(dir, "serial.log"), 1024);
      await this.cleanup(
        id,
        dir,
        cgroup,
        net ?? { netns: netnsName(this.opts.cgroupParent, id), slot: -1 },
      ).catch((e: Error) =>
        this.opts.logger.error({ "sandbox.id": id, err: e.message }, "cleanup after failed start failed"),
      );
      if (serial && err instanceof Error) err.message += ` (serial: ${serial.slice(-400)})`;
      throw err;
    }
  }

  private accelerators(): ("kvm" | "tcg")[] {
    const accel = this.opts.accel ?? "auto";
    if (accel !== "auto") return [accel];
    return existsSync("/dev/kvm") ? ["kvm", "tcg"] : ["tcg"];
  }

  /** The VM's vsock backend (its host sockets `vhu.sock` and `vm.vsock` in `dir`). */
  private startVsock(dir: string, cgroupProcs: readonly string[], binary: string): Promise<Supervised> {
    return startVsockBackend({
      binary,
      socketPath: join(dir, "vhu.sock"),
      udsPath: join(dir, "vm.vsock"),
      logFile: join(dir, "vsock.log"),
      env: this.env,
      cgroupProcs,
      timeoutMs: this.opts.startTimeoutMs ?? 20_000,
    });
  }

  /** A virtiofsd serving the VM's share on `vfs.sock` (one per QEMU frontend). */
  private startFs(dir: string, fsBin: VirtiofsdBinary, cgroupProcs: readonly string[]): Promise<Supervised> {
    return startVirtiofsd({
      binary: fsBin,
      sharedDir: this.shareOf(dir),
      socketPath: join(dir, "vfs.sock"),
      logFile: join(dir, "virtiofsd.log"),
      env: this.env,
      cgroupProcs,
      timeoutMs: this.opts.startTimeoutMs ?? 20_000,
    });
  }

  /**
   * Starts QEMU in the VM's network namespace and cgroup and connects to its QMP; `incoming`:
   * without the vhost-user devices, waiting for `migrate-incoming`. Kills it if QMP fails.
   */
  private async spawnQemu(
    dir: string,
    layout: QemuVmLayout,
    net: Pick<VmNetwork, "netns">,
    cgroupProcs: readonly string[],
    incoming: boolean,
  ): Promise<{ qemu: Supervised; qmp: Qmp }> {
    const logFile = join(dir, "qemu.log");
    await rm(layout.qmpSocket, { force: true });
    const qemu = spawnSupervised({
      name: "qemu",
      command: this.opts.qemuBinary ?? "/usr/bin/qemu-system-x86_64",
      args: qemuArgs({ ...layout, ...(incoming && { incoming: true }) }),
      logFile,
      stdoutFile: layout.serialLog,
      env: this.env,
      netns: net.netns,
      cgroupProcs,
    });
    try {
      await waitForPath(layout.qmpSocket, qemu, logFile, this.opts.startTimeoutMs ?? 20_000);
      return { qemu, qmp: await Qmp.connect(layout.qmpSocket) };
    } catch (err) {
      await qemu.kill();
      throw err;
    }
  }

  /** Any of QEMU and its helpers dying leaves the VM unreachable: report it gone once. */
  private watch(rec: QemuVm, p: Supervised): void {
    const id = rec.vm.sandboxId;
    void p.exited.then(async (reason) => {
      if (rec.stopping || rec.retired.has(p)) return;
      const detail =
        p === rec.qemu
          ? await tailFile(join(rec.dir, "serial.log"), 1024)
          : await tailFile(join(rec.dir, `${p.name}.log`), 1024);
      this.opts.logger.warn({ "sandbox.id": id, process: p.name, reason, log: detail }, "vm process ended");
      if (!rec.stopping) {
        rec.stopping = true;
        for (const l of this.exitListeners) l(id, `${p.name} ${reason}`);
        void this.destroy(id).catch((err: Error) =>
          this.opts.logger.error({ "sandbox.id": id, err: err.message }, "cleanup after vm exit failed"),
        );
      }
    });
  }

  /** Runs `fn` after every earlier operation on the sandbox has settled. */
  private serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.ops.run(id, fn);
  }

  destroy(id: string): Promise<void> {
    return this.serial(id, () => this.destroyNow(id));
  }

  private async destroyNow(id: string): Promise<void> {
    const rec = this.vms.get(id);
    if (!rec) {
      const dir = this.dirOf(id);
      if (existsSync(dir)) {
        await this.cleanup(id, dir, openCgroup(this.opts.cgroupParent, id), {
          netns: netnsName(this.opts.cgroupParent, id),
          slot: -1,
        });
        return;
      }
      throw new VmNotFoundError(id);
    }
    rec.stopping = true;
    // The end of the console says how far a VM got when it is removed before it was ready.
    this.opts.logger.debug(
      { "sandbox.id": id, serial: await tailFile(join(rec.dir, "serial.log"), 1024) },
      "removing qemu vm",
    );
    rec.qmp.close();
    await rec.front.close();
    await Promise.all([rec.qemu, ...rec.helpers].map((p) => p.kill()));
    // A stop-snapped VM's memory file goes with the folder.
    await this.cleanup(id, rec.dir, rec.cgroup, rec.net);
    this.vms.delete(id);
  }

  private async cleanup(
    id: string,
    dir: string,
    cgroup: Cgroup | undefined,
    net: Pick<VmNetwork, "netns" | "slot">,
  ): Promise<void> {
    if (cgroup) {
      await cgroup.killAll();
      await cgroup.remove();
    }
    await removeVmNetwork(net, this.env);
    // The share's own filesystem (deepest first, should anything be mounted inside it).
    for (const m of (await mountsUnder(dir)).sort().reverse()) await unmount(m);
    await rm(dir, { recursive: true, force: true });
    this.opts.logger.debug({ "sandbox.id": id }, "qemu vm removed");
  }

  async reclaimOrphans(known: ReadonlySet<string>): Promise<string[]> {
    const base = join(this.opts.stateDir, "sandboxes");
    const ids = new Set<string>([
      ...(await listCgroups(this.opts.cgroupParent)),
      ...(await listVmNetworks(this.opts.cgroupParent)),
    ]);
    try {
      for (const e of await readdir(base)) ids.add(e);
    } catch {
      // no sandboxes folder yet
    }
    const reclaimed: string[] = [];
    for (const id of ids) {
      if (known.has(id) || this.vms.has(id)) continue;
      await this.cleanup(id, join(base, id), openCgroup(this.opts.cgroupParent, id), {
        netns: netnsName(this.opts.cgroupParent, id),
        slot: -1,
      });
      reclaimed.push(id);
    }
    return reclaimed;
  }

  private running(id: string): QemuVm {
    const rec = this.vms.get(id);
    if (!rec || rec.stopping) throw new VmNotFoundError(id);
    return rec;
  }

  /**
   * Stop-snap (`pauseReleasesMemory`, q35): the vsock front refuses new connections and closes
   * open ones (vhost-device-vsock wedges on a connection that reaches it while QEMU's queues
   * are stopped), vsock and virtio-fs are unplugged (stock QEMU will not migrate with them),
   * the VM is stopped and its RAM and device state written to `<vm dir>/paused/memory.bin`,
   * then QEMU and virtiofsd end: the guest's RAM is freed. The network namespace and TAP,
   * the disk (in place, not copied), the share folder, the vsock backend and the vsock front
   * (its path is what the vmm dials) stay. Host writes to the share while paused are seen after
   * resume. The page cache of the memory file is dropped, so the cgroup really shrinks.
   *
   * Freeze (microvm, or `pauseMode: "freeze"`): QMP `stop` / `cont` (measured under TCG on 2
   * loaded cores: pause about 3 ms, resume plus the guest clock reset about 6 ms); QEMU keeps
   * the RAM. The guest clock stands still while stopped (it was 5.9 s behind after a 4 s
   * pause), so resume sets it and fresh entropy through the init's control port.
   */
  pause(id: string): Promise<void> {
    return this.serial(id, async () => {
      const rec = this.running(id);
      if (rec.paused) throw new VmStateError(`sandbox '${id}' is already paused`);
      // Paused first, so the vsock front stops dialling before QEMU stops the queues; then
      // every open guest connection is closed while the queues still run (a close that
      // reaches the backend after `stop` wedges it, as a new connection would).
      rec.paused = true;
      if (this.pauseReleasesMemory && rec.machine === "q35") return this.stopSnap(rec);
      try {
        await rec.front.drain();
        await rec.qmp.execute("stop");
        await this.expectStatus(rec, "paused");
      } catch (err) {
        await rec.qmp.execute("cont").catch(() => {});
        rec.paused = false;
        throw err;
      }
    });
  }

  private async stopSnap(rec: QemuVm): Promise<void> {
    const id = rec.vm.sandboxId;
    const t0 = Date.now();
    const pausedDir = join(rec.dir, PAUSED_DIR);
    const memoryFile = join(pausedDir, MEMORY_FILE);
    const fs = rec.helpers.find((p) => p.name === "virtiofsd");
    let version: string;
    try {
      await rec.front.drain();
      if (fs) rec.retired.add(fs);
      await unplugVhostUser(rec.qmp, HOTPLUG_TIMEOUT_MS);
      await rec.qmp.execute("stop");
      await rm(pausedDir, { recursive: true, force: true });
      await mkdir(pausedDir, { mode: 0o700 });
      await migrateToFile(rec.qmp, memoryFile, migrateTimeoutMs(rec.memoryMib));
      version = await qemuVersion(rec.qmp);
    } catch (err) {
      await rm(pausedDir, { recursive: true, force: true });
      // The VM is whole in QEMU still: give it its devices back and run it (removed if not).
      await this.replug(rec, false, t0);
      throw err;
    }
    const tSaved = Date.now();
    // The state is on disk: QEMU may go (it flushed and released the disk at the migration's end).
    const qemu = rec.qemu;
    rec.retired.add(qemu);
    await rec.qmp.execute("quit").catch(() => {});
    rec.qmp.close();
    await Promise.race([qemu.exited, sleep(QUIT_GRACE_MS)]);
    await qemu.kill();
    if (fs) {
      await fs.kill();
      rec.helpers.splice(rec.helpers.indexOf(fs), 1);
    }
    rec.parked = { memoryFile, qemuVersion: version };
    // Written pages are charged to the VM's cgroup until dropped: write back and drop them.
    await dropPageCache(memoryFile, this.env).catch((err: Error) =>
      this.opts.logger.warn({ "sandbox.id": id, err: err.message }, "page cache of the memory file kept"),
    );
    this.opts.logger.info(
      {
        "sandbox.id": id,
        saveMs: tSaved - t0,
        totalMs: Date.now() - t0,
        memoryBytes: (await stat(memoryFile)).size,
      },
      "qemu vm stop-snapped",
    );
  }

  resume(id: string): Promise<void> {
    return this.serial(id, async () => {
      const rec = this.running(id);
      if (!rec.paused) throw new VmStateError(`sandbox '${id}' is not paused`);
      if (rec.parked) return this.unpark(rec, rec.parked);
      await rec.qmp.execute("cont");
      await this.expectStatus(rec, "running");
      // Measured (bench/src/qemu.ts, TCG): a vsock dial within ~200 ms of `cont` wedged
      // vhost-device-vsock for good in 2 of 3 boots; after 1 s, 24 of 24 cycles passed. So the
      // sandbox stays "paused" to the vsock front (connections refused) while the queues settle.
      await new Promise((r) => setTimeout(r, RESUME_SETTLE_MS));
      // The guest clock stood still while stopped: set it (and fresh entropy) from the host.
      await reseedGuest(join(rec.dir, "vm.vsock")).catch((err: Error) =>
        this.opts.logger.warn({ "sandbox.id": id, err: err.message }, "guest clock not reset after resume"),
      );
      rec.paused = false;
    });
  }

  /**
   * The resume of a stop-snap: QEMU starts again in the same folder, namespace and cgroup
   * with the same command line (same disk, TAP and MAC) and `-incoming defer`, loads the
   * memory file, runs, gets vsock (the same backend, restarted if it died) and virtio-fs (a
   * new virtiofsd) plugged, and the guest is reseeded, its clock set and its share mounted
   * again, under the same hostname and id. A failure before the guest ran leaves the sandbox
   * paused with its memory file (resume may be retried); after, it is removed (its disk moved
   * on from the file).
   */
  private async unpark(rec: QemuVm, parked: NonNullable<QemuVm["parked"]>): Promise<void> {
    const id = rec.vm.sandboxId;
    const t0 = Date.now();
    const cgroupProcs = rec.cgroup.procsFiles;
    const fresh: Supervised[] = [];
    let qemu: Supervised | undefined;
    let qmp: Qmp | undefined;
    try {
      const oldVsock = rec.helpers.find((p) => p.name === "vsock");
      if (!oldVsock?.alive()) {
        const vsock = await this.startVsock(rec.dir, cgroupProcs, rec.vsockBin);
        fresh.push(vsock);
        if (oldVsock) rec.helpers.splice(rec.helpers.indexOf(oldVsock), 1, vsock);
        else rec.helpers.push(vsock);
      }
      fresh.push(await this.startFs(rec.dir, rec.fsBin, cgroupProcs));
      ({ qemu, qmp } = await this.spawnQemu(rec.dir, rec.layout, rec.net, cgroupProcs, true));
      const version = await qemuVersion(qmp);
      if (version !== parked.qemuVersion)
        throw new VmStateError(`paused by qemu ${parked.qemuVersion}, this host runs ${version}`);
      await migrateFromFile(qmp, parked.memoryFile, migrateTimeoutMs(rec.memoryMib));
    } catch (err) {
      qmp?.close();
      await qemu?.kill();
      for (const p of fresh) {
        await p.kill();
        const at = rec.helpers.indexOf(p);
        if (at >= 0) rec.helpers.splice(at, 1);
      }
      throw err;
    }
    const tLoaded = Date.now();
    rec.qemu = qemu;
    rec.qmp = qmp;
    const fs = fresh[fresh.length - 1];
    if (fs) rec.helpers.push(fs);
    for (const p of [qemu, ...fresh]) this.watch(rec, p);
    try {
      await qmp.execute("cont");
      await plugVhostUser(qmp, {
        vsockSocket: join(rec.dir, "vhu.sock"),
        fsSocket: join(rec.dir, "vfs.sock"),
        tag: SHARE_TAG,
      });
      await waitDevicesReady(qmp, HOTPLUG_TIMEOUT_MS);
      await tellGuest(join(rec.dir, "vm.vsock"), {
        seedHex: randomBytes(32).toString("hex"),
        clockSec: Date.now() / 1000,
        shareTag: SHARE_TAG,
        hostname: rec.hostname,
        sandboxId: id,
      });
    } catch (err) {
      this.opts.logger.error(
        { "sandbox.id": id, err: (err as Error).message },
        "vm did not come back from its stop-snap; removing it",
      );
      rec.stopping = true;
      for (const l of this.exitListeners) l(id, "did not come back from a pause");
      await this.destroyNow(id).catch((e: Error) =>
        this.opts.logger.error({ "sandbox.id": id, err: e.message }, "cleanup after failed resume failed"),
      );
      throw err;
    }
    rec.parked = undefined;
    rec.paused = false;
    await rm(join(rec.dir, PAUSED_DIR), { recursive: true, force: true });
    this.opts.logger.info(
      { "sandbox.id": id, loadMs: tLoaded - t0, totalMs: Date.now() - t0 },
      "qemu vm resumed from its stop-snap",
    );
  }

  private async expectStatus(rec: QemuVm, want: string): Promise<void> {
    const st = (await rec.qmp.execute("query-status")) as { status?: string };
    if (st.status !== want) throw new VmStateError(`qemu reports '${st.status}', expected '${want}'`);
  }

  isPaused(id: string): boolean {
    return this.vms.get(id)?.paused === true;
  }

  /**
   * Writes a memory snapshot of a sandbox into `destDir` (exists, owned by the snapshot layer;
   * never inside the sandboxes folder): `memory.bin`, the disk (`root.raw` / `root.qcow2`)
   * and `dnah-qemu-snapshot.json`, plain files. A running VM: the vsock and virtio-fs devices
   * are hot-unplugged (stock QEMU will not migrate with them, `qemu-microvm.md` §8.2; the
   * guest must run to eject them, so a frozen VM runs for that moment, its vsock still
   * refused), the VM is stopped, RAM and device state go to `memory.bin` through `migrate`,
   * the disk is copied (reflink where the filesystem can; the qcow2 overlay otherwise) while
   * the block layer is flushed and inactive, `hooks.whileStopped` runs, then the devices go
   * back (a new virtiofsd: the old one exits with its frontend), the guest mounts its share
   * again and is reseeded, and the VM runs again unless it was paused. A stop-snapped VM:
   * its memory file and disk are copied, QEMU is not started. q35 only: microvm has no hotplug.
   *
   * Measured in `test/qemu-snapshot.test.ts` (TCG, q35, 1 vCPU, 384 MiB guest with the base
   * image's agent and a shell loop, 2 cores loaded to 3–4 by other work): snapshot 2.5–3.2 s
   * in all (unplug 0.36 s, stop + migrate 1.6 s, disk copy and replug the rest); memory file
   * 147–148 MiB (the RAM the guest touched: memfd RAM is not sparse in the stream); restore
   * 4.7–7.4 s in all (folder, network, daemons and QEMU start about 1 s, loading the file
   * 2.9 s, replug + drivers + reseed 0.7 s).
   */
  snapshot(id: string, destDir: string, hooks: SnapshotHooks): Promise<RuntimeSnapshot> {
    return this.serial(id, async () => {
      const rec = this.running(id);
      if (rec.machine !== "q35")
        throw new VmStateError(`sandbox '${id}' runs on ${rec.machine}, which cannot unplug its vsock`);
      const dest = resolve(destDir);
      if (`${dest}/`.startsWith(`${join(this.opts.stateDir, "sandboxes")}/`))
        throw new InvalidArgumentError("a snapshot folder may not be inside the sandboxes folder");
      const written = [MEMORY_FILE, basename(rec.disk.path), SNAPSHOT_MANIFEST].map((f) => join(dest, f));
      const share = this.shareOf(rec.dir);
      if (rec.parked) {
        try {
          await copyFile(rec.parked.memoryFile, join(dest, MEMORY_FILE), constants.COPYFILE_FICLONE);
          await this.writeSnapshotFiles(rec, dest, rec.parked.qemuVersion);
          await hooks.whileStopped(share);
        } catch (err) {
          await Promise.all(written.map((f) => rm(f, { force: true })));
          throw err;
        }
        return this.snapshotResult(rec);
      }
      const wasPaused = rec.paused;
      const t0 = Date.now();
      // Paused for the vsock front from here on: nothing dials the backend while unplugged.
      rec.paused = true;
      // From the first device_del on, whatever went must come back (replug plugs what is gone).
      // Open guest connections are not drained first, unlike a pause: measured, a drain right
      // before the unplug left the replugged vsock wedged (2 of 2 runs of the qemu runtimes
      // e2e); the unplug itself resets the guest's side of them.
      let unplugging = false;
      // The snapshot's own failure, kept when the replug fails too (the first cause is the one to report).
      let failure: Error | undefined;
      try {
        if (wasPaused) await rec.qmp.execute("cont");
        const fs = rec.helpers.find((p) => p.name === "virtiofsd");
        if (fs) rec.retired.add(fs);
        unplugging = true;
        await unplugVhostUser(rec.qmp, HOTPLUG_TIMEOUT_MS);
        await rec.qmp.execute("stop");
        const tStopped = Date.now();
        await migrateToFile(rec.qmp, join(dest, MEMORY_FILE), migrateTimeoutMs(rec.memoryMib));
        const tSaved = Date.now();
        const meta = await this.writeSnapshotFiles(rec, dest, await qemuVersion(rec.qmp));
        await hooks.whileStopped(share);
        this.opts.logger.info(
          {
            "sandbox.id": id,
            "snapshot.dir": dest,
            unplugMs: tStopped - t0,
            migrateMs: tSaved - tStopped,
            memoryBytes: meta.memoryBytes,
          },
          "qemu snapshot written",
        );
        return this.snapshotResult(rec);
      } catch (err) {
        failure = err as Error;
        await Promise.all(written.map((f) => rm(f, { force: true })));
        throw err;
      } finally {
        if (!unplugging) {
          // Nothing was unplugged: only undo the pause.
          if (!wasPaused) await rec.qmp.execute("cont").catch(() => {});
          else await rec.qmp.execute("stop").catch(() => {});
          rec.paused = wasPaused;
        } else if (failure) {
          this.opts.logger.warn(
            { "sandbox.id": id, err: failure.message },
            "qemu snapshot failed; plugging the devices back",
          );
          await this.replug(rec, wasPaused, t0).catch((err: Error) => {
            throw new Error(`${failure?.message}; then the replug failed: ${err.message}`, {
              cause: failure,
            });
          });
        } else await this.replug(rec, wasPaused, t0);
      }
    });
  }

  /** The disk copy and `dnah-qemu-snapshot.json`, beside a `memory.bin` already in `dest`. */
  private async writeSnapshotFiles(rec: QemuVm, dest: string, version: string): Promise<QemuSnapshotMeta> {
    const diskName = basename(rec.disk.path);
    await copyFile(rec.disk.path, join(dest, diskName), constants.COPYFILE_FICLONE);
    const meta: QemuSnapshotMeta = {
      runtime: "qemu",
      templateId: rec.vm.templateId,
      imageKey: rec.imageKey,
      machine: "q35",
      cpuCount: rec.cpuCount,
      memoryMib: rec.memoryMib,
      qemuVersion: version,
      memory: MEMORY_FILE,
      memoryBytes: (await stat(join(dest, MEMORY_FILE))).size,
      disk: diskName,
      createdAt: new Date().toISOString(),
    };
    await writeFile(join(dest, SNAPSHOT_MANIFEST), `${JSON.stringify(meta, null, 2)}\n`, { mode: 0o600 });
    return meta;
  }

  private snapshotResult(rec: QemuVm): RuntimeSnapshot {
    return { memory: true, templateId: rec.vm.templateId, cpuCount: rec.cpuCount, memoryMib: rec.memoryMib };
  }

  /**
   * Plugs vsock and virtio-fs back into a VM `snapshot` unplugged them from, runs it, waits for
   * the guest's drivers, reseeds it and has it mount the share again; stops it again when it
   * was paused. A VM that does not get its devices back is unreachable: it is removed.
   */
  private async replug(rec: QemuVm, wasPaused: boolean, t0: number): Promise<void> {
    const id = rec.vm.sandboxId;
    try {
      const old = rec.helpers.findIndex((p) => p.name === "virtiofsd");
      const prev = rec.helpers[old];
      if ((await attachedVhostUser(rec.qmp)).fs) {
        // The unplug failed before the share's device: its virtiofsd still serves it.
        if (prev) rec.retired.delete(prev);
      } else {
        if (prev) {
          // The C virtiofsd exits once its frontend left; it must be gone before its socket is reused.
          await Promise.race([prev.exited, sleep(2_000)]);
          await prev.kill();
        }
        const fs = await this.startFs(rec.dir, rec.fsBin, rec.cgroup.procsFiles);
        if (old >= 0) rec.helpers.splice(old, 1, fs);
        else rec.helpers.push(fs);
        this.watch(rec, fs);
      }
      await rec.qmp.execute("cont");
      await plugVhostUser(rec.qmp, {
        vsockSocket: join(rec.dir, "vhu.sock"),
        fsSocket: join(rec.dir, "vfs.sock"),
        tag: SHARE_TAG,
      });
      await waitDevicesReady(rec.qmp, HOTPLUG_TIMEOUT_MS);
      await tellGuest(join(rec.dir, "vm.vsock"), {
        seedHex: randomBytes(32).toString("hex"),
        clockSec: Date.now() / 1000,
        shareTag: SHARE_TAG,
      });
      if (wasPaused) {
        await rec.qmp.execute("stop");
        await this.expectStatus(rec, "paused");
      } else rec.paused = false;
      this.opts.logger.debug({ "sandbox.id": id, totalMs: Date.now() - t0 }, "qemu vm back after snapshot");
    } catch (err) {
      this.opts.logger.error(
        { "sandbox.id": id, err: (err as Error).message },
        "vm did not get its devices back after a snapshot; removing it",
      );
      rec.stopping = true;
      for (const l of this.exitListeners) l(id, "lost its devices after a snapshot");
      await this.destroyNow(id).catch((e: Error) =>
        this.opts.logger.error({ "sandbox.id": id, err: e.message }, "cleanup after failed replug failed"),
      );
      throw err;
    }
  }

  /**
   * Starts a sandbox (`spec.sandboxId`: new id, network namespace, vsock backend, virtiofsd and
   * share) from a folder `snapshot` wrote and the snapshot layer verified: `hooks.beforeStart`
   * fills the new share first, the disk is copied from the folder, QEMU starts with the same
   * machine minus the vhost-user devices and `-incoming defer`, loads `memory.bin`, runs, gets
   * vsock and virtio-fs plugged, and the guest init gets fresh entropy (it shares the RNG state
   * of the source and of every other clone), the host's clock (it stood still since the
   * snapshot), its new hostname (`guestHostname`) and sandbox id, and mounts its new share.
   * Resolves once the init answered, so the agent, whose listener survived, is reachable.
   * Sized from the snapshot (`spec`'s size is ignored).
   */
  async restore(spec: VmSpec, snapshotDir: string, hooks: RestoreHooks): Promise<RunningVm> {
    const dir = resolve(snapshotDir);
    const meta = await readSnapshotMeta(dir);
    if (meta.templateId !== spec.template.templateId)
      throw new InvalidArgumentError(
        `snapshot of template '${meta.templateId}' cannot start as '${spec.template.templateId}'`,
      );
    return this.launch({ ...spec, cpuCount: meta.cpuCount, memoryMib: meta.memoryMib }, { dir, meta, hooks });
  }

  /** The restore half of `launch`, on a QEMU waiting with `-incoming defer`. */
  private async loadSnapshot(
    qmp: Qmp,
    snap: { dir: string; meta: QemuSnapshotMeta },
    vmDir: string,
    id: string,
    hostname: string,
  ): Promise<void> {
    const version = await qemuVersion(qmp);
    if (version !== snap.meta.qemuVersion)
      throw new VmStateError(`snapshot written by qemu ${snap.meta.qemuVersion}, this host runs ${version}`);
    const t0 = Date.now();
    await migrateFromFile(qmp, join(snap.dir, snap.meta.memory), migrateTimeoutMs(snap.meta.memoryMib));
    const tLoaded = Date.now();
    await qmp.execute("cont");
    await plugVhostUser(qmp, {
      vsockSocket: join(vmDir, "vhu.sock"),
      fsSocket: join(vmDir, "vfs.sock"),
      tag: SHARE_TAG,
    });
    await waitDevicesReady(qmp, HOTPLUG_TIMEOUT_MS);
    await tellGuest(join(vmDir, "vm.vsock"), {
      seedHex: randomBytes(32).toString("hex"),
      clockSec: Date.now() / 1000,
      shareTag: SHARE_TAG,
      hostname,
      sandboxId: id,
    });
    this.opts.logger.info(
      { "sandbox.id": id, "snapshot.dir": snap.dir, loadMs: tLoaded - t0, replugMs: Date.now() - tLoaded },
      "qemu vm restored",
    );
  }

  /**
   * CPU and memory of the VM's processes (QEMU with the guest's touched RAM, virtiofsd, the
   * vsock backend) from their cgroup; disk: the bytes the VM's own disk file occupies on the
   * host (a qcow2 overlay holds only what the guest changed) and the size the guest sees. A
   * stop-snapped VM reports 0 % CPU and 0 bytes of memory (no guest runs, no RAM is held; its
   * memory file is on disk, not counted here), its disk as usual.
   */
  async metrics(id: string): Promise<VmMetricsSample> {
    const rec = this.running(id);
    const [usage, used, total] = await Promise.all([
      rec.cgroup.usage(),
      diskAllocatedBytes(rec.disk.path),
      diskVirtualBytes(rec.disk, this.env),
    ]);
    const now = Date.now();
    const cur = { cpuUsec: usage.cpuUsec, atMs: now };
    const pct = cpuUsedPct(rec.lastCpu, cur, rec.cpuCount);
    rec.lastCpu = cur;
    const parked = rec.parked !== undefined;
    return {
      timestampMs: now,
      cpuCount: rec.cpuCount,
      cpuUsedPct: parked ? 0 : pct,
      memUsedBytes: parked ? 0 : usage.memUsedBytes,
      memTotalBytes: rec.memoryMib * 1024 * 1024,
      memCacheBytes: parked ? 0 : usage.memCacheBytes,
      diskUsedBytes: used,
      diskTotalBytes: total,
    };
  }

  async setForeground(id: string): Promise<void> {
    const rec = this.vms.get(id);
    if (!rec) throw new VmNotFoundError(id);
    await rec.cgroup.setCpuWeight("normal");
  }

  /** A stop-snapped VM counts as running: it has no QEMU, but it lives (paused). */
  isRunning(id: string): boolean {
    const rec = this.vms.get(id);
    return rec !== undefined && !rec.stopping && (rec.parked !== undefined || rec.qemu.alive());
  }

  shareDir(id: string): string {
    return this.shareOf(this.dirOf(id));
  }

  onExit(listener: (sandboxId: string, reason: string) => void): void {
    this.exitListeners.push(listener);
  }

  async dispose(): Promise<void> {
    // VMs the vmm never registered (closed while they booted) are ours to remove too.
    await Promise.all(
      [...this.vms.keys()].map((id) =>
        this.destroy(id).catch((err: Error) =>
          this.opts.logger.error({ "sandbox.id": id, err: err.message }, "destroy at dispose failed"),
        ),
      ),
    );
    await removeCgroupParent(this.opts.cgroupParent);
    await rmdir(join(this.opts.stateDir, "sandboxes")).catch(() => {
      // not empty (sandboxes of another vmm) or never created
    });
  }

  /** Host paths and processes of a VM (tests read the serial log, the share, QEMU's pid). */
  paths(id: string): {
    dir: string;
    share: string;
    serialLog: string;
    netns: string;
    cgroup: string;
    qemuPid: number | undefined;
  } {
    const dir = this.dirOf(id);
    const rec = this.vms.get(id);
    return {
      dir,
      share: this.shareOf(dir),
      serialLog: join(dir, "serial.log"),
      netns: netnsName(this.opts.cgroupParent, id),
      cgroup: join("/sys/fs/cgroup", this.opts.cgroupParent, id),
      qemuPid: rec && !rec.parked && rec.qemu.alive() ? rec.qemu.proc.pid : undefined,
    };
  }
}

/**
 * Writes a file's dirty pages back and drops its page cache (GNU dd's `nocache`), so pages
 * written by a VM's processes stop counting against its cgroup.
 */
async function dropPageCache(path: string, env: Record<string, string>): Promise<void> {
  await run("dd", [`of=${path}`, "oflag=nocache", "conv=notrunc,fdatasync", "count=0", "status=none"], {
    env,
    timeout: 60_000,
  });
}

/** The snapshot's disk, copied (reflinked where the filesystem can) into a new VM's folder. */
async function copySnapshotDisk(snapDir: string, name: string, vmDir: string): Promise<CowDisk> {
  const dest = join(vmDir, name);
  // A qcow2 overlay is small and names its base (the image's rootfs) by absolute path.
  await copyFile(join(snapDir, name), dest, constants.COPYFILE_FICLONE);
  return name.endsWith(".qcow2")
    ? { path: dest, format: "qcow2", method: "qcow2-overlay" }
    : { path: dest, format: "raw", method: "reflink" };
}

/** The host TSC in kHz (`cpu MHz` × 1000), for microvm's `tsc_early_khz`; undefined if unknown. */
async function hostTscKhz(): Promise<number | undefined> {
  try {
    const mhz = /^cpu MHz\s*:\s*([0-9.]+)/m.exec(await readFile("/proc/cpuinfo", "utf8"))?.[1];
    return mhz ? Math.round(Number(mhz) * 1000) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The qemu runtime for a vmm config (what `DNAH_RUNTIME=qemu` selects). Throws, naming what to
 * install, when the host lacks qemu, vhost-device-vsock or virtiofsd.
 */
export function createQemuRuntime(
  cfg: Pick<
    VmmConfig,
    | "stateDir"
    | "cacheDir"
    | "cgroupParent"
    | "pidsMax"
    | "hostPath"
    | "qemuMachine"
    | "qemuAccel"
    | "vmEgress"
    | "shareQuotaBytes"
  >,
  logger: Logger,
): QemuRuntime {
  const missing = QemuRuntime.missing({ cacheDir: cfg.cacheDir });
  if (missing.length > 0) throw new Error(`DNAH_RUNTIME=qemu, but this host lacks ${missing.join(", ")}`);
  return new QemuRuntime({
    stateDir: cfg.stateDir,
    cacheDir: cfg.cacheDir,
    cgroupParent: cfg.cgroupParent,
    pidsMax: cfg.pidsMax,
    hostPath: cfg.hostPath,
    logger,
    machine: cfg.qemuMachine,
    accel: cfg.qemuAccel,
    egress: cfg.vmEgress,
    shareMib: shareFsMib(cfg.shareQuotaBytes),
  });
}
