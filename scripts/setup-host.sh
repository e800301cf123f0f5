#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages dnah's jail runtime and template builder need.
# Idempotent: installs only what is missing. Needs root (the jail runtime mounts overlays and
# manages cgroups), so `npm start` and `npm test` run as root or through sudo.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
for pkg in bubblewrap debootstrap debian-archive-keyring util-linux iproute2 procps ca-certificates; do
  have "$pkg" || need+=("$pkg")
done
if ((${#need[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "dnah: missing packages: ${need[*]}; run 'sudo npm run setup'" >&2
    exit 1
  fi
  echo "dnah: installing ${need[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "dnah: the jail runtime needs root (overlay mounts, cgroups); run with sudo" >&2
  exit 1
fi
