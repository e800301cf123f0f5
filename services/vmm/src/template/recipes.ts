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

export const RECIPES: Readonly<Record<string, TemplateRecipe>> = {
  base: {
    templateId: "base",
    suite: "bookworm",
    variant: "minbase",
    packages: [
      "bash",
      "coreutils",
      "python3",
      "git",
      "curl",
      "procps",
      "ca-certificates",
      "sudo",
      "util-linux",
    ],
    setup: USER_SETUP,
  },
};

export function recipeKey(recipe: TemplateRecipe, mirror: string): string {
  const h = createHash("sha256");
  h.update(JSON.stringify({ ...recipe, mirror, format: 1 }));
  return h.digest("hex").slice(0, 16);
}
