import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Env } from "@dnah/platform";
import {
  buildTemplate,
  DEFAULT_CACHE_DIR,
  DEFAULT_DEBIAN_MIRROR,
  ensureNodeRuntime,
  RECIPES,
} from "@dnah/vmm";
// The guest package exports only its agent; the image builder is a build tool beside it.
import { buildGuestImage } from "../../../../guest/image/build.js";

export interface ImageBuildOptions {
  cacheDir?: string;
  mirror?: string;
  agentDir?: string;
  kernelPackage?: string;
  force?: boolean;
}

const DEFAULT_AGENT_DIR = join(
  dirname(fileURLToPath(import.meta.url)),
  "..",
  "..",
  "..",
  "..",
  "guest",
  "dist",
);

/**
 * `dnah image build <template>`: the microVM image (kernel, initramfs, ext4 root disk) of a
 * template, for the qemu and cloud-hypervisor runtimes. Builds the template and the agent's
 * Node runtime first when they are missing; everything is cached by its inputs.
 */
export async function imageBuild(id: string, opts: ImageBuildOptions, env: Env): Promise<void> {
  if (!RECIPES[id]) {
    process.stderr.write(`dnah: unknown template '${id}' (known: ${Object.keys(RECIPES).join(", ")})\n`);
    process.exitCode = 2;
    return;
  }
  const cacheDir = opts.cacheDir ?? env.DNAH_CACHE_DIR ?? DEFAULT_CACHE_DIR;
  const progress = (line: string) => process.stderr.write(`${line}\n`);
  const template = await buildTemplate(id, {
    cacheDir,
    mirror: opts.mirror ?? env.DNAH_DEBIAN_MIRROR ?? DEFAULT_DEBIAN_MIRROR,
    env,
    onProgress: progress,
  });
  const image = await buildGuestImage({
    templateId: id,
    rootfsDir: template.rootfsDir,
    nodeRuntimeDir: await ensureNodeRuntime(cacheDir),
    agentDir: opts.agentDir ?? env.DNAH_AGENT_DIR ?? DEFAULT_AGENT_DIR,
    cacheDir,
    env,
    ...(opts.kernelPackage !== undefined && { kernelPackage: opts.kernelPackage }),
    force: opts.force ?? false,
    onProgress: progress,
  });
  process.stdout.write(`${image.dir}\n`);
}
