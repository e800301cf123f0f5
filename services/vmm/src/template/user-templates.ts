import { existsSync } from "node:fs";
import { readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { TemplateImage } from "../runtime/runtime.js";
import { findTemplate, readStartSpec } from "./build.js";
import type { StartSpec } from "./recipes.js";

/**
 * Templates built from steps (BuildTemplate), on this host's cache:
 *
 *   <cacheDir>/layers/<key>/fs              one step's changes (an overlay upper: whiteouts kept)
 *   <cacheDir>/layers/<key>/.dnah-ready     written last: a layer without it is not one
 *   <cacheDir>/user-templates/<id>.json     the template: its base, layer keys, env, start
 *
 * A sandbox of such a template mounts the base template's rootfs with the layers over it, so
 * templates share their base and every cached step on disk. A microVM boots it from a disk
 * image flattened from its base's image and its layers (`runtime/vm/flatten.ts`):
 *
 *   <cacheDir>/images/<id>/{<key>/, current}   as `dnah image build` leaves a built-in's
 */
export interface UserTemplateRecord {
  readonly templateId: string;
  readonly baseTemplateId: string;
  readonly buildKey: string;
  /** Layer keys, bottom first. */
  readonly layers: readonly string[];
  readonly env: Readonly<Record<string, string>>;
  readonly workdir: string;
  readonly user: string;
  readonly start?: StartSpec & { readonly readyCommand?: string };
  readonly builtAt: string;
}

const TEMPLATE_ID = /^[a-z0-9][a-z0-9._-]{0,62}$/;
export const LAYER_READY = ".dnah-ready";

export function layersDir(cacheDir: string): string {
  return join(cacheDir, "layers");
}

export function layerFsDir(cacheDir: string, key: string): string {
  return join(layersDir(cacheDir), key, "fs");
}

export function layerReady(cacheDir: string, key: string): boolean {
  return existsSync(join(layersDir(cacheDir), key, LAYER_READY));
}

function recordPath(cacheDir: string, templateId: string): string {
  return join(cacheDir, "user-templates", `${templateId}.json`);
}

export async function readUserTemplate(
  cacheDir: string,
  templateId: string,
): Promise<UserTemplateRecord | undefined> {
  if (!TEMPLATE_ID.test(templateId)) return undefined;
  try {
    return JSON.parse(await readFile(recordPath(cacheDir, templateId), "utf8")) as UserTemplateRecord;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
}

/** Writes the record whole (temp file, then rename): a reader never sees half of one. */
export async function writeUserTemplate(cacheDir: string, rec: UserTemplateRecord): Promise<void> {
  const path = recordPath(cacheDir, rec.templateId);
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, `${JSON.stringify(rec, null, 2)}\n`);
  await rename(tmp, path);
}

export async function deleteUserTemplate(cacheDir: string, templateId: string): Promise<void> {
  if (!TEMPLATE_ID.test(templateId)) return;
  await rm(recordPath(cacheDir, templateId), { force: true });
}

/** Ids of the user templates this host holds (every layer present). */
export async function userTemplatesHeld(cacheDir: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(join(cacheDir, "user-templates"));
  } catch {
    return [];
  }
  const held: string[] = [];
  for (const n of names) {
    if (!n.endsWith(".json")) continue;
    const rec = await readUserTemplate(cacheDir, n.slice(0, -5)).catch(() => undefined);
    if (rec?.layers.every((k) => layerReady(cacheDir, k))) held.push(rec.templateId);
  }
  return held.slice(0, 1000);
}

/** What a template starts from: its base's rootfs plus layers (top first), env and start. */
export interface ResolvedTemplate {
  readonly image: TemplateImage;
  readonly start: (StartSpec & { readonly readyCommand?: string }) | undefined;
  readonly env: Readonly<Record<string, string>>;
  /** Set for user templates (built from steps). */
  readonly record?: UserTemplateRecord;
}

/**
 * A built-in template (a recipe built at install) or a user template on this host, or
 * undefined when neither is here. A user template whose layer went missing is an error.
 */
export async function resolveTemplate(
  cacheDir: string,
  templateId: string,
  mirror: string,
): Promise<ResolvedTemplate | undefined> {
  const builtin = findTemplate(cacheDir, templateId, mirror);
  if (builtin) return { image: builtin, start: await readStartSpec(builtin.rootfsDir), env: {} };
  const rec = await readUserTemplate(cacheDir, templateId);
  if (!rec) return undefined;
  const base = findTemplate(cacheDir, rec.baseTemplateId, mirror);
  if (!base)
    throw new Error(`template '${templateId}': its base '${rec.baseTemplateId}' is not on this host`);
  const missing = rec.layers.find((k) => !layerReady(cacheDir, k));
  if (missing) throw new Error(`template '${templateId}': layer ${missing} is missing on this host`);
  return {
    image: {
      templateId,
      rootfsDir: base.rootfsDir,
      layers: [...rec.layers].reverse().map((k) => layerFsDir(cacheDir, k)),
      built: { baseTemplateId: rec.baseTemplateId, layerKeys: rec.layers },
    },
    start: rec.start,
    env: rec.env,
    record: rec,
  };
}
