import { chown, mkdir, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { errnoOf, fsError, internal } from "../errors.js";
import type { User } from "../users.js";

/** Who owns what the agent creates: the request's user when the agent is root, else nobody changes. */
export interface Owner {
  uid: number;
  gid: number;
  /** False when the agent is not root (it cannot chown, and files are the agent's anyway). */
  chown: boolean;
}

export function ownerOf(user: User, privileged: boolean): Owner {
  return { uid: user.uid, gid: user.gid, chown: privileged };
}

/** `mkdir -p` where each directory created is mode 0755 and owned by `owner` (envd's EnsureDirs). */
export async function ensureDirs(path: string, owner: Owner): Promise<void> {
  const chain: string[] = [];
  for (let p = path; ; p = dirname(p)) {
    chain.push(p);
    if (dirname(p) === p) break;
  }
  chain.reverse();
  for (const sub of chain) {
    try {
      const st = await stat(sub);
      if (!st.isDirectory()) throw internal(`path is a file: ${sub}`);
      continue;
    } catch (err) {
      if (errnoOf(err) !== "ENOENT") throw fsError(err, "failed to stat directory");
    }
    try {
      await mkdir(sub, { mode: 0o755 });
    } catch (err) {
      if (errnoOf(err) !== "EEXIST") throw fsError(err, "failed to create directory");
    }
    if (owner.chown) {
      await chown(sub, owner.uid, owner.gid).catch((err: unknown) => {
        throw fsError(err, "failed to chown directory");
      });
    }
  }
}
