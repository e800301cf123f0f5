import { readFile, realpath } from "node:fs/promises";
import { join } from "node:path";
import { VmImageMissingError } from "../../domain/errors.js";
import type { BuiltFrom } from "../runtime.js";

/**
 * A template's microVM image as `dnah image build` leaves it (`guest/image/build.ts` writes
 * this layout; the manifest is the contract between the two):
 *   <cacheDir>/images/<template>/current/{manifest.json, vmlinuz, initramfs.cpio, rootfs.ext4}
 * A template built from steps gets the same layout from `vm/flatten.ts`, its manifest adding
 * `base` (the base template's image it was made over) and `layers` (its layer keys).
 */
export interface VmImage {
  readonly kernel: string;
  readonly initramfs: string;
  /**
   * Raw ext4 root disk: the base of every VM's copy-on-write disk. Never written. Its path
   * names the image's own folder (`current` resolved), so a qcow2 overlay made on it keeps
   * naming it after `current` moves on.
   */
  readonly rootfs: string;
  readonly key: string;
  readonly kernelRelease: string;
}

/** What a manifest must say to be booted for a template (see `manifestProblem`). */
export interface ImageExpectation {
  readonly templateId: string;
  /** Set for a template built from steps: its base image's current key and its layers. */
  readonly built?: { readonly baseImageKey: string; readonly from: BuiltFrom };
}

const FILE_FIELDS = ["kernel", "initramfs", "rootfs", "key", "kernelRelease"] as const;

/**
 * Why an image manifest is not the one to boot (pure), or undefined when it is. A built-in
 * template's image has no `base`/`layers`; a template built from steps needs both, naming its
 * base image's current key and exactly its layer keys in order — so a rebuilt template (other
 * layers) or a rebuilt base image (another agent, kernel) never boots a stale disk.
 */
export function manifestProblem(m: unknown, expect: ImageExpectation): string | undefined {
  if (typeof m !== "object" || m === null || Array.isArray(m)) return "manifest is not a JSON object";
  const o = m as Record<string, unknown>;
  for (const k of FILE_FIELDS) {
    const v = o[k];
    if (typeof v !== "string" || v === "" || v.includes("/")) return `bad manifest field ${k}`;
  }
  if (o.templateId !== undefined && o.templateId !== expect.templateId)
    return `made for template '${String(o.templateId)}'`;
  if (!expect.built) {
    if (o.base !== undefined || o.layers !== undefined) return "made from steps, not by 'dnah image build'";
    return undefined;
  }
  const { baseImageKey, from } = expect.built;
  const base = o.base as { templateId?: unknown; key?: unknown } | undefined;
  if (typeof base !== "object" || base === null) return "not made from steps (no base image named)";
  if (base.templateId !== from.baseTemplateId)
    return `made over template '${String(base.templateId)}', not '${from.baseTemplateId}'`;
  if (base.key !== baseImageKey)
    return `made over the '${from.baseTemplateId}' image ${String(base.key)}, which is not its current one (${baseImageKey})`;
  const layers = o.layers;
  if (
    !Array.isArray(layers) ||
    layers.length !== from.layerKeys.length ||
    layers.some((k, i) => k !== from.layerKeys[i])
  )
    return "made from other layers (the template was rebuilt since)";
  return undefined;
}

/**
 * The current image of `templateId`. Refuses an image built from another template folder
 * than `rootfsDir` (the template was rebuilt since), so a VM never boots a stale root disk;
 * with `built` (a template built from steps), also one not made of exactly its base's current
 * image and its layers (`manifestProblem`).
 */
export async function findVmImage(
  cacheDir: string,
  templateId: string,
  rootfsDir: string,
  built?: BuiltFrom,
): Promise<VmImage> {
  let dir: string;
  let m: Record<string, unknown>;
  try {
    // Resolved first: the manifest and the files are then read from one image folder even
    // when `current` moves meanwhile.
    dir = await realpath(join(cacheDir, "images", templateId, "current"));
    m = JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")) as Record<string, unknown>;
  } catch (err) {
    throw new VmImageMissingError(templateId, (err as NodeJS.ErrnoException).code ?? "unreadable manifest");
  }
  const baseImageKey = built && (await findVmImage(cacheDir, built.baseTemplateId, rootfsDir)).key;
  const problem = manifestProblem(m, {
    templateId,
    ...(built && baseImageKey ? { built: { baseImageKey, from: built } } : {}),
  });
  if (problem) throw new VmImageMissingError(templateId, problem);
  if (!(await samePath(m.sourceRootfs, rootfsDir)))
    throw new VmImageMissingError(templateId, "built from an older template");
  const str = (k: (typeof FILE_FIELDS)[number]) => m[k] as string;
  return {
    kernel: join(dir, str("kernel")),
    initramfs: join(dir, str("initramfs")),
    rootfs: join(dir, str("rootfs")),
    key: str("key"),
    kernelRelease: str("kernelRelease"),
  };
}

/** Equal paths, or two names of one folder (a cache reached through a link). */
async function samePath(recorded: unknown, path: string): Promise<boolean> {
  if (typeof recorded !== "string") return false;
  if (recorded === path) return true;
  const [a, b] = await Promise.all([realpath(recorded).catch(() => ""), realpath(path).catch(() => "")]);
  return a !== "" && a === b;
}
