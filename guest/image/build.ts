import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import {
  copyFile,
  cp,
  mkdir,
  open,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);

/**
 * `dnah image build <template>`: a bootable microVM image for a template, used as is by the
 * qemu and Cloud Hypervisor runtimes:
 *
 *   <cacheDir>/images/<template>/<key>/   vmlinuz · initramfs.cpio · rootfs.ext4 · manifest.json
 *   <cacheDir>/images/<template>/current  -> <key>   (replaced atomically after each build)
 *
 * - kernel: Debian's cloud kernel, fetched with `apt-get download` from the host's Debian
 *   archive and unpacked with `dpkg-deb -x` into `<cacheDir>/kernels/` (never installed);
 * - initramfs: the static init (`init.c`, gcc -static) plus the modules it loads, in
 *   dependency order (depmod), packed root-owned as newc cpio;
 * - root disk: ext4 made with `mkfs.ext4 -d` (no loop mounts) from the template rootfs plus the
 *   agent's Node runtime (`/opt/dnah/node`) and the bundled agent (`/opt/dnah/agent`).
 *
 * The key hashes every input (the init source, the kernel package, the template folder, the
 * Node runtime folder, the agent's bytes, this builder's version); a build goes to a temporary
 * folder renamed into place, so an interrupted build never looks finished.
 */
export interface ImageBuildOptions {
  readonly templateId: string;
  /** The template's root filesystem folder. */
  readonly rootfsDir: string;
  /** Self-contained Node runtime: `bin/node` and `lib/` (the vmm's node-runtime cache). */
  readonly nodeRuntimeDir: string;
  /** Folder with the bundled agent (`agent.mjs` and its helpers). */
  readonly agentDir: string;
  readonly cacheDir: string;
  /** PATH and proxy settings for apt-get, gcc, depmod, cpio and mkfs. */
  readonly env: Readonly<Record<string, string | undefined>>;
  /** Kernel package (default: what `linux-image-cloud-amd64` depends on in the archive). */
  readonly kernelPackage?: string;
  /** Free space on the root disk beyond its contents (default 2 GiB; the file is sparse). */
  readonly freeMib?: number;
  readonly force?: boolean;
  readonly onProgress?: (line: string) => void;
}

export interface GuestImage {
  readonly dir: string;
  readonly kernel: string;
  readonly initramfs: string;
  readonly rootfs: string;
  readonly manifest: ImageManifest;
}

/** `manifest.json`: what the runtimes read (file names are relative to the image folder). */
export interface ImageManifest {
  readonly templateId: string;
  readonly key: string;
  readonly kernel: string;
  readonly initramfs: string;
  readonly rootfs: string;
  readonly kernelPackage: string;
  readonly kernelRelease: string;
  readonly rootfsBytes: number;
  /** The template folder the root disk was made from (runtimes refuse a stale image). */
  readonly sourceRootfs: string;
  readonly modules: readonly string[];
  readonly builtAt: string;
}

/** Bump when the layout or the build steps change. */
const BUILDER_VERSION = 1;
const READY = ".dnah-ready";
/** How long an `apt-cache` answer about the kernel package is reused. */
const RESOLVE_TTL_MS = 24 * 3600 * 1000;
const HERE = dirname(fileURLToPath(import.meta.url));
const INIT_SOURCE = join(HERE, "init.c");

/**
 * What the init loads, by module name (dependencies are added from modules.dep): virtio
 * transports (PCI for q35 and Cloud Hypervisor, MMIO for qemu's microvm), the root disk, the
 * network, vsock and virtio-fs. Names built into the kernel are skipped.
 */
export const GUEST_MODULES = [
  "virtio_ring",
  "virtio",
  "virtio_pci_legacy_dev",
  "virtio_pci_modern_dev",
  "virtio_pci",
  "virtio_mmio",
  "virtio_blk",
  "virtio_net",
  "vsock",
  "vmw_vsock_virtio_transport_common",
  "vmw_vsock_virtio_transport",
  "fuse",
  "virtiofs",
  "ext4",
] as const;

type Env = Record<string, string>;

function cleanEnv(env: ImageBuildOptions["env"]): Env {
  const out: Env = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  out.LC_ALL = "C";
  return out;
}

async function sh(env: Env, cmd: string, args: string[], o: { cwd?: string; timeoutMs?: number } = {}) {
  try {
    const { stdout } = await run(cmd, args, {
      env,
      timeout: o.timeoutMs ?? 300_000,
      maxBuffer: 64 * 1024 * 1024,
      ...(o.cwd && { cwd: o.cwd }),
    });
    return stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.slice(0, 6).join(" ")}: ${(e.stderr || e.message).trim().slice(-2000)}`, {
      cause: err,
    });
  }
}

/** The image last built for `templateId`, or undefined. */
export async function findGuestImage(cacheDir: string, templateId: string): Promise<GuestImage | undefined> {
  const dir = join(cacheDir, "images", templateId, "current");
  try {
    return await loadImage(dir);
  } catch {
    return undefined;
  }
}

async function loadImage(dir: string): Promise<GuestImage> {
  const manifest = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as ImageManifest;
  return {
    dir,
    kernel: join(dir, manifest.kernel),
    initramfs: join(dir, manifest.initramfs),
    rootfs: join(dir, manifest.rootfs),
    manifest,
  };
}

/** Hashes a folder's file names, sizes and bytes (the agent bundle: a few MB). */
async function hashTree(h: ReturnType<typeof createHash>, root: string): Promise<void> {
  const walk = async (d: string): Promise<void> => {
    for (const e of (await readdir(d, { withFileTypes: true })).sort((a, b) =>
      a.name.localeCompare(b.name),
    )) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) {
        h.update(`${relative(root, p)}\0`);
        await new Promise<void>((resolve, reject) =>
          createReadStream(p)
            .on("data", (c) => h.update(c))
            .on("end", resolve)
            .on("error", reject),
        );
      }
    }
  };
  await walk(root);
}

/**
 * The concrete kernel package behind the `linux-image-cloud-amd64` metapackage and its version
 * (one `apt-cache show`, which is slow on hosts with big package lists). Without a usable
 * archive, the newest kernel already in the cache is used.
 */
async function resolveKernelPackage(
  env: Env,
  cacheDir: string,
  wanted: string | undefined,
): Promise<{ name: string; version: string }> {
  const meta = wanted ?? "linux-image-cloud-amd64";
  // apt-cache takes seconds on a host with big lists: reuse a recent answer.
  const memo = join(cacheDir, "kernels", `resolved-${meta}.json`);
  try {
    const m = JSON.parse(await readFile(memo, "utf8")) as { name: string; version: string; atMs: number };
    if (
      Date.now() - m.atMs < RESOLVE_TTL_MS &&
      existsSync(join(cacheDir, "kernels", `${m.name}_${m.version}`, READY))
    )
      return { name: m.name, version: m.version };
  } catch {
    // no memo yet
  }
  const remember = async (r: { name: string; version: string }) => {
    await mkdir(join(cacheDir, "kernels"), { recursive: true });
    await writeFile(memo, JSON.stringify({ ...r, atMs: Date.now() }));
    return r;
  };
  let info = "";
  try {
    info = await sh(env, "apt-cache", ["show", "--no-all-versions", meta], { timeoutMs: 120_000 });
  } catch (err) {
    const cached = await readdir(join(cacheDir, "kernels")).catch(() => [] as string[]);
    const hit = cached
      .filter((d) => !d.includes(".tmp-") && (wanted ? d.startsWith(`${wanted}_`) : /-cloud-amd64_/.test(d)))
      .filter((d) => existsSync(join(cacheDir, "kernels", d, READY)))
      .sort()
      .pop();
    if (!hit) throw err;
    const [name = "", version = ""] = hit.split("_");
    return { name, version };
  }
  if (wanted) {
    const version = /^Version: (\S+)$/m.exec(info)?.[1];
    if (!version) throw new Error(`apt-cache show ${wanted}: no Version`);
    return remember({ name: wanted, version });
  }
  const dep = /^Depends:.*?(linux-image-[0-9][^\s,(]*-cloud-amd64) \(= ([^)\s]+)\)/m.exec(info);
  if (!dep?.[1] || !dep[2]) throw new Error(`apt-cache show ${meta}: no kernel package in its Depends`);
  return remember({ name: dep[1], version: dep[2] });
}

/** Downloads and unpacks the kernel package once into `<cacheDir>/kernels/<name>_<version>`. */
async function ensureKernel(
  cacheDir: string,
  env: Env,
  pkg: { name: string; version: string },
  say: (s: string) => void,
): Promise<{ root: string; release: string; vmlinuz: string }> {
  const root = join(cacheDir, "kernels", `${pkg.name}_${pkg.version}`);
  const release = pkg.name.replace(/^linux-image-/, "");
  const result = { root, release, vmlinuz: join(root, "boot", `vmlinuz-${release}`) };
  if (existsSync(join(root, READY))) return result;
  const tmp = `${root}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(join(tmp, "deb"), { recursive: true });
  try {
    say(`downloading ${pkg.name} ${pkg.version} from Debian's archive (apt-get download)`);
    // Root downloads into a root-owned folder: tell apt not to drop to its _apt user.
    await sh(
      env,
      "apt-get",
      ["download", "-qq", "-o", "APT::Sandbox::User=root", `${pkg.name}=${pkg.version}`],
      {
        cwd: join(tmp, "deb"),
        timeoutMs: 900_000,
      },
    );
    const deb = (await readdir(join(tmp, "deb"))).find((f) => f.endsWith(".deb"));
    if (!deb) throw new Error(`apt-get download ${pkg.name} left no .deb`);
    say(`unpacking ${deb} (dpkg-deb -x; not installed)`);
    await sh(env, "dpkg-deb", ["-x", join(tmp, "deb", deb), tmp]);
    await rm(join(tmp, "deb"), { recursive: true });
    // The package's modules.dep is made by its postinst, which never ran: make it here.
    await sh(env, "depmod", ["-b", tmp, release]);
    await writeFile(join(tmp, READY), `${pkg.name} ${pkg.version}\n`);
    await rm(root, { recursive: true, force: true });
    await rename(tmp, root);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  return result;
}

/** Module files (relative to the modules folder) for `names` and their dependencies, deps first. */
export function moduleLoadOrder(modulesDep: string, builtin: string, names: readonly string[]): string[] {
  const deps = new Map<string, string[]>();
  const byName = new Map<string, string>();
  const modName = (path: string) =>
    (path.split("/").pop() ?? "").replace(/\.ko(\.[a-z]+)?$/, "").replace(/-/g, "_");
  for (const line of modulesDep.split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0) continue;
    const path = line.slice(0, colon);
    deps.set(
      path,
      line
        .slice(colon + 1)
        .trim()
        .split(/\s+/)
        .filter(Boolean),
    );
    byName.set(modName(path), path);
  }
  const builtins = new Set(builtin.split("\n").filter(Boolean).map(modName));
  const order: string[] = [];
  const seen = new Set<string>();
  const visit = (path: string) => {
    if (seen.has(path)) return;
    seen.add(path);
    for (const d of deps.get(path) ?? []) visit(d);
    order.push(path);
  };
  for (const n of names) {
    const path = byName.get(n.replace(/-/g, "_"));
    if (path) visit(path);
    else if (!builtins.has(n.replace(/-/g, "_")))
      throw new Error(`kernel module ${n} is neither a module nor built in`);
  }
  return order;
}

/** Builds the image (or returns the cached one) and points `current` at it. */
export async function buildGuestImage(o: ImageBuildOptions): Promise<GuestImage> {
  const started = Date.now();
  const say = (line: string) =>
    o.onProgress?.(`[image ${o.templateId}] ${line} (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  const env = cleanEnv(o.env);
  for (const [what, p] of [
    ["template rootfs", o.rootfsDir],
    ["node runtime", join(o.nodeRuntimeDir, "bin", "node")],
    ["agent bundle", join(o.agentDir, "agent.mjs")],
  ] as const)
    if (!existsSync(p)) throw new Error(`${what} missing: ${p}`);
  const pkg = await resolveKernelPackage(env, o.cacheDir, o.kernelPackage);
  const freeMib = o.freeMib ?? 2048;
  const h = createHash("sha256");
  h.update(JSON.stringify({ v: BUILDER_VERSION, pkg, freeMib, modules: GUEST_MODULES }));
  h.update(await readFile(INIT_SOURCE));
  // The template and Node runtime folders are keyed by their own recipe / binary hashes.
  h.update(`\0${o.rootfsDir}\0${(await stat(o.rootfsDir)).mtimeMs}\0${o.nodeRuntimeDir}\0`);
  await hashTree(h, o.agentDir);
  const key = h.digest("hex").slice(0, 16);
  const base = join(o.cacheDir, "images", o.templateId);
  const dir = join(base, key);
  if (!o.force && existsSync(join(dir, "manifest.json"))) {
    await pointCurrent(base, key);
    say(`cached at ${dir}`);
    return loadImage(join(base, "current"));
  }
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  try {
    const kernel = await ensureKernel(o.cacheDir, env, pkg, say);
    await copyFile(kernel.vmlinuz, join(tmp, "vmlinuz"));

    say("compiling the init (gcc -static)");
    const ird = join(tmp, "initramfs");
    await mkdir(ird);
    await sh(env, "gcc", ["-static", "-O2", "-Wall", "-o", join(ird, "init"), INIT_SOURCE]);
    const modRoot = join(kernel.root, "lib", "modules", kernel.release);
    const order = moduleLoadOrder(
      await readFile(join(modRoot, "modules.dep"), "utf8"),
      await readFile(join(modRoot, "modules.builtin"), "utf8").catch(() => ""),
      GUEST_MODULES,
    );
    const listed: string[] = [];
    for (const rel of order) {
      if (/\.ko\.[a-z]+$/.test(rel)) throw new Error(`compressed module ${rel}: not supported by the init`);
      await mkdir(join(ird, "modules", dirname(rel)), { recursive: true });
      await copyFile(join(modRoot, rel), join(ird, "modules", rel));
      listed.push(`/modules/${rel}`);
    }
    await writeFile(join(ird, "modules.list"), `${listed.join("\n")}\n`);
    say(`initramfs: init + ${order.length} modules`);
    await packCpio(ird, join(tmp, "initramfs.cpio"), env);
    await rm(ird, { recursive: true });

    say(`root disk: ${o.rootfsDir} + node runtime + agent`);
    const stage = join(tmp, "stage");
    // Hard links: the template is not copied, only linked (same filesystem as the cache).
    await sh(env, "cp", ["-al", o.rootfsDir, stage]).catch(() => sh(env, "cp", ["-a", o.rootfsDir, stage]));
    await rm(join(stage, "opt", "dnah"), { recursive: true, force: true });
    await mkdir(join(stage, "opt", "dnah"), { recursive: true });
    await cp(o.nodeRuntimeDir, join(stage, "opt", "dnah", "node"), { recursive: true });
    await cp(o.agentDir, join(stage, "opt", "dnah", "agent"), { recursive: true });
    await mkdir(join(stage, "mnt", "dnah-share"), { recursive: true });
    const usedKib = Number((await sh(env, "du", ["-sk", "--apparent-size", stage])).split(/\s/)[0]);
    const sizeMib = Math.ceil((usedKib * 1.25) / 1024) + freeMib;
    say(`mkfs.ext4 -d (${sizeMib} MiB, sparse)`);
    await sh(env, "mkfs.ext4", [
      "-q",
      "-F",
      "-L",
      "dnah-root",
      "-E",
      "root_owner=0:0",
      "-d",
      stage,
      join(tmp, "rootfs.ext4"),
      `${sizeMib}M`,
    ]);
    await rm(stage, { recursive: true });
    const manifest: ImageManifest = {
      templateId: o.templateId,
      key,
      kernel: "vmlinuz",
      initramfs: "initramfs.cpio",
      rootfs: "rootfs.ext4",
      kernelPackage: `${pkg.name} ${pkg.version}`,
      kernelRelease: kernel.release,
      rootfsBytes: sizeMib * 1024 * 1024,
      sourceRootfs: o.rootfsDir,
      modules: order.map((m) => m.split("/").pop() ?? m),
      builtAt: new Date().toISOString(),
    };
    await writeFile(join(tmp, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    await rm(dir, { recursive: true, force: true });
    await rename(tmp, dir);
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
  await pointCurrent(base, key);
  say(`built ${dir}`);
  return loadImage(join(base, "current"));
}

/** `current` -> key, replaced with a rename so readers never see it missing. */
async function pointCurrent(base: string, key: string): Promise<void> {
  const tmp = join(base, `.current-${process.pid}`);
  await rm(tmp, { force: true });
  await symlink(key, tmp);
  await rename(tmp, join(base, "current"));
}

/** `find . | cpio -o -H newc -R 0:0` of `dir` into `out` (root-owned newc, what the kernel unpacks). */
async function packCpio(dir: string, out: string, env: Env): Promise<void> {
  const files = (await sh(env, "find", [".", "-mindepth", "1"], { cwd: dir }))
    .split("\n")
    .filter(Boolean)
    .sort();
  const fh = await open(out, "w");
  try {
    await new Promise<void>((resolve, reject) => {
      const p = spawn("cpio", ["-o", "-H", "newc", "-R", "0:0", "--quiet"], {
        cwd: dir,
        env,
        stdio: ["pipe", fh.fd, "pipe"],
      });
      let err = "";
      p.stderr?.on("data", (c: Buffer) => {
        err = (err + c.toString()).slice(-2000);
      });
      p.on("error", reject);
      p.on("close", (code) => (code === 0 ? resolve() : reject(new Error(`cpio exited ${code}: ${err}`))));
      p.stdin?.end(`${files.join("\n")}\n`);
    });
  } finally {
    await fh.close();
  }
}
