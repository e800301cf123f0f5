import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rm, rmdir } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "@dnah/platform";
import type { VmmConfig } from "../../config.js";
import { VmExistsError, VmNotFoundError, VmStateError } from "../../domain/errors.js";
import {
  type Cgroup,
  cpuUsedPct,
  createCgroup,
  listCgroups,
  openCgroup,
  removeCgroupParent,
} from "../jail/cgroup.js";
import { KeyedSerial } from "../keyed-serial.js";
import type { RunningVm, Runtime, VmMetricsSample, VmSpec } from "../runtime.js";
import { type CowDisk, createCowDisk, diskAllocatedBytes, diskVirtualBytes } from "../vm/disk.js";
import { findVmImage } from "../vm/image.js";
import {
  createVmNetwork,
  guestNetCmdline,
  listVmNetworks,
  netnsName,
  removeHostRulesIfIdle,
  removeVmNetwork,
  type VmNetwork,
} from "../vm/network.js";
import { fileContains, type Supervised, spawnSupervised, tailFile, waitForPath } from "../vm/process.js";
import { findVirtiofsd, startVirtiofsd } from "../vm/virtiofsd.js";
import { findVsockBackend, startVsockBackend } from "../vm/vsock-backend.js";
import { reseedGuest, serveVsockFront, VSOCK_READY_MARKER, type VsockFront } from "../vm/vsock-front.js";
import { guestCmdline, type QemuMachine, qemuArgs } from "./args.js";
import { Qmp } from "./qmp.js";

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
}

/** What QEMU, virtiofsd and the vsock backend use beyond the guest's RAM (TCG cache included). */
const OVERHEAD_MIB = 320;
const TCG_CACHE_MIB = 64;
const SHARE_TAG = "dnah-share";

interface QemuVm {
  readonly vm: RunningVm;
  readonly dir: string;
  readonly cgroup: Cgroup;
  readonly disk: CowDisk;
  readonly net: VmNetwork;
  readonly qemu: Supervised;
  readonly helpers: Supervised[];
  readonly front: VsockFront;
  readonly qmp: Qmp;
  readonly cpuCount: number;
  readonly memoryMib: number;
  stopping: boolean;
  paused: boolean;
  lastCpu: { cpuUsec: number; atMs: number };
}

/**
 * The qemu runtime: one real microVM per sandbox under QEMU (KVM where it starts, TCG
 * otherwise), booting the template's image (`dnah image build`): copy-on-write root disk, its
 * own network namespace and TAP, hybrid vsock through vhost-device-vsock, the share through
 * virtiofsd. The agent listens on AF_VSOCK only. Pause and resume are QMP `stop` / `cont`.
 */
export class QemuRuntime implements Runtime {
  readonly name = "qemu" as const;
  readonly isolation =
    "qemu microVM per sandbox (own kernel, KVM or TCG), own network namespace and TAP, agent reachable only over vsock";
  private readonly vms = new Map<string, QemuVm>();
  private readonly exitListeners: Array<(id: string, reason: string) => void> = [];
  private readonly ops = new KeyedSerial();
  private readonly env: Record<string, string>;

  constructor(private readonly opts: QemuOptions) {
    this.env = { PATH: opts.hostPath };
  }

  private dirOf(id: string): string {
    return join(this.opts.stateDir, "sandboxes", id);
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

  async start(spec: VmSpec): Promise<RunningVm> {
    const { sandboxId: id } = spec;
    if (this.vms.has(id)) throw new VmExistsError(id);
    const dir = this.dirOf(id);
    if (existsSync(dir)) throw new VmExistsError(id);
    const image = await findVmImage(this.opts.cacheDir, spec.template.templateId, spec.template.rootfsDir);
    const vsockBin = findVsockBackend(this.opts.cacheDir, this.opts.vsockBackend);
    const fsBin = findVirtiofsd(this.opts.virtiofsd);
    if (!vsockBin || !fsBin)
      throw new Error(`qemu runtime: missing ${QemuRuntime.missing(this.opts).join(", ")}`);
    await mkdir(join(dir, "share"), { recursive: true, mode: 0o700 });
    const timeoutMs = this.opts.startTimeoutMs ?? 20_000;
    const logs = (n: string) => join(dir, `${n}.log`);
    const machine = this.opts.machine ?? "q35";
    let cgroup: Cgroup | undefined;
    let net: VmNetwork | undefined;
    const procs: Supervised[] = [];
    let front: VsockFront | undefined;
    let qmp: Qmp | undefined;
    try {
      cgroup = await createCgroup(this.opts.cgroupParent, id, {
        memoryMib: spec.memoryMib + OVERHEAD_MIB,
        cpuCount: spec.cpuCount,
        pidsMax: this.opts.pidsMax,
        cpuWeight: spec.background ? "low" : "normal",
      });
      const [disk, network] = await Promise.all([
        createCowDisk(image.rootfs, join(dir, "root"), this.env),
        createVmNetwork(this.opts.cgroupParent, id, this.opts.egress ?? true, this.env),
      ]);
      net = network;
      const common = { env: this.env, cgroupProcs: cgroup.procsFiles, timeoutMs };
      const [vsock, fs] = await Promise.all([
        startVsockBackend({
          ...common,
          binary: vsockBin,
          socketPath: join(dir, "vhu.sock"),
          udsPath: join(dir, "vm.vsock"),
          logFile: logs("vsock"),
        }),
        startVirtiofsd({
          ...common,
          binary: fsBin,
          sharedDir: join(dir, "share"),
          socketPath: join(dir, "vfs.sock"),
          logFile: logs("virtiofsd"),
        }),
      ]);
      procs.push(vsock, fs);
      const args = qemuArgs({
        machine,
        accelerators: existsSync("/dev/kvm") ? ["kvm", "tcg"] : ["tcg"],
        cpuCount: spec.cpuCount,
        memoryMib: spec.memoryMib,
        kernel: image.kernel,
        initramfs: image.initramfs,
        cmdline: guestCmdline({
          machine,
          sandboxId: id,
          hostname: "sandbox",
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
      });
      const qemu = spawnSupervised({
        name: "qemu",
        command: this.opts.qemuBinary ?? "/usr/bin/qemu-system-x86_64",
        args,
        logFile: logs("qemu"),
        env: this.env,
        netns: network.netns,
        cgroupProcs: cgroup.procsFiles,
      });
      procs.push(qemu);
      await waitForPath(join(dir, "qmp.sock"), qemu, logs("qemu"), timeoutMs);
      qmp = await Qmp.connect(join(dir, "qmp.sock"));
      const kvm = (await qmp.execute("query-kvm")) as { enabled?: boolean };
      // Gate the backend: not before the init says its vsock is up, never while stopped.
      let guestReady = false;
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
        qemu,
        helpers: [vsock, fs],
        front,
        qmp,
        cpuCount: spec.cpuCount,
        memoryMib: spec.memoryMib,
        stopping: false,
        paused: false,
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
      for (const p of procs) {
        void p.exited.then(async (reason) => {
          if (rec.stopping) return;
          const detail =
            p === qemu ? await tailFile(join(dir, "serial.log"), 1024) : await tailFile(logs(p.name), 1024);
          this.opts.logger.warn(
            { "sandbox.id": id, process: p.name, reason, log: detail },
            "vm process ended",
          );
          // Any of the three dying leaves the VM unreachable: report it gone once.
          if (!rec.stopping) {
            rec.stopping = true;
            for (const l of this.exitListeners) l(id, `${p.name} ${reason}`);
            void this.destroy(id).catch((err: Error) =>
              this.opts.logger.error({ "sandbox.id": id, err: err.message }, "cleanup after vm exit failed"),
            );
          }
        });
      }
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
   * QMP `stop` / `cont` (measured under TCG on 2 loaded cores: pause about 3 ms, resume plus
   * the guest clock reset about 6 ms). QEMU, virtiofsd and the vsock backend keep running, so
   * host writes to the share land at once. Measured: vhost-device-vsock 0.3.0 wedges for good
   * when a host connection arrives while QEMU's queues are stopped (the guest never answers
   * again after `cont`), so the sandbox is marked paused before `stop` and the vsock front
   * refuses connections while it is (the vmm refuses tunnels too). A cgroup freeze of all three
   * processes was the alternative; QMP keeps virtiofsd serving the host and is what the spec
   * measured. The guest clock stands still while stopped (it was 5.9 s behind after a 4 s
   * pause), so resume sets it and fresh entropy through the init's control port.
   */
  pause(id: string): Promise<void> {
    return this.serial(id, async () => {
      const rec = this.running(id);
      if (rec.paused) throw new VmStateError(`sandbox '${id}' is already paused`);
      // Paused first, so the vsock front stops dialling before QEMU stops the queues.
      rec.paused = true;
      try {
        await rec.qmp.execute("stop");
        await this.expectStatus(rec, "paused");
      } catch (err) {
        await rec.qmp.execute("cont").catch(() => {});
        rec.paused = false;
        throw err;
      }
    });
  }

  resume(id: string): Promise<void> {
    return this.serial(id, async () => {
      const rec = this.running(id);
      if (!rec.paused) throw new VmStateError(`sandbox '${id}' is not paused`);
      await rec.qmp.execute("cont");
      await this.expectStatus(rec, "running");
      rec.paused = false;
      // The guest clock stood still while stopped: set it (and fresh entropy) from the host.
      await reseedGuest(join(rec.dir, "vm.vsock")).catch((err: Error) =>
        this.opts.logger.warn({ "sandbox.id": id, err: err.message }, "guest clock not reset after resume"),
      );
    });
  }

  private async expectStatus(rec: QemuVm, want: string): Promise<void> {
    const st = (await rec.qmp.execute("query-status")) as { status?: string };
    if (st.status !== want) throw new VmStateError(`qemu reports '${st.status}', expected '${want}'`);
  }

  isPaused(id: string): boolean {
    return this.vms.get(id)?.paused === true;
  }

  /**
   * CPU and memory of the VM's processes (QEMU with the guest's touched RAM, virtiofsd, the
   * vsock backend) from their cgroup; disk: the bytes the VM's own disk file occupies on the
   * host (a qcow2 overlay holds only what the guest changed) and the size the guest sees.
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
    return {
      timestampMs: now,
      cpuCount: rec.cpuCount,
      cpuUsedPct: pct,
      memUsedBytes: usage.memUsedBytes,
      memTotalBytes: rec.memoryMib * 1024 * 1024,
      memCacheBytes: usage.memCacheBytes,
      diskUsedBytes: used,
      diskTotalBytes: total,
    };
  }

  async setForeground(id: string): Promise<void> {
    const rec = this.vms.get(id);
    if (!rec) throw new VmNotFoundError(id);
    await rec.cgroup.setCpuWeight("normal");
  }

  isRunning(id: string): boolean {
    const rec = this.vms.get(id);
    return rec !== undefined && !rec.stopping && rec.qemu.alive();
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
    await removeHostRulesIfIdle(this.env);
    await removeCgroupParent(this.opts.cgroupParent);
    await rmdir(join(this.opts.stateDir, "sandboxes")).catch(() => {
      // not empty (sandboxes of another vmm) or never created
    });
  }

  /** Host paths of a VM (tests read the serial log and the share). */
  paths(id: string): { dir: string; share: string; serialLog: string; netns: string } {
    const dir = this.dirOf(id);
    return {
      dir,
      share: join(dir, "share"),
      serialLog: join(dir, "serial.log"),
      netns: netnsName(this.opts.cgroupParent, id),
    };
  }
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
    "stateDir" | "cacheDir" | "cgroupParent" | "pidsMax" | "hostPath" | "qemuMachine" | "vmEgress"
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
    egress: cfg.vmEgress,
  });
}
