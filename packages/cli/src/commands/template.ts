import { execFile } from "node:child_process";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import type { Env } from "@dnah/platform";
import { buildTemplate, DEFAULT_CACHE_DIR, DEFAULT_DEBIAN_MIRROR, RECIPES } from "@dnah/vmm";
import { out, printJson, table } from "../api.js";

const execFileAsync = promisify(execFile);

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

export interface TemplateEntry {
  templateId: string;
  /** The recipe hash the folder is named after: a changed recipe builds a new one. */
  key: string;
  path: string;
  sizeBytes: number;
  builtAt: string | null;
}

/**
 * Bytes a folder takes on disk, as `du` counts them (each hard-linked inode once). du, not a
 * walk in JavaScript: a rootfs has tens of thousands of files and du is ten times faster.
 */
async function diskBytes(dir: string): Promise<number> {
  const { stdout } = await execFileAsync("du", ["-s", "-B1", dir]);
  const n = Number(stdout.split("\t", 1)[0]);
  if (!Number.isFinite(n)) throw new Error(`du ${dir}: unexpected output '${stdout.slice(0, 100)}'`);
  return n;
}

/** The built templates under `<cacheDir>/templates/<id>/<key>/` (those marked ready), by id. */
export async function listTemplates(cacheDir: string): Promise<TemplateEntry[]> {
  const root = join(cacheDir, "templates");
  const ids = await readdir(root).catch((err: NodeJS.ErrnoException) => {
    if (err.code === "ENOENT") return [] as string[];
    throw err;
  });
  const out: TemplateEntry[] = [];
  for (const templateId of ids.sort()) {
    const keys = await readdir(join(root, templateId)).catch(() => [] as string[]);
    for (const key of keys.sort()) {
      const path = join(root, templateId, key);
      let ready: { builtAt?: unknown };
      try {
        ready = JSON.parse(await readFile(join(path, ".dnah-ready"), "utf8")) as { builtAt?: unknown };
      } catch {
        continue; // being built, or a failed build's leftovers: not a template
      }
      out.push({
        templateId,
        key,
        path: join(path, "rootfs"),
        sizeBytes: await diskBytes(path),
        builtAt: typeof ready.builtAt === "string" ? ready.builtAt : null,
      });
    }
  }
  return out;
}

/** The `template list` table (pure): TEMPLATE, KEY, SIZE, BUILT, PATH. */
export function formatTemplateTable(entries: readonly TemplateEntry[]): string {
  return table([
    ["TEMPLATE", "KEY", "SIZE", "BUILT", "PATH"],
    ...entries.map((t) => [
      t.templateId,
      t.key,
      `${(t.sizeBytes / 1024 / 1024).toFixed(0)} MiB`,
      t.builtAt === null ? "-" : `${t.builtAt.slice(0, 19)}Z`,
      t.path,
    ]),
  ]);
}

/** `dnah template list`: what `template build` left in the cache, with size and build time. */
export async function templateList(opts: { cacheDir?: string; json?: boolean }, env: Env): Promise<void> {
  const entries = await listTemplates(opts.cacheDir ?? env.DNAH_CACHE_DIR ?? DEFAULT_CACHE_DIR);
  await (opts.json ? printJson(entries) : out(formatTemplateTable(entries)));
}
