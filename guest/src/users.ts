import { readFile, stat } from "node:fs/promises";
import { userInfo } from "node:os";

export interface User {
  name: string;
  uid: number;
  gid: number;
  home: string;
  /** Supplementary group ids, without the primary group. */
  groups: number[];
}

export interface UserDbOptions {
  /**
   * True when the agent runs as root and can act as any user in /etc/passwd. When false
   * (tests, local debugging) it can only be itself: it accepts its own name and `user`, both
   * mapped to the current user.
   */
  privileged: boolean;
  passwdPath?: string;
  groupPath?: string;
}

interface Parsed {
  byName: Map<string, User>;
  userNames: Map<number, string>;
  groupNames: Map<number, string>;
}

/** Name lookups for `EntryInfo.owner`/`group`, with envd's numeric fallback. */
export interface NameLookup {
  owner(uid: number): string;
  group(gid: number): string;
}

/**
 * /etc/passwd and /etc/group, re-read when they change (users may be added inside the
 * sandbox). Missing or unreadable files behave as empty.
 */
export class UserDb {
  readonly privileged: boolean;
  private readonly passwdPath: string;
  private readonly groupPath: string;
  private cache: { key: string; parsed: Parsed } | undefined;

  constructor(opts: UserDbOptions) {
    this.privileged = opts.privileged;
    this.passwdPath = opts.passwdPath ?? "/etc/passwd";
    this.groupPath = opts.groupPath ?? "/etc/group";
  }

  async lookup(name: string): Promise<User | undefined> {
    const parsed = await this.load();
    if (this.privileged) return parsed.byName.get(name);
    const me = userInfo();
    if (name !== me.username && name !== "user") return undefined;
    const fromDb = parsed.byName.get(me.username);
    return {
      name: me.username,
      uid: me.uid,
      gid: me.gid,
      home: fromDb?.home ?? me.homedir,
      groups: fromDb?.groups ?? [],
    };
  }

  async names(): Promise<NameLookup> {
    const parsed = await this.load();
    return {
      owner: (uid) => parsed.userNames.get(uid) ?? String(uid),
      group: (gid) => parsed.groupNames.get(gid) ?? String(gid),
    };
  }

  private async load(): Promise<Parsed> {
    const key = `${await fileKey(this.passwdPath)}|${await fileKey(this.groupPath)}`;
    if (this.cache?.key === key) return this.cache.parsed;
    const [passwd, group] = await Promise.all([readText(this.passwdPath), readText(this.groupPath)]);
    const parsed = parse(passwd, group);
    this.cache = { key, parsed };
    return parsed;
  }
}

async function fileKey(path: string): Promise<string> {
  try {
    const s = await stat(path);
    return `${s.mtimeMs}:${s.size}:${s.ino}`;
  } catch {
    return "missing";
  }
}

async function readText(path: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch {
    return "";
  }
}

function parse(passwd: string, group: string): Parsed {
  const groupNames = new Map<number, string>();
  const membersOf = new Map<string, number[]>();
  for (const line of group.split("\n")) {
    const f = line.split(":");
    const gid = Number(f[2]);
    if (f.length < 4 || !f[0] || line.startsWith("#") || !Number.isInteger(gid)) continue;
    if (!groupNames.has(gid)) groupNames.set(gid, f[0]);
    for (const member of (f[3] ?? "").split(",")) {
      const m = member.trim();
      if (m === "") continue;
      const list = membersOf.get(m) ?? [];
      list.push(gid);
      membersOf.set(m, list);
    }
  }
  const byName = new Map<string, User>();
  const userNames = new Map<number, string>();
  for (const line of passwd.split("\n")) {
    const f = line.split(":");
    const uid = Number(f[2]);
    const gid = Number(f[3]);
    if (f.length < 7 || !f[0] || line.startsWith("#") || !Number.isInteger(uid) || !Number.isInteger(gid))
      continue;
    const name = f[0];
    if (byName.has(name)) continue;
    const groups = [...new Set(membersOf.get(name) ?? [])].filter((g) => g !== gid);
    byName.set(name, { name, uid, gid, home: f[5] || "/", groups });
    if (!userNames.has(uid)) userNames.set(uid, name);
  }
  return { byName, userNames, groupNames };
}
