import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, realpath, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { TemplateStepKind } from "@dnah/proto/dnah/vmm/v1/vmm_pb";
import { InvalidArgumentError, TemplateBuildError, TemplateNotFoundError } from "../domain/errors.js";
import { createCgroup } from "../runtime/jail/cgroup.js";
import { mountOverlay, unmount } from "../runtime/jail/mounts.js";
import {
  createVmNetwork,
  removeVmNetwork,
  restrictNamespaceOutput,
  type VmNetwork,
} from "../runtime/vm/network.js";
import { RECIPES, recipeKey, START_SPEC_PATH, type StartSpec } from "./recipes.js";
import {
  type BuildState,
  contextPath,
  copyDestination,
  INITIAL_STATE,
  layerKey,
  makesLayer,
  nextState,
  type Step,
  shellQuote,
  startCommandWithEnv,
  stepName,
  workdirPath,
} from "./steps.js";
import {
  LAYER_READY,
  layerFsDir,
  layerReady,
  layersDir,
  readUserTemplate,
  resolveTemplate,
  type UserTemplateRecord,
  writeUserTemplate,
} from "./user-templates.js";

export interface BuilderOptions {
  readonly cacheDir: string;
  readonly mirror: string;
  /** The vmm's cgroup parent: builds get `<parent>/build-<id>` and netns scope `<parent>-build`. */
  readonly cgroupParent: string;
  readonly hostPath: string;
  /** Limits of a build jail. */
  readonly memoryMib: number;
  readonly cpuCount: number;
  readonly pidsMax: number;
  /** A step running longer is killed and the build fails. */
  readonly stepTimeoutMs: number;
}

export interface BuildRequest {
  readonly templateId: string;
  readonly baseTemplateId: string;
  readonly steps: readonly Step[];
  readonly start?: { command: string; readyPort: number; readyCommand: string };
  readonly files: ReadonlyMap<string, Uint8Array>;
  readonly force: boolean;
}

export interface BuildResult {
  readonly buildKey: string;
  readonly cachedSteps: number;
  readonly builtSteps: number;
  readonly sizeBytes: number;
  readonly durationMs: number;
}

export type BuildLog = (level: "info" | "warn" | "error", message: string) => void;

const HOST_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt";

/** Lines a step may print before the log keeps only a count of the rest. */
const MAX_STEP_LOG_LINES = 5000;
const MAX_LINE = 4096;
/** overlayfs takes its options in one page: about 60 layers of our path length. */
const MAX_LAYERS = 60;

/**
 * Builds templates from steps. Each file-changing step runs in a build jail: an overlay of
 * the base rootfs and the layers so far with a fresh upper folder, bubblewrap (own mount, pid,
 * ipc and uts namespaces), a cgroup with limits, and a network namespace whose only way out is
 * the host's uplink with private, link-local and host addresses dropped. On success the upper
 * folder is renamed into the layer cache under the step's key; a later build with the same
 * key reuses it.
 */
export class TemplateBuilder {
  /** Layer keys being built right now: a second build of the same key waits for the first. */
  private readonly building = new Map<string, Promise<void>>();

  constructor(private readonly opts: BuilderOptions) {}

  /**
   * Removes step folders a killed build left (`layers/.tmp-*`) once they are older than a
   * step may run: younger ones may belong to another vmm sharing this cache. Returns them.
   */
  async removeStale(now = Date.now()): Promise<string[]> {
    const dir = layersDir(this.opts.cacheDir);
    const names = await readdir(dir).catch(() => [] as string[]);
    const removed: string[] = [];
    for (const n of names.filter((x) => x.startsWith(".tmp-"))) {
      const st = await stat(join(dir, n)).catch(() => undefined);
      if (!st || now - st.mtimeMs < this.opts.stepTimeoutMs + 60_000) continue;
      await unmount(join(dir, n, "merged")).catch(() => {});
      await rm(join(dir, n), { recursive: true, force: true }).catch(() => {});
      removed.push(n);
    }
    return removed;
  }

  async build(req: BuildRequest, log: BuildLog, signal: AbortSignal): Promise<BuildResult> {
    const started = performance.now();
    const base = await this.baseOf(req.baseTemplateId);
    let parentKey = base.key;
    let state: BuildState = base.state;
    const layers = [...base.layers];
    let cached = 0;
    let built = 0;
    let forced = req.force;
    const nonce = `forced:${randomBytes(8).toString("hex")}`;
    log("info", `building '${req.templateId}' from '${req.baseTemplateId}' (${req.steps.length} steps)`);
    for (const [i, step] of req.steps.entries()) {
      signal.throwIfAborted();
      forced ||= step.force;
      const label = `step ${i + 1}/${req.steps.length} ${stepName(step.kind)} ${describe(step)}`;
      if (!makesLayer(step)) {
        state = nextState(state, step);
        log("info", label);
        continue;
      }
      // A forced step reruns into a layer of its own (its output may differ: a newer package),
      // never over the cached one, which sandboxes may have mounted.
      const cachedKey = layerKey(parentKey, state, step);
      const key = forced ? layerKey(cachedKey, state, { ...step, args: [...step.args, nonce] }) : cachedKey;
      if (!forced && layerReady(this.opts.cacheDir, key)) {
        log("info", `${label} (cached)`);
        cached += 1;
      } else {
        if (layers.length + 1 > MAX_LAYERS)
          throw new InvalidArgumentError(`a template has at most ${MAX_LAYERS} file-changing steps`);
        log("info", label);
        const t = performance.now();
        await this.once(key, () =>
          this.runStep(
            key,
            [...[...layers].reverse().map((k) => layerFsDir(this.opts.cacheDir, k)), base.rootfsDir],
            state,
            step,
            req.files,
            log,
            signal,
            label,
          ),
        );
        log("info", `${label} done in ${((performance.now() - t) / 1000).toFixed(1)} s`);
        built += 1;
      }
      layers.push(key);
      parentKey = key;
      state = nextState(state, step);
    }
    // The start command lives in the image, where the agent reads it at boot.
    let start: UserTemplateRecord["start"];
    if (req.start && req.start.command.trim() !== "") {
      start = {
        command: startCommandWithEnv(req.start.command, state.env),
        user: state.user,
        cwd: state.workdir,
        ...(req.start.readyPort > 0 ? { readyPort: req.start.readyPort } : {}),
        ...(req.start.readyCommand.trim() !== "" ? { readyCommand: req.start.readyCommand } : {}),
      };
      const key = layerKey(parentKey, state, {
        kind: TemplateStepKind.UNSPECIFIED,
        args: ["start", JSON.stringify(start)],
        filesHash: "",
        force: false,
      });
      if (!layerReady(this.opts.cacheDir, key)) await this.once(key, () => this.writeStartLayer(key, start!));
      layers.push(key);
      parentKey = key;
    }
    signal.throwIfAborted();
    const rec: UserTemplateRecord = {
      templateId: req.templateId,
      baseTemplateId: base.rootTemplateId,
      buildKey: parentKey,
      layers,
      env: state.env,
      workdir: state.workdir,
      user: state.user,
      ...(start ? { start } : {}),
      builtAt: new Date().toISOString(),
    };
    await mkdir(join(this.opts.cacheDir, "user-templates"), { recursive: true });
    await writeUserTemplate(this.opts.cacheDir, rec);
    const sizeBytes = await this.sizeOf(layers);
    const durationMs = Math.round(performance.now() - started);
    log(
      "info",
      `template '${req.templateId}' ready: ${cached} cached, ${built} built, ${(durationMs / 1000).toFixed(1)} s`,
    );
    return { buildKey: parentKey, cachedSteps: cached, builtSteps: built, sizeBytes, durationMs };
  }

  /** The starting point: a built-in template's rootfs, or a user template's layers and state. */
  private async baseOf(baseId: string): Promise<{
    key: string;
    state: BuildState;
    layers: string[];
    rootTemplateId: string;
    rootfsDir: string;
  }> {
    const recipe = RECIPES[baseId];
    if (recipe) {
      const t = await resolveTemplate(this.opts.cacheDir, baseId, this.opts.mirror);
      if (!t) throw new TemplateNotFoundError(baseId);
      return {
        key: `builtin:${baseId}:${recipeKey(recipe, this.opts.mirror)}`,
        state: INITIAL_STATE,
        layers: [],
        rootTemplateId: baseId,
        rootfsDir: t.image.rootfsDir,
      };
    }
    const rec = await readUserTemplate(this.opts.cacheDir, baseId);
    const t = rec && (await resolveTemplate(this.opts.cacheDir, baseId, this.opts.mirror));
    if (!rec || !t) throw new TemplateNotFoundError(baseId);
    // The base's start layer is not carried over: a template sets its own start command.
    const layers = rec.start ? rec.layers.slice(0, -1) : [...rec.layers];
    const key = layers.at(-1) ?? `builtin:${rec.baseTemplateId}`;
    return {
      key,
      state: { env: rec.env, workdir: rec.workdir, user: rec.user },
      layers,
      rootTemplateId: rec.baseTemplateId,
      rootfsDir: t.image.rootfsDir,
    };
  }

  /** Runs `fn` once per key at a time; a concurrent build of the same layer waits for it. */
  private async once(key: string, fn: () => Promise<void>): Promise<void> {
    const running = this.building.get(key);
    if (running) {
      await running.catch(() => {});
      if (layerReady(this.opts.cacheDir, key)) return;
    }
    const p = fn();
    this.building.set(key, p);
    try {
      await p;
    } finally {
      if (this.building.get(key) === p) this.building.delete(key);
    }
  }

  private async writeStartLayer(key: string, start: NonNullable<UserTemplateRecord["start"]>): Promise<void> {
    const tmp = join(layersDir(this.opts.cacheDir), `.tmp-${key}-${randomBytes(4).toString("hex")}`);
    const spec: StartSpec & { readyCommand?: string } = start;
    await mkdir(join(tmp, "fs", "etc", "dnah"), { recursive: true });
    await writeFile(join(tmp, "fs", START_SPEC_PATH), `${JSON.stringify(spec, null, 2)}\n`, { mode: 0o644 });
    await this.commitLayer(tmp, key, "start command");
  }

  private async commitLayer(tmp: string, key: string, what: string): Promise<void> {
    await writeFile(join(tmp, LAYER_READY), JSON.stringify({ key, what, builtAt: new Date().toISOString() }));
    const dest = join(layersDir(this.opts.cacheDir), key);
    // Another build (another vmm sharing the cache, or a forced rebuild) may have finished the
    // same layer first: a ready layer may be in use as a sandbox's lower layer, so it is never
    // replaced; equal keys are equal layers, and this copy is dropped. A half one (no ready
    // mark: a crash between rename and mark cannot happen, the mark is written first) is gone.
    if (layerReady(this.opts.cacheDir, key)) {
      await rm(tmp, { recursive: true, force: true });
      return;
    }
    await rm(dest, { recursive: true, force: true });
    try {
      await rename(tmp, dest);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if ((code !== "ENOTEMPTY" && code !== "EEXIST") || !layerReady(this.opts.cacheDir, key)) throw err;
      await rm(tmp, { recursive: true, force: true });
    }
  }

  private async runStep(
    key: string,
    lowers: string[],
    state: BuildState,
    step: Step,
    files: ReadonlyMap<string, Uint8Array>,
    log: BuildLog,
    signal: AbortSignal,
    label: string,
  ): Promise<void> {
    const id = randomBytes(6).toString("hex");
    const tmp = join(layersDir(this.opts.cacheDir), `.tmp-${key}-${id}`);
    await mkdir(join(tmp, "fs"), { recursive: true });
    // The mount table names resolved paths: with a cache folder behind a link, unmounting by
    // the unresolved name would find nothing mounted and leave the overlay busy.
    const real = await realpath(tmp);
    const upper = join(real, "fs");
    const work = join(real, "work");
    const merged = join(real, "merged");
    await Promise.all([mkdir(work), mkdir(merged)]);
    let mounted = false;
    let net: VmNetwork | undefined;
    let cgroup: Awaited<ReturnType<typeof createCgroup>> | undefined;
    try {
      {
        await mountOverlay(lowers, upper, work, merged);
        mounted = true;
        net = await createVmNetwork(`${this.opts.cgroupParent}-build`, id, true, {
          PATH: this.opts.hostPath,
        });
        await restrictNamespaceOutput(net, await nameservers(), { PATH: this.opts.hostPath });
        cgroup = await createCgroup(this.opts.cgroupParent, `build-${id}`, {
          memoryMib: this.opts.memoryMib,
          cpuCount: this.opts.cpuCount,
          pidsMax: this.opts.pidsMax,
          cpuWeight: "low",
        });
        const extra: string[] = [];
        let script: string;
        if (step.kind === TemplateStepKind.COPY) {
          const tar = join(tmp, "context.tar");
          await writeFile(tar, files.get(step.filesHash)!);
          extra.push("--ro-bind", tar, "/.dnah-context.tar", "--tmpfs", "/.dnah-context");
          script = copyScript(
            contextPath(step.args[0]!),
            copyDestination(state, step.args[1]!),
            step.args[2] || state.user,
            step.args[3] ?? "",
          );
        } else if (step.kind === TemplateStepKind.WORKDIR) {
          // Made by root, owned by the build's user when new (as E2B does).
          const owner = shellQuote(`${state.user}:`);
          script = `d=${shellQuote(workdirPath(state, step.args[0]!))}; [ -d "$d" ] || { mkdir -p "$d" && chown ${owner} "$d"; }`;
        } else {
          script = step.args[0]!;
        }
        // RUN runs as the build's user (or the step's own); COPY and WORKDIR as root.
        const asRoot = step.kind !== TemplateStepKind.RUN;
        const runState =
          step.kind === TemplateStepKind.RUN && step.args[1] ? { ...state, user: step.args[1] } : state;
        const code = await this.runJailed(
          merged,
          net,
          cgroup.procsFiles,
          runState,
          script,
          asRoot,
          extra,
          log,
          signal,
        );
        if (code !== 0) throw new TemplateBuildError(`${label} failed with exit code ${code}`);
        await unmount(merged);
        mounted = false;
        // bubblewrap made these mount points in the upper folder: they are not the step's.
        for (const p of [".dnah-context", ".dnah-context.tar", "etc/resolv.conf", HOST_CA_BUNDLE.slice(1)]) {
          const f = join(upper, p);
          const st = await stat(f).catch(() => undefined);
          if (st && (st.isDirectory() || st.size === 0)) await rm(f, { recursive: true, force: true });
        }
      }
      await rm(work, { recursive: true, force: true });
      await rm(merged, { recursive: true, force: true });
      await rm(join(tmp, "context.tar"), { force: true });
      await this.commitLayer(tmp, key, label);
    } finally {
      await cgroup?.killAll().catch(() => {});
      await cgroup?.remove().catch(() => {});
      if (mounted) await unmount(merged).catch(() => {});
      if (net) await removeVmNetwork(net, { PATH: this.opts.hostPath }).catch(() => {});
      if (existsSync(tmp)) await rm(tmp, { recursive: true, force: true }).catch(() => {});
    }
  }

  /** Runs `script` as the build state's user in the jail; resolves with its exit code. */
  private runJailed(
    root: string,
    net: VmNetwork,
    procsFiles: readonly string[],
    state: BuildState,
    script: string,
    asRoot: boolean,
    extra: readonly string[],
    log: BuildLog,
    signal: AbortSignal,
  ): Promise<number> {
    const env = {
      PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      HOME: state.user === "root" || asRoot ? "/root" : `/home/${state.user}`,
      DEBIAN_FRONTEND: "noninteractive",
      ...(existsSync(HOST_CA_BUNDLE) ? { NODE_EXTRA_CA_CERTS: HOST_CA_BUNDLE } : {}),
      ...state.env,
    };
    const inner =
      state.user === "root" || asRoot
        ? ["/bin/bash", "-c", script]
        : ["/usr/sbin/runuser", "-u", state.user, "--", "/bin/bash", "-c", script];
    const args = [
      "-c",
      'for f in $DNAH_CGROUP_PROCS; do echo $$ > "$f"; done; exec "$@"',
      "dnah-build",
      "nsenter",
      `--net=/run/netns/${net.netns}`,
      "bwrap",
      ...["--bind", root, "/"],
      ...["--proc", "/proc", "--dev", "/dev"],
      ...["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"],
      // A build trusts what its host trusts (a TLS-inspecting egress proxy's CA, say).
      ...(existsSync(HOST_CA_BUNDLE) ? ["--ro-bind", HOST_CA_BUNDLE, HOST_CA_BUNDLE] : []),
      ...extra,
      "--unshare-pid",
      "--unshare-ipc",
      "--unshare-uts",
      "--unshare-cgroup-try",
      ...["--hostname", "dnah-build"],
      "--die-with-parent",
      "--new-session",
      "--clearenv",
      ...Object.entries(env).flatMap(([k, v]) => ["--setenv", k, v]),
      ...["--chdir", state.workdir],
      "--",
      ...inner,
    ];
    const child = spawn("/bin/sh", args, {
      env: { PATH: this.opts.hostPath, DNAH_CGROUP_PROCS: procsFiles.join(" ") },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let lines = 0;
    const onLine = (level: "info" | "warn") => (line: string) => {
      lines += 1;
      if (lines <= MAX_STEP_LOG_LINES)
        log(level, line.length > MAX_LINE ? `${line.slice(0, MAX_LINE)}…` : line);
      else if (lines === MAX_STEP_LOG_LINES + 1)
        log("warn", `(more output than ${MAX_STEP_LOG_LINES} lines: the rest is not logged)`);
    };
    createInterface({ input: child.stdout! }).on("line", onLine("info"));
    createInterface({ input: child.stderr! }).on("line", onLine("warn"));
    return new Promise<number>((resolve, reject) => {
      // A timeout or a cancel kills the jail; the promise settles once it has exited, so the
      // caller's clean-up never races processes still holding the overlay.
      let stopped: Error | undefined;
      const stop = (why: Error) => {
        stopped ??= why;
        child.kill("SIGKILL");
      };
      const timer = setTimeout(
        () =>
          stop(
            new TemplateBuildError(
              `the step ran longer than ${Math.round(this.opts.stepTimeoutMs / 1000)} s`,
            ),
          ),
        this.opts.stepTimeoutMs,
      );
      const onAbort = () => stop(new TemplateBuildError("the build was cancelled"));
      if (signal.aborted) onAbort();
      else signal.addEventListener("abort", onAbort, { once: true });
      child.on("error", (err) => reject(new Error(`cannot start the build jail: ${err.message}`)));
      child.on("exit", (code, sig) => {
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        if (stopped) reject(stopped);
        else resolve(code ?? (sig ? 128 : 1));
      });
    });
  }

  private async sizeOf(layers: readonly string[]): Promise<number> {
    let total = 0;
    for (const k of layers) {
      const out = await new Promise<string>((resolve) => {
        const p = spawn("du", ["-sb", layerFsDir(this.opts.cacheDir, k)], {
          env: { PATH: this.opts.hostPath },
          stdio: ["ignore", "pipe", "ignore"],
        });
        let s = "";
        p.stdout.on("data", (c: Buffer) => {
          s += c.toString();
        });
        p.on("close", () => resolve(s));
        p.on("error", () => resolve(""));
      });
      total += Number(out.split(/\s/)[0]) || 0;
    }
    return total;
  }
}

/** The host's resolvers (a build resolves names as the host does). */
async function nameservers(): Promise<string[]> {
  try {
    const text = await readFile("/etc/resolv.conf", "utf8");
    return [...text.matchAll(/^\s*nameserver\s+(\d+\.\d+\.\d+\.\d+)\s*$/gm)].map((m) => m[1]!);
  } catch {
    return [];
  }
}

function describe(step: Step): string {
  const text =
    step.kind === TemplateStepKind.ENV
      ? step.args.filter((_, i) => i % 2 === 0).join(" ")
      : step.args.join(" ");
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

/**
 * COPY as Docker does it, inside the jail (links in the context resolve inside the template,
 * never on the host): a folder's contents into the destination folder; a file to the
 * destination, or into it when it ends with '/'. Owned by the build's user.
 */
function copyScript(src: string, dest: string, owner: string, mode: string): string {
  return [
    "set -e",
    "tar -xf /.dnah-context.tar -C /.dnah-context --no-same-owner",
    `src=/.dnah-context/${shellQuote(src)}; dest=${shellQuote(dest)}`,
    'if [ ! -e "$src" ] && [ ! -L "$src" ]; then echo "COPY: $src is not in the context" >&2; exit 2; fi',
    'if [ -d "$src" ]; then mkdir -p "$dest"; cp -a "$src"/. "$dest"/; target="$dest";',
    'else case "$dest" in */) mkdir -p "$dest"; cp -a "$src" "$dest"; target="$dest$(basename "$src")";;',
    '  *) mkdir -p "$(dirname "$dest")"; cp -a "$src" "$dest"; target="$dest";; esac; fi',
    `chown -R ${shellQuote(owner.includes(":") ? owner : `${owner}:`)} "$target"`,
    ...(mode ? [`chmod -R ${mode} "$target"`] : []),
  ].join("\n");
}
