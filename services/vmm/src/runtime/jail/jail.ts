import { type ChildProcess, spawn } from "node:child_process";
import { type Dirent, existsSync } from "node:fs";
import { lstat, mkdir, readdir, readFile, rm, rmdir, statfs, symlink, writeFile } from "node:fs/promises";
import { totalmem } from "node:os";
import { join } from "node:path";
import type { Logger } from "@dnah/platform";
import { InvalidArgumentError, VmExistsError, VmNotFoundError, VmStateError } from "../../domain/errors.js";
import { tarCreate, tarExtract } from "../../snapshot/tar.js";
import { KeyedSerial } from "../keyed-serial.js";
import type {
  RestoreHooks,
  RunningVm,
  Runtime,
  RuntimeSnapshot,
  SnapshotHooks,
  VmMetricsSample,
  VmSpec,
} from "../runtime.js";
import { createShareDir, SHARE_MOUNT, shareFolder } from "../share.js";
import { guestHostname } from "../vm/guest-control.js";
import {
  type Cgroup,
  cpuUsedPct,
  createCgroup,
  listCgroups,
  openCgroup,
  removeCgroupParent,
} from "./cgroup.js";
import { mountOverlay, mountSizedDisk, mountsUnder, unmount } from "./mounts.js";

export interface JailOptions {
  /** Per-sandbox folders live in `<stateDir>/sandboxes/<id>`. */
  stateDir: string;
  /** The agent's Node runtime: `bin/node` plus `lib/` with its loader and libraries. */
  nodeRuntimeDir: string;
  /** Folder holding the bundled agent, `agent.mjs`. */
  agentDir: string;
  /** cgroup parent name for all sandboxes of this host. */
  cgroupParent: string;
  pidsMax: number;
  /** Size of each sandbox's writable layer (a loop-mounted ext4 image); 0 = no limit. */
  diskMib?: number;
  /** Size of each sandbox's share, a filesystem of its own (`createShareDir`); 0 = a plain folder. */
  shareMib?: number;
  /** PATH for the host tools (sh, bwrap). */
  hostPath: string;
  logger: Logger;
  /** A freeze or thaw that takes longer fails (default 10 s). */
  freezeTimeoutMs?: number;
}

const FREEZE_TIMEOUT_MS = 10_000;
/** The jail's snapshot files: its overlay's upper dir, and what it was. */
const DISK_TAR = "disk.tar";
const JAIL_JSON = "jail.json";

interface JailSnapshotInfo {
  runtime: "jail";
  templateId: string;
  cpuCount: number;
  memoryMib: number;
  createdAt: string;
}

/** What `start` does differently for a restore. */
interface LaunchSteps {
  /** Fills the (empty) upper dir before the overlay is mounted. */
  upper?: (upperDir: string) => Promise<void>;
  /** Fills the (empty) share before the jail's first process starts. */
  share?: (shareDir: string) => Promise<void>;
}
/** Where the sandbox sees its share folder, as in a microVM. */
/**
 * Run in the jail before the agent: writes the hostname (`$1`) to /etc/hostname and maps it in
 * /etc/hosts on a line of its own (marked, replaced at every start, so a restored clone's
 * replaces its source's; other lines are the user's), then runs the rest of its arguments.
 */
const NAME_HOST = `h=$1; shift
echo "$h" > /etc/hostname 2>/dev/null
{ grep -v ' # dnah-hostname$' /etc/hosts 2>/dev/null; echo "127.0.1.1 $h # dnah-hostname"; } > /etc/.hosts.dnah && mv -f /etc/.hosts.dnah /etc/hosts 2>/dev/null
exec "$@"`;

/** The disk-use walk of a sandbox's upper dir stops after this many entries or this long. */
const DISK_WALK_MAX_ENTRIES = 200_000;
const DISK_WALK_MAX_MS = 2_000;

/**
 * Capabilities the agent (root inside the jail) keeps, and the bounding set for everything it
 * starts, `sudo` included: Docker's default set. No CAP_SYS_ADMIN, so no mounts, no
 * namespace tricks, no raw devices.
 */
const CAPS = [
  "chown",
  "dac_override",
  "fsetid",
  "fowner",
  "mknod",
  "setgid",
  "setuid",
  "setfcap",
  "setpcap",
  "net_bind_service",
  "sys_chroot",
  "kill",
  "audit_write",
] as const;

interface Jail {
  readonly vm: RunningVm;
  readonly proc: ChildProcess;
  readonly cgroup: Cgroup;
  readonly dir: string;
  readonly cpuCount: number;
  readonly memoryMib: number;
  stopping: boolean;
  paused: boolean;
  /** The previous metrics sample, for the CPU use between samples. */
  lastCpu: { cpuUsec: number; atMs: number };
}

/**
 * The jail runtime: bubblewrap + overlayfs + its own network namespace + a cgroup per
 * sandbox. The guest agent runs as the child of the jail's PID 1 and listens on a unix socket
 * that speaks the hybrid-vsock handshake, so the host dials it exactly as it dials a microVM.
 * Weaker than a VM (one kernel is shared), which `dnah dev` says when it starts.
 */
export class JailRuntime implements Runtime {
  readonly name = "jail" as const;
  readonly isolation =
    "jail (bubblewrap + overlayfs + network namespace + cgroup): processes are isolated, but sandboxes share the host kernel; use a microVM runtime for untrusted code";
  private readonly jails = new Map<string, Jail>();
  private readonly exitListeners: Array<(id: string, reason: string) => void> = [];
  /** The tail of each sandbox's queue of pause / resume / destroy, so they never overlap. */
  private readonly ops = new KeyedSerial();

  constructor(private readonly opts: JailOptions) {}

  private dirOf(id: string): string {
    return join(this.opts.stateDir, "sandboxes", id);
  }

  /** The jail mounts a template's layers as they are: there is nothing to make. */
  async prepareTemplate(): Promise<void> {}

  start(spec: VmSpec): Promise<RunningVm> {
    return this.launch(spec, {});
  }

  private async launch(spec: VmSpec, steps: LaunchSteps): Promise<RunningVm> {
    const { sandboxId: id } = spec;
    if (this.jails.has(id)) throw new VmExistsError(id);
    const dir = this.dirOf(id);
    if (existsSync(dir)) throw new VmExistsError(id);
    const rootfs = join(dir, "rootfs");
    const vsockDir = join(dir, "vsock");
    const share = this.shareDir(id);
    await mkdir(dir, { recursive: true });
    await Promise.all([mkdir(rootfs), mkdir(vsockDir, { mode: 0o700 })]);
    let cgroup: Cgroup | undefined;
    try {
      const shareMib = this.opts.shareMib ?? 0;
      await createShareDir(
        share,
        shareMib > 0 ? { sizeMib: shareMib, hostPath: this.opts.hostPath } : undefined,
      );
      await this.makeLayer(dir);
      await steps.upper?.(join(dir, "upper"));
      await steps.share?.(share);
      await mountOverlay(
        [...(spec.template.layers ?? []), spec.template.rootfsDir],
        join(dir, "upper"),
        join(dir, "work"),
        rootfs,
      );
      cgroup = await createCgroup(this.opts.cgroupParent, id, {
        memoryMib: spec.memoryMib,
        cpuCount: spec.cpuCount,
        pidsMax: this.opts.pidsMax,
        cpuWeight: spec.background ? "low" : "normal",
      });
      const { proc, stderrTail } = this.spawnJail(id, rootfs, vsockDir, share, cgroup);
      const vm: RunningVm = {
        sandboxId: id,
        templateId: spec.template.templateId,
        vsockPath: join(vsockDir, "vsock.sock"),
        startedAt: Date.now(),
      };
      const jail: Jail = {
        vm,
        proc,
        cgroup,
        dir,
        cpuCount: spec.cpuCount,
        memoryMib: spec.memoryMib,
        stopping: false,
        paused: false,
        lastCpu: { cpuUsec: 0, atMs: vm.startedAt },
      };
      this.jails.set(id, jail);
      proc.on("exit", (code, signal) => {
        if (jail.stopping) return;
        const reason = signal ? `killed by ${signal}` : `exited with code ${code}`;
        this.opts.logger.warn(
          { "sandbox.id": id, reason, stderr: stderrTail() },
          "sandbox runtime process ended",
        );
        for (const l of this.exitListeners) l(id, reason);
      });
      return vm;
    } catch (err) {
      await this.cleanup(id, dir, cgroup).catch((cleanupErr: Error) =>
        this.opts.logger.error({ "sandbox.id": id, err: cleanupErr }, "cleanup after failed start failed"),
      );
      throw err;
    }
  }

  /**
   * The writable layer, `<dir>/upper` and `<dir>/work`: with a disk limit they live in a
   * filesystem of that size mounted at `<dir>/layer` (the two names link into it, so every
   * path that reads `upper` is unchanged); without one, plain folders on the state disk.
   */
  private async makeLayer(dir: string): Promise<void> {
    const sizeMib = this.opts.diskMib ?? 0;
    if (sizeMib === 0) {
      await Promise.all([mkdir(join(dir, "upper")), mkdir(join(dir, "work"))]);
      return;
    }
    const layer = join(dir, "layer");
    await mkdir(layer);
    await mountSizedDisk(join(dir, "disk.img"), layer, sizeMib, this.opts.hostPath);
    await Promise.all([mkdir(join(layer, "upper")), mkdir(join(layer, "work"))]);
    await Promise.all([symlink("layer/upper", join(dir, "upper")), symlink("layer/work", join(dir, "work"))]);
  }

  private spawnJail(
    id: string,
    rootfs: string,
    vsockDir: string,
    share: string,
    cgroup: Cgroup,
  ): { proc: ChildProcess; stderrTail: () => string } {
    const node = "/opt/dnah/node";
    const args = [
      // Join the cgroup before bubblewrap forks, so nothing the sandbox starts escapes it.
      "-c",
      'for f in $DNAH_CGROUP_PROCS; do echo $$ > "$f"; done; exec "$@"',
      "dnah-jail",
      "bwrap",
      ...["--bind", rootfs, "/"],
      ...["--proc", "/proc", "--dev", "/dev"],
      ...["--ro-bind", this.opts.nodeRuntimeDir, node],
      ...["--ro-bind", this.opts.agentDir, "/opt/dnah/agent"],
      ...["--bind", vsockDir, "/run/dnah"],
      // Lives in the jail's mount namespace only: nothing to unmount on the host.
      ...["--bind", share, SHARE_MOUNT],
      "--unshare-pid",
      "--unshare-ipc",
      "--unshare-uts",
      "--unshare-net",
      "--unshare-cgroup-try",
      ...["--hostname", guestHostname(id)],
      "--die-with-parent",
      "--new-session",
      "--clearenv",
      ...["--setenv", "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
      ...["--setenv", "HOME", "/root"],
      ...["--setenv", "DNAH_SANDBOX_ID", id],
      ...["--chdir", "/"],
      "--",
      // Inside the jail (its own paths: a link in a restored disk cannot point at the host's):
      // the hostname in /etc/hostname and /etc/hosts, so sudo resolves it. Best effort.
      ...["/bin/sh", "-c", NAME_HOST, "dnah-jail-init", guestHostname(id)],
      "/usr/bin/setpriv",
      `--bounding-set=-all,${CAPS.map((c) => `+${c}`).join(",")}`,
      "--",
      `${node}/lib/ld-linux-x86-64.so.2`,
      ...["--library-path", `${node}/lib`],
      `${node}/bin/node`,
      "--no-warnings",
      "/opt/dnah/agent/agent.mjs",
      ...["--listen-unix", "/run/dnah/vsock.sock"],
    ];
    const proc = spawn("/bin/sh", args, {
      env: {
        PATH: this.opts.hostPath,
        DNAH_CGROUP_PROCS: cgroup.procsFiles.join(" "),
      },
      stdio: ["ignore", "ignore", "pipe"],
    });
    // The agent logs to stderr; keep the end of it for when the jail dies unexpectedly.
    let tail = "";
    proc.stderr?.on("data", (c: Buffer) => {
      tail = (tail + c.toString("utf8")).slice(-4096);
    });
    return { proc, stderrTail: () => tail.trim() };
  }

  /** Runs `fn` after every earlier operation on the sandbox has settled. */
  private serial<T>(id: string, fn: () => Promise<T>): Promise<T> {
    return this.ops.run(id, fn);
  }

  destroy(id: string): Promise<void> {
    return this.serial(id, () => this.destroyNow(id));
  }

  private async destroyNow(id: string): Promise<void> {
    const jail = this.jails.get(id);
    if (!jail) {
      if (existsSync(this.dirOf(id))) {
        await this.cleanup(id, this.dirOf(id), openCgroup(this.opts.cgroupParent, id));
        return;
      }
      throw new VmNotFoundError(id);
    }
    jail.stopping = true;
    await this.cleanup(id, jail.dir, jail.cgroup);
    this.jails.delete(id);
  }

  private async cleanup(id: string, dir: string, cgroup: Cgroup | undefined): Promise<void> {
    const jail = this.jails.get(id);
    if (jail && jail.proc.exitCode === null && jail.proc.signalCode === null) {
      const exited = new Promise((r) => jail.proc.once("exit", r));
      jail.proc.kill("SIGKILL");
      // A frozen process only acts on the SIGKILL once thawed; without this we wait forever.
      if (jail.paused) {
        await jail.cgroup.thaw(this.freezeTimeoutMs);
        jail.paused = false;
      }
      await exited;
    }
    if (cgroup) {
      await cgroup.killAll();
      await cgroup.remove();
    }
    for (const m of (await mountsUnder(dir)).sort().reverse()) await unmount(m);
    await rm(dir, { recursive: true, force: true });
  }

  async reclaimOrphans(known: ReadonlySet<string>): Promise<string[]> {
    const base = join(this.opts.stateDir, "sandboxes");
    const names = new Set<string>(await listCgroups(this.opts.cgroupParent));
    try {
      for (const e of await readdir(base)) names.add(e);
    } catch {
      // no sandboxes folder yet
    }
    const reclaimed: string[] = [];
    for (const id of names) {
      if (known.has(id) || this.jails.has(id)) continue;
      await this.cleanup(id, join(base, id), openCgroup(this.opts.cgroupParent, id));
      reclaimed.push(id);
    }
    return reclaimed;
  }

  private get freezeTimeoutMs(): number {
    return this.opts.freezeTimeoutMs ?? FREEZE_TIMEOUT_MS;
  }

  private running(id: string): Jail {
    const jail = this.jails.get(id);
    if (!jail || jail.stopping) throw new VmNotFoundError(id);
    return jail;
  }

  pause(id: string): Promise<void> {
    return this.serial(id, async () => {
      const jail = this.running(id);
      if (jail.paused) throw new VmStateError(`sandbox '${id}' is already paused`);
      await jail.cgroup.freeze(this.freezeTimeoutMs);
      jail.paused = true;
    });
  }

  resume(id: string): Promise<void> {
    return this.serial(id, async () => {
      const jail = this.running(id);
      if (!jail.paused) throw new VmStateError(`sandbox '${id}' is not paused`);
      await jail.cgroup.thaw(this.freezeTimeoutMs);
      jail.paused = false;
    });
  }

  /**
   * The jail has no memory image: a snapshot is its disk (the overlay's upper dir, whiteouts
   * and opaque-dir xattrs included) and its share, taken while its processes are frozen so
   * both are consistent. A paused jail stays frozen; a running one is thawed after.
   */
  snapshot(id: string, destDir: string, hooks: SnapshotHooks): Promise<RuntimeSnapshot> {
    return this.serial(id, async () => {
      const jail = this.running(id);
      const wasPaused = jail.paused;
      if (!wasPaused) await jail.cgroup.freeze(this.freezeTimeoutMs);
      try {
        await tarCreate(join(jail.dir, "upper"), join(destDir, DISK_TAR), this.opts.hostPath);
        const info: JailSnapshotInfo = {
          runtime: "jail",
          templateId: jail.vm.templateId,
          cpuCount: jail.cpuCount,
          memoryMib: jail.memoryMib,
          createdAt: new Date().toISOString(),
        };
        await writeFile(join(destDir, JAIL_JSON), `${JSON.stringify(info, null, 2)}\n`, { mode: 0o600 });
        await hooks.whileStopped(this.shareDir(id));
      } finally {
        if (!wasPaused) await jail.cgroup.thaw(this.freezeTimeoutMs);
      }
      return {
        memory: false,
        templateId: jail.vm.templateId,
        cpuCount: jail.cpuCount,
        memoryMib: jail.memoryMib,
      };
    });
  }

  /**
   * A new jail whose upper dir is the snapshot's disk and whose share is filled by the
   * snapshot layer before anything runs. Its processes start fresh: the agent, and the
   * template's start command under the agent's supervision.
   */
  async restore(spec: VmSpec, snapshotDir: string, hooks: RestoreHooks): Promise<RunningVm> {
    let info: JailSnapshotInfo;
    try {
      info = JSON.parse(await readFile(join(snapshotDir, JAIL_JSON), "utf8")) as JailSnapshotInfo;
    } catch (err) {
      throw new InvalidArgumentError(`not a jail snapshot: ${JAIL_JSON}: ${(err as Error).message}`);
    }
    if (info.runtime !== "jail")
      throw new InvalidArgumentError(`not a jail snapshot (runtime ${info.runtime})`);
    if (info.templateId !== spec.template.templateId)
      throw new InvalidArgumentError(
        `snapshot is of template '${info.templateId}', restore asked for '${spec.template.templateId}'`,
      );
    return this.launch(spec, {
      upper: (upper) => tarExtract(join(snapshotDir, DISK_TAR), upper, this.opts.hostPath),
      share: (share) => hooks.beforeStart(share),
    });
  }

  /** The cgroup freezer keeps a paused jail's memory resident. */
  readonly pauseReleasesMemory = false;

  isPaused(id: string): boolean {
    return this.jails.get(id)?.paused === true;
  }

  async metrics(id: string): Promise<VmMetricsSample> {
    const jail = this.running(id);
    const upper = join(jail.dir, "upper");
    // A sized layer is its own filesystem: its use is one statfs, not a walk of the tree.
    const sized = (this.opts.diskMib ?? 0) > 0;
    const [usage, walked, fs] = await Promise.all([
      jail.cgroup.usage(),
      sized ? 0 : diskUsage(upper, this.opts.logger, id),
      statfs(upper),
    ]);
    const diskUsed = sized ? (fs.blocks - fs.bfree) * fs.bsize : walked;
    const now = Date.now();
    const cur = { cpuUsec: usage.cpuUsec, atMs: now };
    const pct = cpuUsedPct(jail.lastCpu, cur, jail.cpuCount);
    jail.lastCpu = cur;
    return {
      timestampMs: now,
      cpuCount: jail.cpuCount,
      cpuUsedPct: pct,
      memUsedBytes: usage.memUsedBytes,
      memTotalBytes: usage.memLimitBytes ?? totalmem(),
      memCacheBytes: usage.memCacheBytes,
      diskUsedBytes: diskUsed,
      diskTotalBytes: fs.blocks * fs.bsize,
    };
  }

  async setForeground(id: string): Promise<void> {
    const jail = this.jails.get(id);
    if (!jail) throw new VmNotFoundError(id);
    await jail.cgroup.setCpuWeight("normal");
  }

  async dispose(): Promise<void> {
    await removeCgroupParent(this.opts.cgroupParent);
    await rmdir(join(this.opts.stateDir, "sandboxes")).catch(() => {
      // not empty (sandboxes of another vmm) or never created
    });
  }

  isRunning(id: string): boolean {
    const jail = this.jails.get(id);
    return jail !== undefined && jail.proc.exitCode === null && jail.proc.signalCode === null;
  }

  onExit(listener: (sandboxId: string, reason: string) => void): void {
    this.exitListeners.push(listener);
  }

  shareDir(id: string): string {
    return shareFolder(this.dirOf(id), (this.opts.shareMib ?? 0) > 0);
  }

  /** Pids of every process in a sandbox (tests use it to prove nothing leaks). */
  async pids(id: string): Promise<number[]> {
    return openCgroup(this.opts.cgroupParent, id).pids();
  }
}

/**
 * Bytes allocated to the files under `dir` (what a sandbox wrote to its overlay's upper
 * layer). The walk is bounded in entries and time; past either it returns what it counted
 * so far (a lower bound) and says so in the log.
 */
async function diskUsage(dir: string, logger: Logger, sandboxId: string): Promise<number> {
  const deadline = Date.now() + DISK_WALK_MAX_MS;
  const stack = [dir];
  let bytes = 0;
  let entries = 0;
  while (stack.length > 0) {
    if (entries >= DISK_WALK_MAX_ENTRIES || Date.now() > deadline) {
      logger.debug(
        { "sandbox.id": sandboxId, entries },
        "disk use walk stopped early; reporting a lower bound",
      );
      break;
    }
    const d = stack.pop()!;
    let list: Dirent[];
    try {
      list = await readdir(d, { withFileTypes: true });
    } catch {
      continue; // removed while we walk
    }
    for (const e of list) {
      entries++;
      const p = join(d, e.name);
      if (e.isDirectory()) stack.push(p);
      try {
        const st = await lstat(p);
        bytes += st.blocks * 512;
      } catch {
        // removed while we walk
      }
    }
  }
  return bytes;
}
