import type { DaytonaDaemonCode } from "../errors.js";

/**
 * git's stderr → Daytona's `GIT_*` code. Pure; the first matching rule wins, so the more
 * specific messages come first. undefined: an ordinary failure (a 400 with git's message).
 */
const RULES: readonly [RegExp, DaytonaDaemonCode][] = [
  [
    /authentication failed|could not read (username|password)|terminal prompts disabled|invalid credentials|HTTP Basic: Access denied/i,
    "GIT_AUTH_FAILED",
  ],
  [/\[remote rejected\]|pre-receive hook declined|remote rejected/i, "GIT_REMOTE_REJECTED"],
  [/\[rejected\]|non-fast-forward|fetch first|failed to push some refs/i, "GIT_PUSH_REJECTED"],
  [
    /CONFLICT \(|Automatic merge failed|fix conflicts and then commit|unmerged files|not possible because you have unmerged/i,
    "GIT_MERGE_CONFLICT",
  ],
  [
    /would be overwritten by (checkout|merge)|Please commit your changes or stash them|uncommitted changes/i,
    "GIT_DIRTY_WORKTREE",
  ],
  [/a branch named .* already exists/i, "GIT_BRANCH_EXISTS"],
  [
    /branch '.*' not found|did not match any file\(s\) known to git|couldn't find remote ref|Remote branch .* not found|invalid reference|not a valid (branch|object) name|unknown revision|pathspec .* did not match/i,
    "GIT_BRANCH_NOT_FOUND",
  ],
  [
    /not a git repository|does not appear to be a git repository|repository .* not found|repository .* does not exist|Repository not found/i,
    "GIT_REPO_NOT_FOUND",
  ],
  [
    /could not resolve host|unable to access|connection refused|connection timed out|could not read from remote repository|unable to connect|SSL certificate problem|early EOF|the remote end hung up/i,
    "GIT_TRANSPORT_FAILED",
  ],
];

export function gitErrorCode(stderr: string): DaytonaDaemonCode | undefined {
  for (const [re, code] of RULES) if (re.test(stderr)) return code;
  return undefined;
}

/** One entry of `git status --porcelain=v2 -z --branch`, in Daytona's shape. */
export interface FileStatus {
  name: string;
  extra: string;
  staging: string;
  worktree: string;
}

export interface GitStatus {
  currentBranch: string;
  fileStatus: FileStatus[];
  ahead?: number;
  behind?: number;
  branchPublished?: boolean;
  upstream?: string;
  detached?: boolean;
}

const STATUS: Record<string, string> = {
  ".": "Unmodified",
  " ": "Unmodified",
  M: "Modified",
  T: "Modified",
  A: "Added",
  D: "Deleted",
  R: "Renamed",
  C: "Copied",
  U: "Updated but unmerged",
  "?": "Untracked",
  "!": "Untracked",
};

/** Parses `git status --porcelain=v2 -z --branch`. */
export function parseStatusV2(out: string): GitStatus {
  const recs = out.split("\0");
  const status: GitStatus = { currentBranch: "", fileStatus: [] };
  for (let i = 0; i < recs.length; i++) {
    const r = recs[i] ?? "";
    if (r.startsWith("# branch.head ")) {
      const head = r.slice(14);
      if (head === "(detached)") status.detached = true;
      else status.currentBranch = head;
    } else if (r.startsWith("# branch.upstream ")) {
      status.upstream = r.slice(18);
      status.branchPublished = true;
    } else if (r.startsWith("# branch.ab ")) {
      const m = /^\+(\d+) -(\d+)$/.exec(r.slice(12));
      if (m) {
        status.ahead = Number(m[1]);
        status.behind = Number(m[2]);
      }
    } else if (r.startsWith("1 ") || r.startsWith("u ")) {
      const f = r.split(" ");
      const xy = f[1] ?? "..";
      const name = f.slice(r.startsWith("1 ") ? 8 : 10).join(" ");
      status.fileStatus.push(entry(name, xy, ""));
    } else if (r.startsWith("2 ")) {
      const f = r.split(" ");
      const name = f.slice(9).join(" ");
      const orig = recs[++i] ?? "";
      status.fileStatus.push(entry(name, f[1] ?? "..", orig));
    } else if (r.startsWith("? ")) {
      status.fileStatus.push({ name: r.slice(2), extra: "", staging: "Untracked", worktree: "Untracked" });
    }
  }
  if (status.branchPublished === undefined) status.branchPublished = false;
  return status;
}

function entry(name: string, xy: string, extra: string): FileStatus {
  const [x = ".", y = "."] = xy;
  return { name, extra, staging: STATUS[x] ?? "Unmodified", worktree: STATUS[y] ?? "Unmodified" };
}
