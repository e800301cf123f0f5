import { isAbsolute, join } from "node:path";
import { invalidArgument } from "./errors.js";
import type { User } from "./users.js";

/**
 * envd's `ExpandAndResolve`: `""` → the default workdir if `/init` set one, else home; `~` and
 * `~/x` → under home; relative → under home (not under the workdir); absolute → unchanged.
 * `~other` is refused, as envd does.
 */
export function resolvePath(path: string, user: User, defaultWorkdir: string | undefined): string {
  let p = path === "" && defaultWorkdir ? defaultWorkdir : path;
  if (p.startsWith("~")) {
    if (p.length > 1 && p[1] !== "/") {
      throw invalidArgument(
        `failed to expand path '${p}' for user '${user.name}': cannot expand user-specific home dir`,
      );
    }
    p = join(user.home, p.slice(1));
  }
  if (p.includes("\0")) throw invalidArgument(`invalid path '${p.replaceAll("\0", "\\0")}'`);
  return isAbsolute(p) ? p : join(user.home, p);
}
