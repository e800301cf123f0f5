import { execFile } from "node:child_process";
import { constants } from "node:fs";
import { copyFile, rm, stat } from "node:fs/promises";
import { promisify } from "node:util";

const run = promisify(execFile);

/** How a VM's root disk shares blocks with its image. */
export type CowMethod = "reflink" | "qcow2-overlay";

export interface CowDisk {
  readonly path: string;
  /** The disk format the VMM must be told (`format=` for qemu, `image_type` for CH). */
  readonly format: "raw" | "qcow2";
  readonly method: CowMethod;
}

/**
 * A copy-on-write root disk for one VM from a raw base image: a reflink clone where the
 * filesystem supports it (XFS, btrfs: O(metadata), raw, self-contained), otherwise a qcow2
 * overlay backed by the base (any filesystem; the base must stay where it is, read-only).
 * `destNoExt` gets `.raw` or `.qcow2` appended.
 */
export async function createCowDisk(
  baseRaw: string,
  destNoExt: string,
  env: Readonly<Record<string, string>>,
): Promise<CowDisk> {
  const raw = `${destNoExt}.raw`;
  try {
    await copyFile(baseRaw, raw, constants.COPYFILE_FICLONE_FORCE);
    return { path: raw, format: "raw", method: "reflink" };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // EOPNOTSUPP / EXDEV / ENOTSUP / EINVAL: no reflink here; anything else is a real error.
    if (!["EOPNOTSUPP", "ENOTSUP", "EXDEV", "EINVAL", "ENOSYS"].includes(code ?? "")) throw err;
    await rm(raw, { force: true });
  }
  const qcow = `${destNoExt}.qcow2`;
  await run("qemu-img", ["create", "-q", "-f", "qcow2", "-F", "raw", "-b", baseRaw, qcow], {
    env,
    timeout: 30_000,
  });
  return { path: qcow, format: "qcow2", method: "qcow2-overlay" };
}

/** Bytes a VM's disk file really occupies on the host (its own blocks, not the base's). */
export async function diskAllocatedBytes(path: string): Promise<number> {
  try {
    return (await stat(path)).blocks * 512;
  } catch {
    return 0;
  }
}

/** The size the guest sees: the raw file's length, or the qcow2 header's virtual size. */
export async function diskVirtualBytes(
  disk: CowDisk,
  env: Readonly<Record<string, string>>,
): Promise<number> {
  if (disk.format === "raw") return (await stat(disk.path)).size;
  const { stdout } = await run("qemu-img", ["info", "--output=json", "-U", disk.path], {
    env,
    timeout: 10_000,
  });
  const size = (JSON.parse(stdout) as { "virtual-size"?: number })["virtual-size"];
  return typeof size === "number" ? size : 0;
}
