import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { VmImageMissingError } from "../../domain/errors.js";

/**
 * A template's microVM image as `dnah image build` leaves it (`guest/image/build.ts` writes
 * this layout; the manifest is the contract between the two):
 *   <cacheDir>/images/<template>/current/{manifest.json, vmlinuz, initramfs.cpio, rootfs.ext4}
 */
export interface VmImage {
  readonly kernel: string;
  readonly initramfs: string;
  /** Raw ext4 root disk: the base of every VM's copy-on-write disk. Never written. */
  readonly rootfs: string;
  readonly key: string;
  readonly kernelRelease: string;
}

/**
 * The current image of `templateId`. Refuses an image built from another template folder
 * than `rootfsDir` (the template was rebuilt since), so a VM never boots a stale root disk.
 */
export async function findVmImage(cacheDir: string, templateId: string, rootfsDir: string): Promise<VmImage> {
  const dir = join(cacheDir, "images", templateId, "current");
  let m: Record<string, unknown>;
  try {
    m = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as Record<string, unknown>;
  } catch (err) {
    throw new VmImageMissingError(templateId, (err as NodeJS.ErrnoException).code ?? "unreadable manifest");
  }
  const str = (k: string) => {
    const v = m[k];
    if (typeof v !== "string" || v === "" || v.includes("/"))
      throw new VmImageMissingError(templateId, `bad manifest field ${k}`);
    return v;
  };
  if (m.sourceRootfs !== rootfsDir) throw new VmImageMissingError(templateId, "built from an older template");
  return {
    kernel: join(dir, str("kernel")),
    initramfs: join(dir, str("initramfs")),
    rootfs: join(dir, str("rootfs")),
    key: str("key"),
    kernelRelease: str("kernelRelease"),
  };
}
