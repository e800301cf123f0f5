#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages dnah needs: the jail runtime and template builder, and
# the qemu microVM runtime with its guest image builder. Idempotent and quiet when everything
# is there: installs only what is missing. Needs root (the jail runtime mounts overlays and
# manages cgroups), so `npm start` and `npm test` run as root or through sudo.
set -euo pipefail
need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
# jail runtime + template builds
for pkg in bubblewrap debootstrap debian-archive-keyring util-linux e2fsprogs iproute2 procps ca-certificates shellcheck jq; do
  have "$pkg" || need+=("$pkg")
done
# qemu runtime + `dnah image build`: qemu (TCG or KVM), qcow2 overlays, ext4 images without
# loop mounts (mkfs.ext4 -d), the initramfs (cpio, depmod), the static guest init (gcc,
# libc6-dev), per-VM NAT (iptables).
for pkg in qemu-system-x86 qemu-utils e2fsprogs cpio kmod gcc libc6-dev iptables; do
  have "$pkg" || need+=("$pkg")
done
if [[ $(id -u) -ne 0 ]]; then
  if ((${#need[@]} > 0)); then
    echo "dnah: missing packages: ${need[*]}; run 'sudo npm run setup'" >&2
    exit 1
  fi
  echo "dnah: the jail runtime needs root (overlay mounts, cgroups); run with sudo" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
updated=0
apt_update() {
  if ((updated == 0)); then
    apt-get update -qq
    updated=1
  fi
}
if ((${#need[@]} > 0)); then
  echo "dnah: installing ${need[*]}" >&2
  apt_update
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# virtiofsd: the Rust daemon is its own package from trixie on; bookworm has none, and its
# qemu-system-common ships the C daemon at /usr/lib/qemu/virtiofsd instead (the runtime finds
# either). Install the package only where the archive has it.
if [[ ! -x /usr/libexec/virtiofsd && ! -x /usr/lib/qemu/virtiofsd ]] && ! have virtiofsd; then
  apt_update
  if [[ -n $(apt-cache policy virtiofsd 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -v '(none)') ]]; then
    echo "dnah: installing virtiofsd" >&2
    apt-get install -y -qq --no-install-recommends virtiofsd >/dev/null
  else
    echo "dnah: warning: no virtiofsd in this archive; the qemu runtime cannot share folders" >&2
  fi
fi

# vhost-device-vsock (the hybrid-vsock backend of the qemu runtime) is only in Debian sid.
# sid is added with Pin-Priority 100, so it is a candidate only for packages no other suite
# has and never upgrades anything. Its Depends (0.3.0-2: libc6 >= 2.34, libgcc-s1 >= 4.2) are
# met by bookworm's libc 2.36, so apt installs just this package. Should a later sid build
# depend on a newer libc, apt's dry run below would list libc6: then, instead of upgrading
# the host's libc, only the binary is extracted from the .deb into the cache (the runtime
# looks there too), where it runs when its symbols allow (check with `ldd`).
VSOCK_CACHE=${DNAH_CACHE_DIR:-/var/cache/dnah}/bin
if ! command -v vhost-device-vsock >/dev/null && [[ ! -x $VSOCK_CACHE/vhost-device-vsock ]]; then
  if [[ ! -f /etc/apt/sources.list.d/dnah-sid.sources ]]; then
    cat >/etc/apt/preferences.d/dnah-sid <<'EOF'
# dnah: sid only for packages no other suite has (vhost-device-vsock); never upgrades anything.
Package: *
Pin: release n=sid
Pin-Priority: 100
EOF
    cat >/etc/apt/sources.list.d/dnah-sid.sources <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: sid
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    updated=0
  fi
  apt_update
  if apt-get -s install --no-install-recommends vhost-device-vsock 2>/dev/null | grep -Eq '^Inst (libc6|libgcc-s1) '; then
    echo "dnah: vhost-device-vsock from sid would upgrade libc; extracting only its binary" >&2
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    (cd "$tmp" && apt-get download -qq vhost-device-vsock/sid >/dev/null)
    dpkg-deb -x "$tmp"/vhost-device-vsock_*.deb "$tmp/x"
    mkdir -p "$VSOCK_CACHE"
    install -m 0755 "$tmp/x/usr/bin/vhost-device-vsock" "$VSOCK_CACHE/vhost-device-vsock.tmp"
    mv "$VSOCK_CACHE/vhost-device-vsock.tmp" "$VSOCK_CACHE/vhost-device-vsock"
    if ldd "$VSOCK_CACHE/vhost-device-vsock" 2>&1 | grep -q "not found"; then
      echo "dnah: warning: the extracted vhost-device-vsock does not run on this libc" >&2
    fi
  else
    echo "dnah: installing vhost-device-vsock (from sid, pinned low)" >&2
    apt-get install -y -qq --no-install-recommends vhost-device-vsock >/dev/null
  fi
fi
