import { createHash } from "node:crypto";

/**
 * Template recipes: what goes into a template's root filesystem. The cache key is a hash of
 * the recipe, so changing a package list or a setup step rebuilds it and nothing else does.
 */
export interface TemplateRecipe {
  readonly templateId: string;
  readonly suite: string;
  readonly variant: "minbase";
  readonly packages: readonly string[];
  /** Shell run in the new root (chroot) after debootstrap. */
  readonly setup: string;
  /** The template's start command, written to `/etc/dnah/start.json` in its rootfs. */
  readonly start?: StartSpec;
}

/** Where a template describes its start command (read by the agent and by the vmm). */
export const START_SPEC_PATH = "etc/dnah/start.json";

/**
 * A template's start command: the agent runs it supervised (restarted when it dies) as `user`
 * in `cwd`; with `readyPort`, a sandbox counts as booted only once that guest port accepts.
 */
export interface StartSpec {
  readonly command: string;
  readonly readyPort?: number;
  readonly user: string;
  readonly cwd: string;
}

/** Parses and checks a `start.json`; throws an Error naming every problem. */
export function parseStartSpec(text: string): StartSpec {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new Error(`start.json is not JSON: ${(err as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json))
    throw new Error("start.json must be a JSON object");
  const o = json as Record<string, unknown>;
  const problems: string[] = [];
  const str = (key: string, fallback?: string): string => {
    const v = o[key] ?? fallback;
    if (typeof v !== "string" || v.trim() === "") {
      problems.push(`${key} must be a non-empty string`);
      return "";
    }
    return v;
  };
  const command = str("command");
  const user = str("user", "user");
  const cwd = str("cwd", "/");
  if (cwd !== "" && !cwd.startsWith("/")) problems.push("cwd must be an absolute path");
  const port = o.readyPort;
  if (
    port !== undefined &&
    port !== null &&
    !(Number.isInteger(port) && (port as number) >= 1 && (port as number) <= 65535)
  )
    problems.push("readyPort must be an integer port (1-65535)");
  if (problems.length > 0) throw new Error(`invalid start.json: ${problems.join("; ")}`);
  return typeof port === "number" ? { command, readyPort: port, user, cwd } : { command, user, cwd };
}

const USER_SETUP = `
set -e
if ! id user >/dev/null 2>&1; then
  useradd --create-home --uid 1000 --user-group --shell /bin/bash user
fi
echo 'user ALL=(ALL:ALL) NOPASSWD: ALL' > /etc/sudoers.d/user
chmod 0440 /etc/sudoers.d/user
echo sandbox > /etc/hostname
printf '127.0.0.1 localhost sandbox\\n::1 localhost ip6-localhost ip6-loopback\\n' > /etc/hosts
mkdir -p /opt/dnah/node /opt/dnah/agent /run/dnah /mnt/dnah-share
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/*.log
`;

const BASE_PACKAGES = [
  "bash",
  "coreutils",
  "python3",
  "git",
  "curl",
  "procps",
  "ca-certificates",
  "sudo",
  "util-linux",
] as const;

/** Guest port of the code-interpreter server (`@e2b/code-interpreter` dials it). */
export const CODE_INTERPRETER_PORT = 49999;

/**
 * Matplotlib builds its font cache on first import (seconds); build it now, as the user the
 * server runs as, so the first plot in a sandbox does not pay for it.
 */
const CODE_INTERPRETER_SETUP = `
set -e
runuser -u user -- env HOME=/home/user MPLBACKEND=Agg python3 -c 'import matplotlib.pyplot as plt; plt.figure()'
`;

export const RECIPES: Readonly<Record<string, TemplateRecipe>> = {
  base: {
    templateId: "base",
    suite: "bookworm",
    variant: "minbase",
    packages: [...BASE_PACKAGES],
    setup: USER_SETUP,
  },
  "code-interpreter": {
    templateId: "code-interpreter",
    suite: "bookworm",
    variant: "minbase",
    packages: [
      ...BASE_PACKAGES,
      "python3-ipykernel",
      "python3-jupyter-client",
      "python3-matplotlib",
      "python3-numpy",
      "python3-pandas",
      // debootstrap does not resolve virtual packages: name what provides the two it needs
      // (python3-cffi-backend-api-* for python3-zmq, libboost-regex1.74.0-icu72 for gdb).
      "python3-cffi-backend",
      "libboost-regex1.74.0",
    ],
    setup: USER_SETUP + CODE_INTERPRETER_SETUP,
    // The server and its JS kernel ship with the guest agent (/opt/dnah/agent), like the agent
    // itself: the template carries only what Debian provides.
    start: {
      command: "/usr/bin/python3 /opt/dnah/agent/code-interpreter/server.py",
      readyPort: CODE_INTERPRETER_PORT,
      user: "user",
      cwd: "/home/user",
    },
  },
};

export function recipeKey(recipe: TemplateRecipe, mirror: string): string {
  const h = createHash("sha256");
  h.update(JSON.stringify({ ...recipe, mirror, format: 1 }));
  return h.digest("hex").slice(0, 16);
}
