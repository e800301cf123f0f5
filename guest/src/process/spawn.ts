import { type ChildProcess, type SpawnOptions, spawn } from "node:child_process";
import type { User } from "../users.js";
import { PTY_HELPER_SOURCE } from "./pty-helper.js";

/** PATH given to every process (envd passes its own PATH; ours is fixed and sane). */
export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

export interface LaunchConfig {
  /** True when the agent is root and switches to the requested user. */
  privileged: boolean;
  /** The `python3` that runs the PTY helper. */
  pythonPath: string;
  /**
   * util-linux `setpriv`, used when the user has supplementary groups: node's `uid`/`gid`
   * spawn options drop all supplementary groups. Without it processes get the primary group only.
   */
  setprivPath: string | undefined;
}

export interface LaunchRequest {
  user: User;
  cmd: string;
  args: string[];
  env: Record<string, string>;
  cwd: string;
  /** A stdin pipe (else /dev/null). Ignored for a PTY. */
  stdin: boolean;
  pty: { cols: number; rows: number } | undefined;
}

/** envd's process environment: PATH, HOME, USER, LOGNAME, then sandbox-wide, then request vars. */
export function processEnv(
  pathEnv: string,
  user: User,
  global: Record<string, string>,
  request: Record<string, string>,
): Record<string, string> {
  return { PATH: pathEnv, HOME: user.home, USER: user.name, LOGNAME: user.name, ...global, ...request };
}

/**
 * Spawns the command directly (no wrapper shell), so the child's pid is the command's own.
 * For a PTY the child is the Python helper, which reports the command's pid on fd 3.
 */
export function launch(cfg: LaunchConfig, req: LaunchRequest): ChildProcess {
  let file = req.cmd;
  let args = req.args;
  if (req.pty) {
    file = cfg.pythonPath;
    args = [
      "-I",
      "-S",
      "-c",
      PTY_HELPER_SOURCE,
      String(req.pty.cols),
      String(req.pty.rows),
      req.cmd,
      ...req.args,
    ];
  }
  const options: SpawnOptions = {
    cwd: req.cwd,
    env: req.env,
    stdio: req.pty ? ["pipe", "pipe", "pipe", "pipe"] : [req.stdin ? "pipe" : "ignore", "pipe", "pipe"],
    windowsHide: true,
  };
  const { user } = req;
  if (cfg.privileged && user.uid !== process.getuid?.()) {
    if (user.groups.length > 0 && cfg.setprivPath !== undefined) {
      args = [
        `--reuid=${user.uid}`,
        `--regid=${user.gid}`,
        `--groups=${user.groups.join(",")}`,
        "--",
        file,
        ...args,
      ];
      file = cfg.setprivPath;
    } else {
      options.uid = user.uid;
      options.gid = user.gid;
    }
  }
  return spawn(file, args, options);
}
