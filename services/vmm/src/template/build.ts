import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import type { TemplateImage } from "../runtime/runtime.js";
import {
  parseStartSpec,
  RECIPES,
  recipeKey,
  START_SPEC_PATH,
  type StartSpec,
  type TemplateRecipe,
} from "./recipes.js";

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
  try {
    await buildInto(tmp, recipe, opts, say);
  } catch (err) {
    // A failed build leaves nothing behind but what explains it.
    const detail = await debootstrapLogTail(join(tmp, "rootfs"));
    await rm(tmp, { recursive: true, force: true });
    throw detail
      ? new Error(`${(err as Error).message}\ndebootstrap.log (end):\n${detail}`, { cause: err })
      : err;
  }
  await rm(dir, { recursive: true, force: true });
  await rename(tmp, dir);
  say(`[template ${templateId}] built in ${((Date.now() - started) / 1000).toFixed(1)} s at ${dir}`);
  return { templateId, rootfsDir: join(dir, "rootfs") };
}

async function debootstrapLogTail(rootfs: string): Promise<string | undefined> {
  try {
    const text = await readFile(join(rootfs, "debootstrap", "debootstrap.log"), "utf8");
    return text.trimEnd().split("\n").slice(-40).join("\n");
  } catch {
    return undefined; // debootstrap got no further than its log
  }
}

async function buildInto(
  tmp: string,
  recipe: TemplateRecipe,
  opts: BuildOptions,
  say: (line: string) => void,
): Promise<void> {
  const { templateId } = recipe;
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
  if (recipe.start) {
    const file = join(tmp, "rootfs", START_SPEC_PATH);
    say(`[template ${templateId}] start command: ${recipe.start.command}`);
    await mkdir(dirname(file), { recursive: true });
    await writeFile(file, `${JSON.stringify(recipe.start, null, 2)}\n`, { mode: 0o644 });
  }
  await writeFile(
    join(tmp, READY),
    JSON.stringify({ templateId, key: recipeKey(recipe, opts.mirror), builtAt: new Date().toISOString() }),
  );
}

/**
 * The start command a template's rootfs describes (`/etc/dnah/start.json`), or undefined when
 * it has none. A malformed file is an error: the template is broken, not command-less.
 */
export async function readStartSpec(rootfsDir: string): Promise<StartSpec | undefined> {
  let text: string;
  try {
    text = await readFile(join(rootfsDir, START_SPEC_PATH), "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  return parseStartSpec(text);
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
