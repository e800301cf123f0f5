import { chmod, mkdir, rmdir } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { mountSizedDisk } from "./jail/mounts.js";

/** Where every runtime mounts a sandbox's share inside it. */
export const SHARE_MOUNT = "/mnt/dnah-share";

/**
 * Where a sandbox folder `dir` keeps its share: `<dir>/share`, or with a size
 * `<dir>/sharefs/share`, a folder in the share's own filesystem (mounted at `<dir>/sharefs`),
 * so that what the vmm stages beside it (`<dir>/sharefs/.uploads`: chunked uploads, tar
 * extraction) is renamed into it on the same mount, out of the sandbox's sight.
 */
export function shareFolder(dir: string, sized: boolean): string {
  return sized ? join(dir, SHARE_FS, "share") : join(dir, "share");
}

/** The folder a sized share's filesystem is mounted on, `<dir>/sharefs` (its image: `sharefs.img`). */
const SHARE_FS = "sharefs";

/**
 * The host folder whose filesystem holds a share's bytes: the share folder's parent, or for a
 * share with a filesystem of its own, the sandbox folder holding that filesystem's image.
 */
export function shareHostDir(shareDir: string): string {
  const parent = dirname(shareDir);
  return basename(parent) === SHARE_FS ? dirname(parent) : parent;
}

/**
 * Creates `path`, the host side of a sandbox's share, writable by every user in the sandbox
 * (root and the unprivileged `user`: bind mounts and virtiofsd both act with the caller's
 * uid). The mode is set after mkdir because the umask cuts mkdir's. Known weakness: a host
 * user who can traverse the state folder can write here too; owning the folder by the sandbox
 * user's uid (and a 0700 sandbox folder) would be tighter.
 *
 * With `sized` (`path` from `shareFolder(dir, true)`), the share's parent is a filesystem of
 * its own: a sparse ext4 image of `sizeMib` at `<parent>.img`, mounted on the parent with
 * nosuid,nodev (the runtime's cleanup unmounts everything under the sandbox's folder). The
 * sandbox writes into its share directly (virtiofsd, a bind mount), which no quota counts:
 * only a filesystem's size keeps it from filling the host's disk. nosuid,nodev make what its
 * root creates there (setuid-root files, device nodes) inert on the host.
 */
export async function createShareDir(
  path: string,
  sized?: { readonly sizeMib: number; readonly hostPath: string },
): Promise<string> {
  if (sized) {
    const fs = dirname(path);
    await mkdir(fs, { recursive: true });
    await mountSizedDisk(`${fs}.img`, fs, sized.sizeMib, sized.hostPath, ["nosuid", "nodev"]);
    await rmdir(join(fs, "lost+found"));
  }
  await mkdir(path, { recursive: true });
  await chmod(path, 0o777);
  return path;
}

/**
 * The share filesystem's size for a share quota: the quota plus ext4's own overhead (inode
 * tables, about 1.6 %), so that uploads up to the quota fit.
 */
export function shareFsMib(quotaBytes: number): number {
  return Math.ceil((quotaBytes * 1.02) / 1024 ** 2) + 16;
}
