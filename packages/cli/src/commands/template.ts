import type { Env } from "@dnah/platform";
import { buildTemplate, DEFAULT_CACHE_DIR, DEFAULT_DEBIAN_MIRROR, RECIPES } from "@dnah/vmm";

export interface TemplateBuildOptions {
  cacheDir?: string;
  mirror?: string;
  force?: boolean;
}

/** `dnah template build <id>`: builds (or reuses) a template rootfs, printing progress. */
export async function templateBuild(id: string, opts: TemplateBuildOptions, env: Env): Promise<void> {
  if (!RECIPES[id]) {
    process.stderr.write(`dnah: unknown template '${id}' (known: ${Object.keys(RECIPES).join(", ")})\n`);
    process.exitCode = 2;
    return;
  }
  const image = await buildTemplate(id, {
    cacheDir: opts.cacheDir ?? env.DNAH_CACHE_DIR ?? DEFAULT_CACHE_DIR,
    mirror: opts.mirror ?? env.DNAH_DEBIAN_MIRROR ?? DEFAULT_DEBIAN_MIRROR,
    env,
    force: opts.force ?? false,
    onProgress: (line) => process.stderr.write(`${line}\n`),
  });
  process.stdout.write(`${image.rootfsDir}\n`);
}
