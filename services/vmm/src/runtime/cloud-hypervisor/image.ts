import { realpath } from "node:fs/promises";
import type { TemplateImage } from "../runtime.js";
import { findVmImage } from "../vm/image.js";
import type { VmImage } from "./cloud-hypervisor.js";

/**
 * The template's microVM image (`dnah image build`, read by the shared `vm/image.ts`), with
 * the `current` link resolved: CH records the kernel and initramfs paths in the VM config and
 * in every snapshot's `config.json` (and re-opens the initramfs at restore), so they must name
 * the build the VM started with, not whatever `current` points to later.
 */
export async function findChImage(cacheDir: string, template: TemplateImage): Promise<VmImage> {
  const img = await findVmImage(cacheDir, template.templateId, template.rootfsDir);
  const [kernel, initramfs, rootDisk] = await Promise.all([
    realpath(img.kernel),
    realpath(img.initramfs),
    realpath(img.rootfs),
  ]);
  return { kernel, initramfs, rootDisk };
}
