import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { createReadStream, existsSync } from "node:fs";
import { chmod, cp, mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";

const run = promisify(execFile);

export const REPO = fileURLToPath(new URL("../../", import.meta.url)).replace(/\/$/, "");
export const INSTALL_SH = join(REPO, "scripts/install.sh");
const CACHE = join(process.env.DNAH_CACHE_DIR ?? "/var/cache/dnah", "install-test");

/** The Debian root every run starts from: bookworm from Debian's archive, never modified. */
const ROOT_RECIPE = {
  v: 1,
  suite: "bookworm",
  mirror: process.env.DNAH_DEBIAN_MIRROR ?? "http://deb.debian.org/debian",
  variant: "minbase",
};

function key(value: unknown): string {
  return createHash("sha256").update(JSON.stringify(value)).digest("hex").slice(0, 16);
}

async function sha256File(path: string): Promise<string> {
  const h = createHash("sha256");
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest("hex");
}

/** The packages install.sh installs (its APT_PACKAGES line), so the root already has them. */
export async function installPackages(): Promise<string[]> {
  const text = await readFile(INSTALL_SH, "utf8");
  const m = /^APT_PACKAGES=\(([^)]*)\)$/m.exec(text);
  if (!m?.[1]) throw new Error("scripts/install.sh has no APT_PACKAGES=(...) line");
  return m[1].trim().split(/\s+/);
}

/**
 * A fresh-from-debootstrap bookworm root with install.sh's packages and apt lists, cached under
 * <cache>/install-test/<hash of the inputs>/root. Built from nothing when absent (a few
 * minutes, network to Debian's archive); reused as the read-only lower layer of each run.
 */
export async function debianRoot(log: (line: string) => void): Promise<string> {
  const packages = await installPackages();
  const dir = join(CACHE, `root-${key({ ...ROOT_RECIPE, packages })}`);
  const root = join(dir, "root");
  if (existsSync(join(dir, ".ready"))) return root;
  const partial = `${dir}.partial`;
  await rm(partial, { recursive: true, force: true });
  await mkdir(partial, { recursive: true });
  const t0 = Date.now();
  log(`building the Debian root (debootstrap ${ROOT_RECIPE.suite}) in ${dir}`);
  await run(
    "debootstrap",
    [
      `--variant=${ROOT_RECIPE.variant}`,
      `--include=${packages.join(",")}`,
      ROOT_RECIPE.suite,
      join(partial, "root"),
      ROOT_RECIPE.mirror,
    ],
    { maxBuffer: 64 * 1024 * 1024 },
  );
  // apt lists, so install.sh's `apt-cache policy virtiofsd` answers without the network.
  await writeFile(join(partial, "root/etc/resolv.conf"), await readFile("/etc/resolv.conf"));
  await run("chroot", [join(partial, "root"), "apt-get", "update", "-qq"], { maxBuffer: 16 * 1024 * 1024 });
  await run("chroot", [join(partial, "root"), "apt-get", "clean"]);
  await rm(join(partial, "root/etc/resolv.conf"));
  await writeFile(join(partial, ".ready"), `${new Date().toISOString()}\n`);
  await rm(dir, { recursive: true, force: true });
  await rename(partial, dir);
  log(`built the Debian root in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  return root;
}

/**
 * The files install.sh downloads, made here (DNAH_INSTALL_FROM): this machine's own node
 * binary (and npm) packed as the official tarball name with a real SHASUMS256.txt; STAND-INS
 * for cloud-hypervisor and ch-remote (shell scripts that print a version and say what they
 * are); the guest kernel from this machine's cache when present, else a marked placeholder;
 * a marked placeholder for the base image (the real one is ~4 GiB); a SHA256SUMS for all.
 */
export async function artifacts(nodeVersion: string, log: (line: string) => void): Promise<string> {
  const nodeBin = process.execPath;
  const npmDir = existsSync("/usr/lib/node_modules/npm") ? "/usr/lib/node_modules/npm" : undefined;
  const kernelCache = join(process.env.DNAH_CACHE_DIR ?? "/var/cache/dnah", "kernels");
  const kernelDir = existsSync(kernelCache)
    ? (await run("ls", [kernelCache])).stdout.split("\n").find((n) => n.startsWith("linux-image-"))
    : undefined;
  const inputs = {
    v: 1,
    nodeVersion,
    node: (await stat(nodeBin)).mtimeMs,
    npmDir,
    kernelDir: kernelDir ?? null,
  };
  const dir = join(CACHE, `artifacts-${key(inputs)}`);
  if (existsSync(join(dir, "SHA256SUMS"))) return dir;
  const t0 = Date.now();
  const partial = `${dir}.partial`;
  await rm(partial, { recursive: true, force: true });
  await mkdir(partial, { recursive: true });

  const nodeName = `node-v${nodeVersion}-linux-x64`;
  const stage = join(partial, "stage", nodeName);
  await mkdir(join(stage, "bin"), { recursive: true });
  await cp(nodeBin, join(stage, "bin/node"));
  if (npmDir) {
    await cp(npmDir, join(stage, "lib/node_modules/npm"), { recursive: true });
    await run("ln", ["-s", "../lib/node_modules/npm/bin/npm-cli.js", join(stage, "bin/npm")]);
  }
  await writeFile(
    join(stage, "DNAH-TEST-REPACK"),
    "This machine's node binary repacked under the official tarball's name for the install test.\n",
  );
  await run("tar", ["-C", join(partial, "stage"), "-cf", join(partial, `${nodeName}.tar`), nodeName]);
  await run("xz", ["-0", "-T2", join(partial, `${nodeName}.tar`)]);
  await rm(join(partial, "stage"), { recursive: true });
  await writeFile(
    join(partial, "SHASUMS256.txt"),
    `${await sha256File(join(partial, `${nodeName}.tar.xz`))}  ${nodeName}.tar.xz\n`,
  );

  for (const [asset, tool] of [
    ["cloud-hypervisor-static", "cloud-hypervisor"],
    ["ch-remote-static", "ch-remote"],
  ] as const) {
    const path = join(partial, asset);
    await writeFile(
      path,
      [
        "#!/bin/sh",
        `# STAND-IN for ${tool} v53.0, made by test/install/fixture.ts: it only prints a version.`,
        `echo "${tool} v53.0 (dnah install-test stand-in, not Cloud Hypervisor)"`,
        "",
      ].join("\n"),
    );
    await chmod(path, 0o755);
  }

  const kernelStage = join(partial, "kernel-stage");
  await mkdir(join(kernelStage, "kernels"), { recursive: true });
  if (kernelDir) {
    await run("cp", ["-a", join(kernelCache, kernelDir), join(kernelStage, "kernels", kernelDir)]);
  } else {
    await writeFile(
      join(kernelStage, "kernels", "PLACEHOLDER"),
      "Placeholder guest kernel: this machine had no built kernel in its cache.\n",
    );
  }
  await run("tar", ["-C", kernelStage, "-czf", join(partial, "dnah-guest-kernel-x86_64.tar.gz"), "kernels"]);
  await rm(kernelStage, { recursive: true });

  const imageStage = join(partial, "image-stage");
  await mkdir(join(imageStage, "images", "base"), { recursive: true });
  await writeFile(
    join(imageStage, "images", "base", "PLACEHOLDER"),
    "Placeholder base image for the install test (the real image is ~4 GiB).\n",
  );
  await run("tar", ["-C", imageStage, "-czf", join(partial, "dnah-base-image-x86_64.tar.gz"), "images"]);
  await rm(imageStage, { recursive: true });

  const names = [
    "cloud-hypervisor-static",
    "ch-remote-static",
    "dnah-guest-kernel-x86_64.tar.gz",
    "dnah-base-image-x86_64.tar.gz",
  ];
  const sums = await Promise.all(names.map(async (n) => `${await sha256File(join(partial, n))}  ${n}`));
  await writeFile(join(partial, "SHA256SUMS"), `${sums.join("\n")}\n`);
  await rm(dir, { recursive: true, force: true });
  await rename(partial, dir);
  log(`prepared the download folder in ${((Date.now() - t0) / 1000).toFixed(1)} s: ${dir}`);
  return dir;
}

export interface Chroot {
  /** The run's writable layer: everything install.sh changed, seen from the host. */
  readonly upper: string;
  /** Runs install.sh inside the chroot with these arguments and env; resolves with its output. */
  install(args: string[], env?: Record<string, string>): Promise<{ code: number; output: string }>;
  /** Starts install.sh inside the chroot without waiting (for --foreground). */
  spawnInstall(
    args: string[],
    env?: Record<string, string>,
  ): { child: ReturnType<typeof spawn>; output: () => string };
  remove(): Promise<void>;
}

/**
 * A fresh chroot per run: an overlay of the cached root (lower, read-only) and a new upper
 * folder, mounted with /proc, /sys, /dev, the checkout and the download folder inside a private
 * mount namespace that lives only as long as the command (`unshare --mount`), so nothing stays
 * mounted on the host.
 */
export async function freshChroot(lower: string, downloads: string, work: string): Promise<Chroot> {
  const upper = join(work, "upper");
  const ovlWork = join(work, "work");
  const merged = join(work, "merged");
  await mkdir(upper, { recursive: true });
  await mkdir(ovlWork, { recursive: true });
  await mkdir(merged, { recursive: true });
  const q = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;
  const script = (args: string[]) =>
    [
      "set -e",
      `mount -t overlay overlay -o lowerdir=${lower},upperdir=${upper},workdir=${ovlWork} ${q(merged)}`,
      `mount -t proc proc ${q(`${merged}/proc`)}`,
      `mount --rbind /sys ${q(`${merged}/sys`)}`,
      `mount --rbind /dev ${q(`${merged}/dev`)}`,
      `mkdir -p ${q(merged + REPO)} ${q(`${merged}/mnt/dnah-downloads`)}`,
      `mount --bind ${q(REPO)} ${q(merged + REPO)}`,
      `mount -o remount,bind,ro ${q(merged + REPO)}`,
      `mount --bind ${q(downloads)} ${q(`${merged}/mnt/dnah-downloads`)}`,
      `mount -o remount,bind,ro ${q(`${merged}/mnt/dnah-downloads`)}`,
      `exec chroot ${q(merged)} /bin/bash ${q(INSTALL_SH)} ${args.map(q).join(" ")}`,
    ].join("\n");
  const baseEnv = {
    PATH: "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    HOME: "/root",
    LANG: "C.UTF-8",
    DNAH_INSTALL_FROM: "/mnt/dnah-downloads",
    DNAH_INSTALL_SOURCE: REPO,
  };
  const spawnInstall = (args: string[], env: Record<string, string> = {}) => {
    const child = spawn(
      "unshare",
      ["--mount", "--propagation", "private", "--fork", "sh", "-c", script(args)],
      {
        env: { ...baseEnv, ...env },
        stdio: ["ignore", "pipe", "pipe"],
        // Its own process group: the test stops install.sh, tee and the vmm together.
        detached: true,
      },
    );
    let output = "";
    child.stdout.on("data", (d: Buffer) => {
      output += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      output += d.toString();
    });
    return { child, output: () => output };
  };
  return {
    upper,
    spawnInstall,
    install(args, env) {
      const { child, output } = spawnInstall(args, env);
      return new Promise((resolve, reject) => {
        child.once("error", reject);
        child.once("exit", (code) => resolve({ code: code ?? -1, output: output() }));
      });
    },
    async remove() {
      await rm(work, { recursive: true, force: true });
    },
  };
}
