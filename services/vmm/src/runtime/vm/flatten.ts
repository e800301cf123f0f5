import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import {
  copyFile,
  link,
  mkdir,
  readdir,
  readFile,
  realpath,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import type { Logger } from "@dnah/platform";
import { TemplateImageError, VmImageMissingError } from "../../domain/errors.js";
import { mountsUnder, unmount } from "../jail/mounts.js";
import type { BuiltFrom, TemplateImage } from "../runtime.js";
import { findVmImage, type VmImage } from "./image.js";

const run = promisify(execFile);

/** Bump when the flattened image's layout or making changes: images get new keys. */
const FLATTEN_VERSION = 1;
/** Free space on a flattened root disk beyond its files (sparse), as `dnah image build` leaves. */
const DEFAULT_FREE_MIB = 2048;
/** A flatten running longer is killed (mkfs of a few GiB takes minutes at worst). */
const MAKE_TIMEOUT_MS = 30 * 60_000;
const TEMPLATE_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/;

export interface VmImagesOptions {
  readonly cacheDir: string;
  readonly hostPath: string;
  readonly logger: Logger;
  /** Free space on the root disk beyond its files (default 2 GiB; the file is sparse). */
  readonly freeMib?: number;
}

/**
 * The key of a template's flattened image: its base image and its layers, in order (pure).
 * The same template rebuilt with any other step (or over a rebuilt base image) gets another.
 */
export function flatImageKey(baseImageKey: string, from: BuiltFrom): string {
  return createHash("sha256")
    .update(
      JSON.stringify({ v: FLATTEN_VERSION, base: from.baseTemplateId, baseImageKey, layers: from.layerKeys }),
    )
    .digest("hex")
    .slice(0, 16);
}

/**
 * The microVM images VMs boot, shared by the qemu and Cloud Hypervisor runtimes. A built-in
 * template's is what `dnah image build` made. A template built from steps gets its own,
 * made here from its base's image and its layers ("flattened"):
 *
 *   <cacheDir>/images/<template>/<key>/{manifest.json, vmlinuz, initramfs.cpio, rootfs.ext4}
 *   <cacheDir>/images/<template>/current -> <key>
 *
 * The base image's root disk is loop-mounted read-only, the layers go over it as a read-only
 * overlay (whiteouts applied) in a private folder, and `mkfs.ext4 -d` copies the merged tree
 * into a sparse ext4 sized from its content; kernel and initramfs are the base image's (hard
 * links). It is made in a temporary folder renamed into place, so another vmm sharing the
 * cache never sees half of one. Older images of a template stay until the template is
 * deleted: VMs booted from them (their qcow2 overlays, their snapshots) name them by path.
 */
export class VmImages {
  /** Flattens running in this process, by template and image key: a second boot joins. */
  private readonly making = new Map<string, Promise<VmImage>>();
  private readonly env: Record<string, string>;

  constructor(private readonly opts: VmImagesOptions) {
    this.env = { PATH: opts.hostPath, LC_ALL: "C" };
  }

  /**
   * The image a VM of `template` boots. For a template built from steps with no image yet, or
   * a stale one (rebuilt since, or its base image was), the image is made first; concurrent
   * calls for one template make it once. `log` hears the making (the build log), else the
   * logger does. A failure is a `TemplateImageError` naming the template.
   */
  async find(template: TemplateImage, log?: (line: string) => void): Promise<VmImage> {
    const { cacheDir } = this.opts;
    const built = template.built;
    if (!built) return findVmImage(cacheDir, template.templateId, template.rootfsDir);
    try {
      const image = await findVmImage(cacheDir, template.templateId, template.rootfsDir, built);
      log?.(`microVM disk image ${image.key}: up to date`);
      return image;
    } catch (err) {
      if (!(err instanceof VmImageMissingError)) throw err;
    }
    let base: VmImage;
    try {
      base = await findVmImage(cacheDir, built.baseTemplateId, template.rootfsDir);
    } catch (err) {
      throw new TemplateImageError(template.templateId, (err as Error).message, { cause: err });
    }
    const key = flatImageKey(base.key, built);
    const say = (line: string) => {
      if (log) log(line);
      else this.opts.logger.info({ template: template.templateId, image: key }, line);
    };
    const id = `${template.templateId}/${key}`;
    const running = this.making.get(id);
    if (running) {
      say("microVM disk image: waiting for the one already being made (another boot or build)");
      return running;
    }
    const making = this.make(template, built, base, key, say);
    this.making.set(id, making);
    try {
      return await making;
    } finally {
      if (this.making.get(id) === making) this.making.delete(id);
    }
  }

  private async make(
    template: TemplateImage,
    built: BuiltFrom,
    base: VmImage,
    key: string,
    say: (line: string) => void,
  ): Promise<VmImage> {
    const { cacheDir } = this.opts;
    const id = template.templateId;
    const root = join(cacheDir, "images", id);
    const dir = join(root, key);
    try {
      if (!TEMPLATE_ID.test(id)) throw new Error("invalid template id");
      const layers = template.layers ?? [];
      if (layers.length !== built.layerKeys.length)
        throw new Error(`${layers.length} layer folders for ${built.layerKeys.length} layers`);
      await mkdir(root, { recursive: true });
      await this.removeStale(root);
      if (existsSync(join(dir, "manifest.json"))) {
        say(`microVM disk image ${key}: made earlier`);
      } else {
        const t0 = performance.now();
        say(
          `microVM disk image: flattening ${layers.length} layer(s) over the '${built.baseTemplateId}' image ${base.key}`,
        );
        const made = await this.flatten(root, key, template, built, base);
        const s = ((performance.now() - t0) / 1000).toFixed(1);
        say(
          `microVM disk image ${key} ready in ${s} s: ${made.sizeMib} MiB ext4 (sparse) for ${Math.ceil(made.contentKib / 1024)} MiB of files, ${Math.ceil(made.allocatedBytes / 1048576)} MiB on the host's disk`,
        );
      }
      await pointCurrent(root, key);
    } catch (err) {
      if (err instanceof TemplateImageError) throw err;
      throw new TemplateImageError(id, (err as Error).message, { cause: err });
    }
    return findVmImage(cacheDir, id, template.rootfsDir, built).catch((err: Error) => {
      throw new TemplateImageError(id, `the image just made is refused: ${err.message}`, { cause: err });
    });
  }

  /** Makes `<root>/<key>` (through a temporary folder renamed into place). */
  private async flatten(
    root: string,
    key: string,
    template: TemplateImage,
    built: BuiltFrom,
    base: VmImage,
  ): Promise<{ sizeMib: number; contentKib: number; allocatedBytes: number }> {
    const tmp = join(root, `.tmp-${key}-${randomBytes(4).toString("hex")}`);
    await mkdir(join(tmp, "base"), { recursive: true });
    await mkdir(join(tmp, "merged"));
    try {
      // The mount table names resolved paths (unmount looks them up there).
      const real = await realpath(tmp);
      const baseMount = join(real, "base");
      const merged = join(real, "merged");
      const disk = join(real, "rootfs.ext4");
      let sizeMib: number;
      let contentKib: number;
      try {
        // Read-only loop: the base image is the backing file of running VMs' disks.
        await this.sh("mount", ["-o", "loop,ro,noload", base.rootfs, baseMount]);
        let source = baseMount;
        const layers = template.layers ?? [];
        if (layers.length > 0) {
          const lowers = [...layers, baseMount];
          for (const p of lowers)
            if (/[,:\s]/.test(p)) throw new Error(`layer path contains an overlay separator: ${p}`);
          // No upper folder: read-only, and nothing is written into the layers.
          await this.sh("mount", [
            "-t",
            "overlay",
            "overlay",
            "-o",
            `ro,lowerdir=${lowers.join(":")}`,
            merged,
          ]);
          source = merged;
        }
        contentKib = Number((await this.sh("du", ["-sk", "--apparent-size", source])).split(/\s/)[0]);
        if (!Number.isFinite(contentKib) || contentKib <= 0) throw new Error(`du gave no size for ${source}`);
        sizeMib = Math.ceil((contentKib * 1.25) / 1024) + (this.opts.freeMib ?? DEFAULT_FREE_MIB);
        await this.sh(
          "mkfs.ext4",
          ["-q", "-F", "-L", "dnah-root", "-E", "root_owner=0:0", "-d", source, disk, `${sizeMib}M`],
          MAKE_TIMEOUT_MS,
        );
      } finally {
        await unmount(merged);
        await unmount(baseMount);
      }
      await rm(merged, { recursive: true });
      await rm(baseMount, { recursive: true });
      const baseDir = dirname(base.rootfs);
      const baseManifest = JSON.parse(await readFile(join(baseDir, "manifest.json"), "utf8")) as Record<
        string,
        unknown
      >;
      await Promise.all([
        linkOrCopy(base.kernel, join(real, "vmlinuz")),
        linkOrCopy(base.initramfs, join(real, "initramfs.cpio")),
      ]);
      const manifest = {
        templateId: template.templateId,
        key,
        kernel: "vmlinuz",
        initramfs: "initramfs.cpio",
        rootfs: "rootfs.ext4",
        kernelPackage: baseManifest.kernelPackage,
        kernelRelease: base.kernelRelease,
        rootfsBytes: sizeMib * 1024 * 1024,
        sourceRootfs: baseManifest.sourceRootfs,
        modules: baseManifest.modules,
        base: { templateId: built.baseTemplateId, key: base.key },
        layers: built.layerKeys,
        contentBytes: contentKib * 1024,
        builtAt: new Date().toISOString(),
      };
      await writeFile(join(real, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
      const allocatedBytes = (await stat(disk)).blocks * 512;
      const dest = join(root, key);
      try {
        await rename(tmp, dest);
      } catch (err) {
        // Another vmm sharing the cache made the same image first: equal keys, equal images.
        const code = (err as NodeJS.ErrnoException).code;
        if ((code !== "ENOTEMPTY" && code !== "EEXIST") || !existsSync(join(dest, "manifest.json")))
          throw err;
        await rm(tmp, { recursive: true, force: true });
      }
      return { sizeMib, contentKib, allocatedBytes };
    } catch (err) {
      await rm(tmp, { recursive: true, force: true }).catch((e: Error) =>
        this.opts.logger.warn({ folder: tmp, err: e.message }, "cannot remove a failed flatten's folder"),
      );
      throw err;
    }
  }

  /**
   * Removes flattens a killed vmm left in `root` (`.tmp-*`, mounts included) once older than
   * a flatten may run: younger ones may belong to another vmm sharing the cache.
   */
  private async removeStale(root: string, now = Date.now()): Promise<void> {
    for (const n of await readdir(root).catch(() => [] as string[])) {
      if (!n.startsWith(".tmp-")) continue;
      const p = join(root, n);
      const st = await stat(p).catch(() => undefined);
      if (!st || now - st.mtimeMs < MAKE_TIMEOUT_MS + 60_000) continue;
      await unmountAllUnder(p);
      await rm(p, { recursive: true, force: true });
      this.opts.logger.warn({ folder: p }, "removed a flatten an earlier run left");
    }
  }

  private async sh(cmd: string, args: string[], timeoutMs = 120_000): Promise<string> {
    try {
      const { stdout } = await run(cmd, args, {
        env: this.env,
        timeout: timeoutMs,
        maxBuffer: 16 * 1024 * 1024,
      });
      return stdout;
    } catch (err) {
      const e = err as { stderr?: string; message: string; killed?: boolean };
      const why = e.killed
        ? `timed out after ${Math.round(timeoutMs / 1000)} s`
        : (e.stderr || e.message).trim();
      const tail = why
        .split("\n")
        .map((l) => l.trim())
        .filter(Boolean)
        .slice(-3)
        .join("; ");
      throw new Error(`${cmd} failed: ${tail.slice(-500)}`, { cause: err });
    }
  }
}

/**
 * Removes every image of a template (DeleteTemplate). The folder is renamed away first, so a
 * flatten finishing meanwhile fails rather than leaving half a folder behind.
 */
export async function removeTemplateImages(cacheDir: string, templateId: string): Promise<void> {
  if (!TEMPLATE_ID.test(templateId)) return;
  const root = join(cacheDir, "images", templateId);
  if (!existsSync(root)) return;
  const gone = join(cacheDir, "images", `.deleted-${templateId}-${randomBytes(4).toString("hex")}`);
  await rename(root, gone);
  await unmountAllUnder(gone);
  await rm(gone, { recursive: true, force: true });
}

/** Unmounts what is mounted at or below `dir`, deepest first (a flatten's overlay before its base). */
async function unmountAllUnder(dir: string): Promise<void> {
  const real = await realpath(dir).catch(() => dir);
  for (const m of (await mountsUnder(real)).sort().reverse()) await unmount(m);
}

/** `current` -> key, replaced with a rename so readers never see it missing. */
async function pointCurrent(root: string, key: string): Promise<void> {
  const tmp = join(root, `.current-${randomBytes(4).toString("hex")}`);
  await symlink(key, tmp);
  try {
    await rename(tmp, join(root, "current"));
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

async function linkOrCopy(src: string, dest: string): Promise<void> {
  try {
    await link(src, dest);
  } catch {
    // Another filesystem, or links not allowed: a copy (a kernel and an initramfs, some MiB).
    await copyFile(src, dest);
  }
}
