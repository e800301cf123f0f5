import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { promisify } from "node:util";

const run = promisify(execFile);

/**
 * Mounts an overlay of `lower` (read-only template; several layers top first) and `upper`
 * (the sandbox's changes).
 */
export async function mountOverlay(
  lowers: string | readonly string[],
  upper: string,
  work: string,
  target: string,
): Promise<void> {
  const lowerList = typeof lowers === "string" ? [lowers] : lowers;
  const lower = lowerList.join(":");
  for (const p of [...lowerList, upper, work]) {
    // overlayfs options are comma- and colon-separated: refuse paths that would confuse them.
    if (/[,:\s]/.test(p)) throw new Error(`overlay path contains a separator: ${p}`);
  }
  await run("mount", [
    "-t",
    "overlay",
    "overlay",
    "-o",
    `lowerdir=${lower},upperdir=${upper},workdir=${work}`,
    target,
  ]);
}

/**
 * A filesystem of `sizeMib` at `target`: a sparse ext4 image (`image`, no journal, no
 * reserved blocks; about 30 ms to make) on a loop device that `umount` releases. Writes past
 * its size fail with ENOSPC inside the sandbox and nowhere else. `options` are added to the
 * mount's (e.g. `nosuid`, `nodev`).
 */
export async function mountSizedDisk(
  image: string,
  target: string,
  sizeMib: number,
  path: string,
  options: readonly string[] = [],
): Promise<void> {
  const env = { PATH: path };
  await run("truncate", ["-s", `${sizeMib}M`, image], { env });
  await run(
    "mkfs.ext4",
    ["-q", "-F", "-O", "^has_journal", "-m", "0", "-E", "lazy_itable_init=1,nodiscard", image],
    {
      env,
    },
  );
  await run("mount", ["-o", ["loop", "noatime", ...options].join(","), image, target], { env });
}

/** Unmounts `target`, lazily if something still holds it. A path not mounted is fine. */
export async function unmount(target: string): Promise<void> {
  if (!(await isMounted(target))) return;
  try {
    await run("umount", [target]);
  } catch {
    await run("umount", ["-l", target]);
  }
}

export async function isMounted(target: string): Promise<boolean> {
  const mounts = await readFile("/proc/self/mounts", "utf8");
  return mounts.split("\n").some((line) => line.split(" ")[1] === target);
}

/** Mount points at or below `prefix` (octal escapes in /proc/self/mounts decoded). */
export async function mountsUnder(prefix: string): Promise<string[]> {
  const mounts = await readFile("/proc/self/mounts", "utf8");
  return mounts
    .split("\n")
    .map((line) => line.split(" ")[1] ?? "")
    .map((p) => p.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8))))
    .filter((p) => p === prefix || p.startsWith(`${prefix}/`));
}
