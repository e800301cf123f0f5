import type { TemplateImage } from "../runtime.js";
import type { VmImages } from "../vm/flatten.js";
import type { VmImage } from "./cloud-hypervisor.js";

/**
 * The template's microVM image (`dnah image build`, or flattened for a template built from
 * steps; read by the shared `vm/image.ts`). Its paths name the image's own folder (the
 * `current` link resolved): CH records the kernel and initramfs paths in the VM config and in
 * every snapshot's `config.json` (and re-opens the initramfs at restore), so they must name the
 * build the VM started with, not whatever `current` points to later.
 */
export async function findChImage(
  images: VmImages,
  template: TemplateImage,
  log?: (line: string) => void,
): Promise<VmImage> {
  const img = await images.find(template, log);
  return { kernel: img.kernel, initramfs: img.initramfs, rootDisk: img.rootfs };
}
