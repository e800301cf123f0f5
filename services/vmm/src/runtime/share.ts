import { chmod, mkdir } from "node:fs/promises";

/** Where every runtime mounts a sandbox's share inside it. */
export const SHARE_MOUNT = "/mnt/dnah-share";

/**
 * Creates `path`, the host side of a sandbox's share, writable by every user in the sandbox
 * (root and the unprivileged `user`: bind mounts and virtiofsd both act with the caller's
 * uid). The mode is set after mkdir because the umask cuts mkdir's. Known weakness: a host
 * user who can traverse the state folder can write here too; owning the folder by the sandbox
 * user's uid (and a 0700 sandbox folder) would be tighter.
 */
export async function createShareDir(path: string): Promise<string> {
  await mkdir(path, { recursive: true });
  await chmod(path, 0o777);
  return path;
}
