import { randomBytes } from "node:crypto";
import { constants, existsSync } from "node:fs";
import { copyFile, mkdir, readdir, readFile, rm, rmdir, writeFile } from "node:fs/promises";
import { basename, join, resolve } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "@dnah/platform";
import {
  InvalidArgumentError,
  RuntimeTimeoutError,
  VmExistsError,
  VmNotFoundError,
  VmStateError,
} from "../../domain/errors.js";
import {
  type Cgroup,
  cpuUsedPct,
  createCgroup,
  listCgroups,
  openCgroup,
  removeCgroupParent,
} from "../jail/cgroup.js";
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
import { createShareDir } from "../share.js";
import { type CowDisk, createCowDisk, diskAllocatedBytes, diskVirtualBytes } from "../vm/disk.js";
import { guestHostname, tellGuest } from "../vm/guest-control.js";
import {
  createVmNetwork,
  guestNetCmdline,
  listVmNetworks,
  netnsName,
  removeVmNetwork,
  type VmNetwork,
} from "../vm/network.js";
import { type Supervised, spawnSupervised, tailFile, waitForPath } from "../vm/process.js";
import { startVirtiofsd, type VirtiofsdBinary } from "../vm/virtiofsd.js";
import { reseedGuest, serveVsockFront, type VsockFront } from "../vm/vsock-front.js";
import { ChApiClient, ChApiError, ChUnreachableError } from "./api.js";
import type { VmCounters, VmState } from "./types.js";
import { unsupportedReason } from "./version.js";
import {
  buildRestoreConfig,
  buildSnapshotConfig,
  buildVmConfig,
  memoryCallTimeoutMs,
  restoreLeavesPaused,
  SHARE_TAG,
  VM_ROOT,
  type VmLayout,
  vmLayout,
} from "./vm-config.js";

/** What a microVM boots: the template's guest image (built by `dnah image build`). */
export interface VmImage {
  readonly kernel: string;
  readonly initramfs?: string;
  /** Raw ext4 root disk; each VM gets a copy-on-write disk on top of it. */
  readonly rootDisk: string;
  /** Extra kernel parameters the image needs (dnah adds its own `dnah.*` ones). */
  readonly cmdline?: string;
}

export interface CloudHypervisorOptions {
  /** Per-sandbox folders live in `<stateDir>/sandboxes/<id>`. */
  readonly stateDir: string;
  /** The `cloud-hypervisor` executable. */
  readonly binary: string;
  /** cgroup parent, also the scope of this vmm's network namespaces. */
  readonly cgroupParent: string;
  readonly pidsMax: number;
  /** PATH for the host tools (ip, iptables, unshare, setpriv, qemu-img). */
  readonly hostPath: string;
  readonly logger: Logger;
  /**
   * The guest image of a template, made first for a template built from steps (`log` hears
   * about it); throws when the template has none.
   */
  findImage(template: TemplateImage, log?: (line: string) => void): Promise<VmImage>;
  /** NAT to the outside world from the VM's network namespace (default true). */
  readonly egress?: boolean;
  /** virtiofsd for the host share at /mnt/dnah-share; none = no share. */
  readonly virtiofsd?: VirtiofsdBinary;
  /** Per API call (default 10 s). */
  readonly apiTimeoutMs?: number;
  /** From spawn to the API socket answering (default 15 s). */
  readonly startTimeoutMs?: number;
}

/** Guest RAM plus what CH itself, virtiofsd and page tables need, for the cgroup limit. */
const VMM_OVERHEAD_MIB = 128;
const GRACEFUL_EXIT_MS = 2_000;
/** What `snapshot` writes beside CH's own files, to restore from the folder alone. */
const SNAPSHOT_META = "dnah-snapshot.json";
const BASE_CMDLINE = "console=ttyS0 quiet clocksource=kvm-clock panic=-1 dnah.root=/dev/vda";

interface ChVm {
  readonly vm: RunningVm;
  readonly dir: string;
  readonly layout: VmLayout;
  readonly api: ChApiClient;
  readonly proc: Supervised;
  readonly cgroup: Cgroup;
  readonly net: VmNetwork;
  readonly disk: CowDisk;
  readonly virtiofsd: Supervised | undefined;
  readonly front: VsockFront;
  readonly hostname: string;
  readonly cpuCount: number;
  readonly memoryMib: number;
  stopping: boolean;
  paused: boolean;
  lastCpu: { cpuUsec: number; atMs: number };
}

/** What `snapshot` records, so `restore` needs only the folder. */
export interface SnapshotMeta {
  readonly templateId: string;
  readonly cpuCount: number;
  readonly memoryMib: number;
  readonly disk: string;
  readonly chVersion: string;
}

/** Resources made so far by a start, so a failure removes exactly those. */
interface Launching {
  dir: string;
  cgroup?: Cgroup;
  net?: VmNetwork;
  virtiofsd?: Supervised | undefined;
  front?: VsockFront;
  proc?: Supervised;
  api?: ChApiClient;
}

/**
 * The Cloud Hypervisor runtime: one `cloud-hypervisor --api-socket` process per sandbox, in
 * its own network namespace (a TAP, no shared L2) and its own mount namespace where the
 * sandbox folder appears at the fixed `VM_ROOT`, driven over CH's REST API: vm.create +
 * vm.boot, vm.pause / vm.resume, vm.snapshot / vm.restore, vmm.shutdown. The guest agent is
 * reached through CH's hybrid vsock socket, the same dialer the jail uses.
 */
export class CloudHypervisorRuntime implements Runtime {
  readonly name = "cloud-hypervisor" as const;
  readonly isolation =
    "microVM (Cloud Hypervisor, KVM): each sandbox has its own kernel, a copy-on-write disk and a network namespace with a TAP";
  /**
   * CH's vm.pause stops the vCPUs and keeps the guest's RAM in the CH process. A stop-snap
   * (vm.snapshot + vmm.shutdown, vm.restore in place on resume) would free it; it is not
   * implemented because it cannot be tested here (no KVM, no real CH: the stand-in runs no
   * guest), so pause keeps memory resident.
   */
  readonly pauseReleasesMemory = false;
  private readonly vms = new Map<string, ChVm>();
  private readonly exitListeners: Array<(id: string, reason: string) => void> = [];
  private readonly ops = new KeyedSerial();
  private readonly env: Readonly<Record<string, string>>;

  constructor(private readonly opts: CloudHypervisorOptions) {
    this.env = { PATH: opts.hostPath };
  }

  private dirOf(id: string): string {
    return join(this.opts.stateDir, "sandboxes", id);
  }

  async prepareTemplate(template: TemplateImage, log: (line: string) => void): Promise<void> {
    if (template.built) await this.opts.findImage(template, log);
  }

  async start(spec: VmSpec): Promise<RunningVm> {
    const image = await this.opts.findImage(spec.template);
    return this.launch(spec, async (p, layout, ns) => {
      const disk = await createCowDisk(image.rootDisk, layout.diskNoExt, this.env);
      const api = p.api!;
      await api.create(
        buildVmConfig({
          cpuCount: spec.cpuCount,
          memoryMib: spec.memoryMib,
          kernel: image.kernel,
          ...(image.initramfs !== undefined ? { initramfs: image.initramfs } : {}),
          cmdline: this.cmdline(spec.sandboxId, image, p.net!, p.virtiofsd !== undefined),
          disk: { path: join(VM_ROOT, basename(disk.path)), format: disk.format },
          net: { tap: p.net!.tap, mac: p.net!.guestMac },
          ...(p.virtiofsd ? { share: { socket: ns.virtiofsSocket, tag: SHARE_TAG } } : {}),
          vsockSocket: ns.vsockSocket,
          serialFile: ns.serialLog,
        }),
      );
      await api.boot();
      return { disk, paused: false };
    });
  }

  /**
   * Starts a sandbox from a folder `snapshot` wrote: `hooks.beforeStart` fills its new share
   * before virtiofsd and CH start, its disk is copied (reflinked where the filesystem can)
   * into the new sandbox, and CH restores memory and devices from the folder. CH's paths are
   * the same in every sandbox (`VM_ROOT`), so the snapshot's config applies unchanged. A
   * running clone is then told its fresh entropy, the clock, its hostname (`guestHostname`)
   * and its sandbox id through the init's control port (best effort, logged: as after a
   * resume). With `resume` false the sandbox comes up paused (tests; not on the interface).
   */
  async restore(spec: VmSpec, snapshotDir: string, hooks: RestoreHooks, resume = true): Promise<RunningVm> {
    const meta = await readSnapshotMeta(snapshotDir);
    if (meta.templateId !== spec.template.templateId)
      throw new InvalidArgumentError(
        `snapshot of template '${meta.templateId}' cannot start as '${spec.template.templateId}'`,
      );
    const sized: VmSpec = { ...spec, cpuCount: meta.cpuCount, memoryMib: meta.memoryMib };
    return this.launch(
      sized,
      async (p, layout) => {
        const api = p.api!;
        const dest = join(layout.root, meta.disk);
        // A qcow2 overlay is small and names its base by absolute path: a plain copy will do.
        await copyFile(join(snapshotDir, meta.disk), dest, constants.COPYFILE_FICLONE);
        const disk: CowDisk = meta.disk.endsWith(".qcow2")
          ? { path: dest, format: "qcow2", method: "qcow2-overlay" }
          : { path: dest, format: "raw", method: "reflink" };
        const features = api.features!;
        await api.restore(
          buildRestoreConfig(snapshotDir, resume, features),
          memoryCallTimeoutMs(meta.memoryMib),
        );
        if (restoreLeavesPaused(resume, features)) await api.resume();
        return { disk, paused: !resume };
      },
      hooks,
    );
  }

  /**
   * The common part of start and restore: folder, share, cgroup, network namespace,
   * virtiofsd, the CH process and its API; `boot` then creates or restores the VM (`restored`:
   * the restore's hooks; the clone is told its new identity once it runs). Everything made is
   * removed again when any step fails.
   */
  private async launch(
    spec: VmSpec,
    boot: (p: Launching, host: VmLayout, ns: VmLayout) => Promise<{ disk: CowDisk; paused: boolean }>,
    restored?: RestoreHooks,
  ): Promise<RunningVm> {
    const id = spec.sandboxId;
    if (this.vms.has(id)) throw new VmExistsError(id);
    const dir = this.dirOf(id);
    if (existsSync(dir)) throw new VmExistsError(id);
    const host = vmLayout(dir);
    const ns = vmLayout(VM_ROOT);
    const p: Launching = { dir };
    const started = performance.now();
    await mkdir(dir, { recursive: true, mode: 0o700 });
    try {
      p.cgroup = await createCgroup(this.opts.cgroupParent, id, {
        memoryMib: spec.memoryMib + VMM_OVERHEAD_MIB,
        cpuCount: spec.cpuCount,
        pidsMax: this.opts.pidsMax,
        cpuWeight: spec.background ? "low" : "normal",
      });
      p.net = await createVmNetwork(this.opts.cgroupParent, id, this.opts.egress ?? true, this.env);
      // The share folder exists for every sandbox (`shareDir`), served only with a virtiofsd;
      // a restore fills it before anything can see it.
      await createShareDir(join(dir, "share"));
      if (restored) await restored.beforeStart(join(dir, "share"));
      if (this.opts.virtiofsd) {
        p.virtiofsd = await startVirtiofsd({
          binary: this.opts.virtiofsd,
          sharedDir: join(dir, "share"),
          socketPath: host.virtiofsSocket,
          logFile: join(dir, "virtiofsd.log"),
          env: this.env,
          cgroupProcs: p.cgroup.procsFiles,
        });
      }
      p.proc = this.spawnCh(dir, p.net, p.cgroup);
      const startDeadline = Date.now() + (this.opts.startTimeoutMs ?? 15_000);
      await waitForPath(host.apiSocket, p.proc, join(dir, "ch.log"), startDeadline - Date.now());
      p.api = new ChApiClient(host.apiSocket, { timeoutMs: this.opts.apiTimeoutMs ?? 10_000 });
      const ping = await pingUntilListening(p.api, p.proc, startDeadline);
      const tooOld = unsupportedReason(p.api.version!);
      // A host problem, not the caller's: Internal at the edge, the reason in the log.
      if (tooOld) throw new Error(tooOld);
      // A socket file left by a killed CH makes vm.boot / vm.restore fail (EADDRINUSE).
      await rm(host.vsockSocket, { force: true });
      const { disk, paused } = await boot(p, host, ns);
      const state = (await p.api.info()).state;
      const want: VmState = paused ? "Paused" : "Running";
      if (state !== want) throw new Error(`cloud-hypervisor reports the VM ${state}, expected ${want}`);
      p.front = await serveVsockFront(host.vsockFront, host.vsockSocket, this.opts.logger, id);
      const vm: RunningVm = {
        sandboxId: id,
        templateId: spec.template.templateId,
        vsockPath: p.front.path,
        startedAt: Date.now(),
      };
      const rec: ChVm = {
        vm,
        dir,
        layout: host,
        api: p.api,
        proc: p.proc,
        cgroup: p.cgroup,
        net: p.net,
        disk,
        virtiofsd: p.virtiofsd,
        front: p.front,
        hostname: guestHostname(id),
        cpuCount: spec.cpuCount,
        memoryMib: spec.memoryMib,
        stopping: false,
        paused,
        lastCpu: { cpuUsec: 0, atMs: vm.startedAt },
      };
      this.vms.set(id, rec);
      this.watchExit(rec);
      if (restored && !paused) await this.reseed(rec, true);
      this.opts.logger.info(
        {
          "sandbox.id": id,
          ch: ping.version,
          disk: disk.method,
          netns: p.net.netns,
          paused,
          ms: Math.round(performance.now() - started),
        },
        "cloud-hypervisor VM up",
      );
      return vm;
    } catch (err) {
      const log = await tailFile(join(dir, "ch.log"));
      await this.teardown(p).catch((e: Error) =>
        this.opts.logger.error({ "sandbox.id": id, err: e.message }, "cleanup after failed start failed"),
      );
      throw this.domainError(id, err, log);
    }
  }

  private cmdline(id: string, image: VmImage, net: VmNetwork, share: boolean): string {
    return [
      BASE_CMDLINE,
      image.cmdline,
      `dnah.id=${id}`,
      `dnah.hostname=${guestHostname(id)}`,
      guestNetCmdline(net),
      share ? `dnah.share=${SHARE_TAG}` : undefined,
    ]
      .filter((s): s is string => !!s)
      .join(" ");
  }

  /**
   * `ip netns exec <ns> setpriv --pdeathsig KILL unshare --mount …`: the VM's network
   * namespace, death with the vmm, and a private mount namespace where the sandbox folder is
   * bind-mounted at VM_ROOT before CH starts (every step execs, so the pid is CH's).
   */
  private spawnCh(dir: string, net: VmNetwork, cgroup: Cgroup): Supervised {
    return spawnSupervised({
      name: "cloud-hypervisor",
      command: "unshare",
      args: [
        "--mount",
        "--propagation",
        "private",
        "--",
        "/bin/sh",
        "-c",
        'mkdir -p "$2" && mount --bind "$1" "$2" && shift 2 && exec "$@"',
        "dnah-ch-ns",
        dir,
        VM_ROOT,
        this.opts.binary,
        "--api-socket",
        `path=${vmLayout(VM_ROOT).apiSocket}`,
        "-v",
      ],
      logFile: join(dir, "ch.log"),
      env: this.env,
      netns: net.netns,
      cgroupProcs: cgroup.procsFiles,
    });
  }

  private watchExit(rec: ChVm): void {
    void rec.proc.exited.then(async (reason) => {
      if (rec.stopping) return;
      this.opts.logger.warn(
        { "sandbox.id": rec.vm.sandboxId, reason, log: await tailFile(join(rec.dir, "ch.log"), 1024) },
        "cloud-hypervisor process ended",
      );
      for (const l of this.exitListeners) l(rec.vm.sandboxId, reason);
    });
  }

  /** Converts CH failures into the vmm's domain errors, keeping CH's chain as the cause. */
  private domainError(id: string, err: unknown, log = ""): Error {
    if (err instanceof ChUnreachableError && err.timedOut)
      return new RuntimeTimeoutError(`sandbox '${id}': ${err.message}`, { cause: err });
    if (err instanceof ChApiError || err instanceof ChUnreachableError)
      return new Error(`sandbox '${id}': ${err.message}${log ? ` (log: ${log.slice(-500)})` : ""}`, {
        cause: err,
      });
    return err as Error;
  }

  /** Runs `fn` after every earlier operation on the sandbox has settled. */
  private serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.ops.run(id, fn);
  }

  private running(id: string): ChVm {
    const rec = this.vms.get(id);
    if (!rec || rec.stopping || !rec.proc.alive()) throw new VmNotFoundError(id);
    return rec;
  }

  /** Calls CH and checks the state it reports afterwards. */
  private async transition(rec: ChVm, call: () => Promise<void>, want: VmState): Promise<void> {
    const id = rec.vm.sandboxId;
    try {
      await call();
    } catch (err) {
      // Map on the state CH reports, not on its status code (500 covers most failures).
      const state = await rec.api.info().then(
        (i) => i.state,
        () => undefined,
      );
      if (state === want) throw new VmStateError(`sandbox '${id}' is already ${want.toLowerCase()}`);
      throw this.domainError(id, err);
    }
    const state = (await rec.api.info()).state;
    if (state !== want)
      throw new Error(`sandbox '${id}': cloud-hypervisor reports ${state}, expected ${want}`);
  }

  pause(id: string): Promise<void> {
    return this.serial(id, async () => {
      const rec = this.running(id);
      if (rec.paused) throw new VmStateError(`sandbox '${id}' is already paused`);
      await this.transition(rec, () => rec.api.pause(), "Paused");
      rec.paused = true;
    });
  }

  resume(id: string): Promise<void> {
    return this.serial(id, async () => {
      const rec = this.running(id);
      if (!rec.paused) throw new VmStateError(`sandbox '${id}' is not paused`);
      await this.transition(rec, () => rec.api.resume(), "Running");
      rec.paused = false;
      await this.reseed(rec);
    });
  }

  /**
   * Fresh entropy and the host's clock for the guest (its init's control port): after a
   * resume the clock stood still (CH catches up only from v53 with kvm-clock), and restored
   * clones share their kernel's RNG state (CH has no VMGenID); `identity`: a restored clone
   * also gets its hostname and sandbox id. Best effort: logged.
   */
  private async reseed(rec: ChVm, identity = false): Promise<void> {
    const settled = identity
      ? tellGuest(
          rec.layout.vsockSocket,
          {
            seedHex: randomBytes(32).toString("hex"),
            clockSec: Date.now() / 1000,
            hostname: rec.hostname,
            sandboxId: rec.vm.sandboxId,
          },
          5_000,
        )
      : reseedGuest(rec.layout.vsockSocket);
    await settled.catch((err: Error) =>
      this.opts.logger.warn(
        { "sandbox.id": rec.vm.sandboxId, err: err.message },
        identity ? "restored guest not told its identity" : "guest not reseeded after resume",
      ),
    );
  }

  isPaused(id: string): boolean {
    return this.vms.get(id)?.paused === true;
  }

  /**
   * Writes a snapshot of a sandbox into `destDir` (exists, empty, owned by the snapshot layer;
   * never inside the sandboxes folder): pauses it if needed, copies its disk while paused (CH
   * does not snapshot disks), has CH write memory, devices and config (`config.json`,
   * `state.json`, `memory-ranges`: plain files), writes `dnah-snapshot.json`, runs
   * `hooks.whileStopped`, then resumes it unless it was paused before.
   */
  snapshot(id: string, destDir: string, hooks: SnapshotHooks): Promise<RuntimeSnapshot> {
    return this.serial(id, async () => {
      const rec = this.running(id);
      const dest = resolve(destDir);
      if (
        `${dest}/`.startsWith(`${VM_ROOT}/`) ||
        `${dest}/`.startsWith(`${join(this.opts.stateDir, "sandboxes")}/`)
      )
        throw new InvalidArgumentError("a snapshot folder may not be inside the sandboxes folder");
      const before = new Set(await readdir(dest));
      const wasPaused = rec.paused;
      try {
        if (!wasPaused) {
          await this.transition(rec, () => rec.api.pause(), "Paused");
          rec.paused = true;
        }
        const diskName = basename(rec.disk.path);
        await copyFile(rec.disk.path, join(dest, diskName), constants.COPYFILE_FICLONE);
        await rec.api
          .snapshot(buildSnapshotConfig(dest), memoryCallTimeoutMs(rec.memoryMib))
          .catch((err: unknown) => {
            throw this.domainError(id, err);
          });
        const meta: SnapshotMeta = {
          templateId: rec.vm.templateId,
          cpuCount: rec.cpuCount,
          memoryMib: rec.memoryMib,
          disk: diskName,
          chVersion: rec.api.version?.text ?? "unknown",
        };
        await writeFile(join(dest, SNAPSHOT_META), `${JSON.stringify(meta, null, 2)}\n`, { mode: 0o600 });
        await hooks.whileStopped(join(rec.dir, "share"));
        this.opts.logger.info(
          { "sandbox.id": id, "snapshot.dir": dest },
          "cloud-hypervisor snapshot written",
        );
        return {
          memory: true,
          templateId: meta.templateId,
          cpuCount: meta.cpuCount,
          memoryMib: meta.memoryMib,
        };
      } catch (err) {
        // What this call wrote goes; the folder is the snapshot layer's.
        const now = await readdir(dest).catch(() => [] as string[]);
        await Promise.all(
          now.filter((f) => !before.has(f)).map((f) => rm(join(dest, f), { recursive: true, force: true })),
        );
        throw err;
      } finally {
        if (!wasPaused && rec.paused && rec.proc.alive()) {
          await this.transition(rec, () => rec.api.resume(), "Running");
          rec.paused = false;
          await this.reseed(rec);
        }
      }
    });
  }

  /** CH's per-device I/O counters (block bytes/ops, net bytes/frames). */
  async counters(id: string): Promise<VmCounters> {
    const rec = this.running(id);
    return rec.api.counters().catch((err: unknown) => {
      throw this.domainError(id, err);
    });
  }

  async metrics(id: string): Promise<VmMetricsSample> {
    const rec = this.running(id);
    const [usage, diskUsed, diskTotal] = await Promise.all([
      rec.cgroup.usage(),
      diskAllocatedBytes(rec.disk.path),
      diskVirtualBytes(rec.disk, this.env).catch(() => 0),
    ]);
    const now = Date.now();
    const cur = { cpuUsec: usage.cpuUsec, atMs: now };
    const pct = cpuUsedPct(rec.lastCpu, cur, rec.cpuCount);
    rec.lastCpu = cur;
    const memTotal = rec.memoryMib * 1024 * 1024;
    return {
      timestampMs: now,
      cpuCount: rec.cpuCount,
      cpuUsedPct: pct,
      // The VMM's resident memory is the guest RAM it touched plus CH's own few MiB.
      memUsedBytes: Math.min(usage.memUsedBytes, memTotal),
      memTotalBytes: memTotal,
      memCacheBytes: usage.memCacheBytes,
      diskUsedBytes: diskUsed,
      diskTotalBytes: diskTotal,
    };
  }

  async setForeground(id: string): Promise<void> {
    const rec = this.vms.get(id);
    if (!rec) throw new VmNotFoundError(id);
    await rec.cgroup.setCpuWeight("normal");
  }

  destroy(id: string): Promise<void> {
    return this.serial(id, async () => {
      const rec = this.vms.get(id);
      if (!rec) {
        const dir = this.dirOf(id);
        if (!existsSync(dir) && !(await listVmNetworks(this.opts.cgroupParent)).includes(id))
          throw new VmNotFoundError(id);
        await this.reclaim(id);
        return;
      }
      rec.stopping = true;
      if (rec.proc.alive()) {
        // Graceful first (CH removes its sockets), bounded; then SIGKILL.
        await rec.api.shutdownVmm(GRACEFUL_EXIT_MS).catch(() => {});
        await Promise.race([rec.proc.exited, sleep(GRACEFUL_EXIT_MS)]);
      }
      await this.teardown(rec);
      this.vms.delete(id);
    });
  }

  /** Kills and removes what `p` holds: processes, cgroup, network namespace, folder. */
  private async teardown(p: Launching): Promise<void> {
    p.api?.close();
    await p.front?.close();
    await p.proc?.kill();
    await p.virtiofsd?.kill();
    if (p.cgroup) {
      await p.cgroup.killAll();
      await p.cgroup.remove();
    }
    if (p.net) await removeVmNetwork(p.net, this.env);
    await rm(p.dir, { recursive: true, force: true });
  }

  /** Removes the leftovers of a sandbox this process does not hold (a crashed vmm's). */
  private async reclaim(id: string): Promise<void> {
    const cgroup = openCgroup(this.opts.cgroupParent, id);
    await cgroup.killAll();
    await cgroup.remove();
    // The slot is only in the crashed process's memory; the namespace name is enough here.
    await removeVmNetwork({ netns: netnsName(this.opts.cgroupParent, id), slot: -1 }, this.env);
    await rm(this.dirOf(id), { recursive: true, force: true });
  }

  async reclaimOrphans(known: ReadonlySet<string>): Promise<string[]> {
    const names = new Set<string>([
      ...(await listCgroups(this.opts.cgroupParent)),
      ...(await listVmNetworks(this.opts.cgroupParent)),
    ]);
    try {
      for (const e of await readdir(join(this.opts.stateDir, "sandboxes"))) names.add(e);
    } catch {
      // no sandboxes folder yet
    }
    const reclaimed: string[] = [];
    for (const id of names) {
      if (known.has(id) || this.vms.has(id)) continue;
      await this.reclaim(id);
      reclaimed.push(id);
    }
    return reclaimed;
  }

  isRunning(id: string): boolean {
    const rec = this.vms.get(id);
    return rec !== undefined && !rec.stopping && rec.proc.alive();
  }

  /** The host side of the virtio-fs share (absent when the host has no virtiofsd). */
  shareDir(id: string): string {
    return join(this.dirOf(id), "share");
  }

  onExit(listener: (sandboxId: string, reason: string) => void): void {
    this.exitListeners.push(listener);
  }

  async dispose(): Promise<void> {
    await removeCgroupParent(this.opts.cgroupParent);
    await rmdir(join(this.opts.stateDir, "sandboxes")).catch(() => {
      // not empty (another vmm's sandboxes) or never created
    });
  }

  /** The CH process id of a sandbox (tests check its namespaces and that it is gone). */
  pid(id: string): number | undefined {
    return this.vms.get(id)?.proc.proc.pid;
  }
}

/**
 * The socket file appears at bind(), a moment before listen(): a connect in between is
 * refused. Retries only that, while CH lives, until the deadline.
 */
async function pingUntilListening(api: ChApiClient, proc: Supervised, deadline: number) {
  for (let wait = 5; ; wait = Math.min(wait * 2, 100)) {
    try {
      return await api.ping();
    } catch (err) {
      const refused = (err as { cause?: NodeJS.ErrnoException }).cause?.code === "ECONNREFUSED";
      if (!(err instanceof ChUnreachableError) || !refused || !proc.alive() || Date.now() > deadline)
        throw err;
    }
    await sleep(wait);
  }
}

export async function readSnapshotMeta(dir: string): Promise<SnapshotMeta> {
  let meta: SnapshotMeta;
  try {
    meta = JSON.parse(await readFile(join(dir, SNAPSHOT_META), "utf8")) as SnapshotMeta;
  } catch (err) {
    throw new InvalidArgumentError(`${dir} is not a dnah snapshot: ${(err as Error).message}`);
  }
  if (
    typeof meta.disk !== "string" ||
    !/^rootfs\.(raw|qcow2)$/.test(meta.disk) ||
    !Number.isInteger(meta.memoryMib) ||
    !Number.isInteger(meta.cpuCount)
  )
    throw new InvalidArgumentError(`${dir}/${SNAPSHOT_META} is malformed`);
  return meta;
}
