import { type ChildProcess, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readdir, rm, rmdir } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "@dnah/platform";
import { VmExistsError, VmNotFoundError } from "../../domain/errors.js";
import type { RunningVm, Runtime, VmSpec } from "../runtime.js";
import { type Cgroup, createCgroup, listCgroups, openCgroup, removeCgroupParent } from "./cgroup.js";
import { mountOverlay, mountsUnder, unmount } from "./mounts.js";

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
  /** PATH for the host tools (sh, bwrap). */
  hostPath: string;
  logger: Logger;
}

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
  stopping: boolean;
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

  constructor(private readonly opts: JailOptions) {}

  private dirOf(id: string): string {
    return join(this.opts.stateDir, "sandboxes", id);
  }

  async start(spec: VmSpec): Promise<RunningVm> {
    const { sandboxId: id } = spec;
    if (this.jails.has(id)) throw new VmExistsError(id);
    const dir = this.dirOf(id);
    if (existsSync(dir)) throw new VmExistsError(id);
    const rootfs = join(dir, "rootfs");
    const vsockDir = join(dir, "vsock");
    await mkdir(join(dir, "upper"), { recursive: true });
    await Promise.all([mkdir(join(dir, "work")), mkdir(rootfs), mkdir(vsockDir, { mode: 0o700 })]);
    let cgroup: Cgroup | undefined;
    try {
      await mountOverlay(spec.template.rootfsDir, join(dir, "upper"), join(dir, "work"), rootfs);
      cgroup = await createCgroup(this.opts.cgroupParent, id, {
        memoryMib: spec.memoryMib,
        cpuCount: spec.cpuCount,
        pidsMax: this.opts.pidsMax,
        cpuWeight: spec.background ? "low" : "normal",
      });
      const { proc, stderrTail } = this.spawnJail(id, rootfs, vsockDir, cgroup);
      const vm: RunningVm = {
        sandboxId: id,
        templateId: spec.template.templateId,
        vsockPath: join(vsockDir, "vsock.sock"),
        startedAt: Date.now(),
      };
      const jail: Jail = { vm, proc, cgroup, dir, stopping: false };
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

  private spawnJail(
    id: string,
    rootfs: string,
    vsockDir: string,
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
      "--unshare-pid",
      "--unshare-ipc",
      "--unshare-uts",
      "--unshare-net",
      "--unshare-cgroup-try",
      ...["--hostname", "sandbox"],
      "--die-with-parent",
      "--new-session",
      "--clearenv",
      ...["--setenv", "PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
      ...["--setenv", "HOME", "/root"],
      ...["--setenv", "DNAH_SANDBOX_ID", id],
      ...["--chdir", "/"],
      "--",
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

  async destroy(id: string): Promise<void> {
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

  /** Pids of every process in a sandbox (tests use it to prove nothing leaks). */
  async pids(id: string): Promise<number[]> {
    return openCgroup(this.opts.cgroupParent, id).pids();
  }
}
