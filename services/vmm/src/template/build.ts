import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import type { TemplateImage } from "../runtime/runtime.js";
import { RECIPES, recipeKey, type TemplateRecipe } from "./recipes.js";

export interface BuildOptions {
  /** Templates are cached in `<cacheDir>/templates/<id>/<key>/rootfs`. */
  cacheDir: string;
  mirror: string;
  /** Progress lines for a person watching (stderr in the CLI). */
  onProgress?: (line: string) => void;
  /** Rebuild even when a cached copy exists. */
  force?: boolean;
  /** Environment for debootstrap and chroot (PATH, proxy settings). */
  env: Readonly<Record<string, string | undefined>>;
}

const READY = ".dnah-ready";

export function templatePath(cacheDir: string, recipe: TemplateRecipe, mirror: string): string {
  return join(cacheDir, "templates", recipe.templateId, recipeKey(recipe, mirror));
}

/** The built template for `templateId`, or undefined when it has not been built. */
export function findTemplate(
  cacheDir: string,
  templateId: string,
  mirror: string,
): TemplateImage | undefined {
  const recipe = RECIPES[templateId];
  if (!recipe) return undefined;
  const dir = templatePath(cacheDir, recipe, mirror);
  if (!existsSync(join(dir, READY))) return undefined;
  return { templateId, rootfsDir: join(dir, "rootfs") };
}

/**
 * Builds a template's root filesystem from Debian's archive with debootstrap, once: the result
 * is keyed by the recipe and reused. Builds into a temporary folder and renames it into
 * place, so an interrupted build never leaves a half template that looks finished.
 */
export async function buildTemplate(templateId: string, opts: BuildOptions): Promise<TemplateImage> {
  const recipe = RECIPES[templateId];
  if (!recipe)
    throw new Error(`no recipe for template '${templateId}' (known: ${Object.keys(RECIPES).join(", ")})`);
  const say = opts.onProgress ?? (() => {});
  const dir = templatePath(opts.cacheDir, recipe, opts.mirror);
  if (!opts.force && existsSync(join(dir, READY))) {
    say(`[template ${templateId}] cached at ${dir}`);
    return { templateId, rootfsDir: join(dir, "rootfs") };
  }
  const tmp = `${dir}.tmp-${process.pid}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  const started = Date.now();
  say(
    `[template ${templateId}] debootstrap ${recipe.suite} (${recipe.packages.join(", ")}) from ${opts.mirror}`,
  );
  await runWithProgress(
    opts.env,
    "debootstrap",
    [
      `--variant=${recipe.variant}`,
      `--include=${recipe.packages.join(",")}`,
      recipe.suite,
      join(tmp, "rootfs"),
      opts.mirror,
    ],
    (line) => {
      const m = /^I: (Retrieving|Validating|Extracting|Unpacking|Configuring|Installing) (.*)$/.exec(line);
      if (m?.[1] === "Retrieving" || m?.[1] === "Configuring")
        return `[template ${templateId}] ${m[1].toLowerCase()} ${m[2]}`;
      if (/^(W|E): /.test(line)) return `[template ${templateId}] ${line}`;
      if (/^I: Base system installed/.test(line)) return `[template ${templateId}] base system installed`;
      return undefined;
    },
    say,
  );
  say(`[template ${templateId}] configuring user 'user' (uid 1000), sudo, hostname`);
  await runWithProgress(
    opts.env,
    "chroot",
    [join(tmp, "rootfs"), "/bin/sh", "-c", recipe.setup],
    () => undefined,
    say,
  );
  await writeFile(
    join(tmp, READY),
    JSON.stringify({ templateId, key: recipeKey(recipe, opts.mirror), builtAt: new Date().toISOString() }),
  );
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
  say(`[template ${templateId}] built in ${((Date.now() - started) / 1000).toFixed(1)} s at ${dir}`);
  return { templateId, rootfsDir: join(dir, "rootfs") };
}

async function runWithProgress(
  env: BuildOptions["env"],
  cmd: string,
  args: string[],
  filter: (line: string) => string | undefined,
  say: (line: string) => void,
): Promise<void> {
  const child = spawn(cmd, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...env, DEBIAN_FRONTEND: "noninteractive" },
  });
  const tail: string[] = [];
  const onLine = (line: string) => {
    tail.push(line);
    if (tail.length > 30) tail.shift();
    const shown = filter(line);
    if (shown) say(shown);
  };
  createInterface({ input: child.stdout! }).on("line", onLine);
  createInterface({ input: child.stderr! }).on("line", onLine);
  const code = await new Promise<number>((resolve, reject) => {
    child.on("error", (err) =>
      reject(new Error(`cannot run ${cmd}: ${err.message} (run 'npm run setup' first)`)),
    );
    child.on("exit", (c, s) => resolve(c ?? (s ? 128 : 1)));
  });
  if (code !== 0) throw new Error(`${cmd} failed with exit code ${code}; last output:\n${tail.join("\n")}`);
}
