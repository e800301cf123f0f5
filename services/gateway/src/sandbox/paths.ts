import { posix } from "node:path";
import { InvalidArgumentError } from "../errors.js";

/** The sandbox user's home; relative paths and `~` resolve against it (as envd does). */
export const SANDBOX_HOME = "/home/user";
export const MAX_PATH_BYTES = 4096;

/**
 * Validates a path sent by a caller and returns the absolute, normalised path to give the
 * agent. Rules:
 *   - non-empty, no NUL byte, at most 4096 UTF-8 bytes;
 *   - `~` and `~/x` mean the home; other relative paths resolve against the home;
 *   - a path whose raw segments climb above `/` is refused, even though normalising would
 *     clamp it there: `/../../x` and (from /home/user) `../../../x` are mistakes or probes,
 *     and silently turning them into `/x` would hide that. `../../etc/passwd` from the home
 *     stays inside the tree and is fine: the sandbox's root is the whole VM, its home is not
 *     a jail.
 */
export function resolveSandboxPath(input: string, home: string = SANDBOX_HOME): string {
  if (input.length === 0) throw new InvalidArgumentError("path must not be empty");
  if (input.includes("\0")) throw new InvalidArgumentError("path must not contain NUL bytes");
  if (Buffer.byteLength(input, "utf8") > MAX_PATH_BYTES) {
    throw new InvalidArgumentError(`path is longer than ${MAX_PATH_BYTES} bytes`);
  }
  let raw: string;
  if (input === "~") raw = home;
  else if (input.startsWith("~/")) raw = `${home}/${input.slice(2)}`;
  else if (input.startsWith("/")) raw = input;
  else raw = `${home}/${input}`;

  let depth = 0;
  for (const seg of raw.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") {
      depth--;
      if (depth < 0) throw new InvalidArgumentError("path escapes the sandbox root");
    } else {
      depth++;
    }
  }
  const normal = posix.normalize(raw);
  return normal.length > 1 && normal.endsWith("/") ? normal.slice(0, -1) : normal;
}
