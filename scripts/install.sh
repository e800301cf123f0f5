#!/usr/bin/env bash
# dnah host installer: makes a fresh Ubuntu 22.04/24.04 or Debian 12 machine (x86_64, KVM) a
# dnah sandbox host whose vmm joins a control plane.
#
#   curl -fsSL <url>/install.sh | sudo DNAH_CONTROL_URL=http://control:7001 DNAH_JOIN_TOKEN=… bash
#   sudo bash install.sh --control-url http://control:7001 --join-token … [options]
#   sudo bash install.sh --uninstall [--purge]
#
# Every step is idempotent and says what it does. `--help` lists the options; docs/install.md
# explains each step, the download sources and what was only checked on paper.
set -euo pipefail

# ---- pinned versions and where they come from ------------------------------------------------
NODE_VERSION=20.20.2
NODE_TARBALL="node-v${NODE_VERSION}-linux-x64.tar.xz"
NODE_BASE_URL="https://nodejs.org/dist/v${NODE_VERSION}"
CH_VERSION=v53.0
CH_BASE_URL="https://github.com/cloud-hypervisor/cloud-hypervisor/releases/download/${CH_VERSION}"
# sha256 of the v53.0 release assets (x86_64, static). Upstream publishes no checksum file, so
# these are pinned here; a DNAH_INSTALL_FROM folder may override them with its SHA256SUMS.
declare -A PINNED_SHA256=(
  [cloud-hypervisor-static]=448af3d4e59b22c2987f7df94c213ad40fb53a10d437e42b5ee6c4fce7c29ecc
  [ch-remote-static]=13f32ba952e6791fd901f2279be2055fbacc64005f96c42a8e90d58860df84a7
)
DNAH_VERSION=0.1.0
# dnah's own artifacts (source tarball, guest kernel, base image) with their SHA256SUMS. No
# release is published yet: set DNAH_RELEASE_URL, or use DNAH_INSTALL_SOURCE / DNAH_INSTALL_FROM.
DNAH_RELEASE_URL=${DNAH_RELEASE_URL:-}
DNAH_SOURCE_TARBALL="dnah-${DNAH_VERSION}.tar.gz"
KERNEL_TARBALL=dnah-guest-kernel-x86_64.tar.gz
IMAGE_TARBALL=dnah-base-image-x86_64.tar.gz
# Debian/Ubuntu packages the vmm and its runtimes need (the install test reads this line).
APT_PACKAGES=(bubblewrap iptables iproute2 e2fsprogs util-linux procps kmod ca-certificates curl xz-utils debootstrap debian-archive-keyring)

# ---- layout ----------------------------------------------------------------------------------
PREFIX=/opt/dnah
APP_DIR=$PREFIX/app
NODE_DIR=$PREFIX/node
BIN_DIR=$PREFIX/bin
STAMP_DIR=$PREFIX/.installed
ENV_DIR=/etc/dnah
ENV_FILE=$ENV_DIR/vmm.env
UNIT_NAME=dnah-vmm.service
UNIT_FILE=/etc/systemd/system/$UNIT_NAME
STATE_DIR=${DNAH_STATE_DIR:-/var/lib/dnah}
CACHE_DIR=${DNAH_CACHE_DIR:-/var/cache/dnah}

usage() {
  cat <<'EOF'
dnah install.sh: install the dnah vmm on this host and join a control plane.

Usage: install.sh [options]        (as root; options may also come from the environment)

  --control-url URL      the control plane (the scheduler), e.g. http://10.0.0.1:7001
                         [DNAH_CONTROL_URL]
  --join-token TOKEN     the control plane's join token [DNAH_JOIN_TOKEN]
  --host-id ID           this host's id [DNAH_HOST_ID, default: short hostname]
  --listen HOST:PORT     where the vmm listens [default: 0.0.0.0:7002]
  --advertise-url URL    how the control plane reaches this vmm
                         [DNAH_VMM_ADVERTISE_URL, default: http://<first address>:<port>]
  --runtime R            auto | jail | qemu | cloud-hypervisor [DNAH_RUNTIME, default: auto]
  --set KEY=VALUE        one more vmm setting for /etc/dnah/vmm.env (KEY: DNAH_* or OTEL_*;
                         see services/vmm/README.md); repeatable
  --skip-kvm-check       install on a machine without usable KVM: no /dev/kvm check, microVM
                         kernel modules only warned about, and DNAH_RUNTIME=jail (containers,
                         not microVMs: sandboxes share the host kernel)
  --foreground           do not use systemd: run the vmm in this terminal after installing
                         (containers, chroots, tests); Ctrl-C stops it
  --uninstall            stop and disable the unit, remove it, /etc/dnah/vmm.env and /opt/dnah;
                         sandbox state and caches stay unless --purge
  --purge                with --uninstall: also remove the state and cache folders
  -h, --help             this text

Environment:
  DNAH_INSTALL_FROM=/dir     take every download from this folder instead (same file names:
                             node-v*-linux-x64.tar.xz, SHASUMS256.txt, cloud-hypervisor-static,
                             ch-remote-static, dnah-*.tar.gz, SHA256SUMS); nothing is fetched
                             from the network. For air-gapped installs and tests.
  DNAH_INSTALL_SOURCE=/dir   a dnah checkout to run, linked at /opt/dnah/app (instead of the
                             release tarball)
  DNAH_RELEASE_URL=URL       where dnah's release artifacts are
  DNAH_INSTALL_WAIT_S=60     how long to wait for the vmm to register
  DNAH_MIN_DISK_GIB=10       free space required under /opt and /var
EOF
}

log() { printf 'dnah-install: %s\n' "$*"; }
warn() { printf 'dnah-install: warning: %s\n' "$*" >&2; }
die() {
  printf 'dnah-install: error: %s\n' "$*" >&2
  exit 1
}
step() { printf '\n==> %s\n' "$*"; }

# ---- arguments -------------------------------------------------------------------------------
CONTROL_URL=${DNAH_CONTROL_URL:-}
JOIN_TOKEN=${DNAH_JOIN_TOKEN:-}
HOST_ID=${DNAH_HOST_ID:-}
LISTEN=""
ADVERTISE_URL=${DNAH_VMM_ADVERTISE_URL:-}
RUNTIME=${DNAH_RUNTIME:-}
EXTRA_ENV=()
SKIP_KVM=0
FOREGROUND=0
UNINSTALL=0
PURGE=0

need_arg() { [[ $# -ge 2 && -n $2 ]] || die "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --control-url) need_arg "$@"; CONTROL_URL=$2; shift 2 ;;
    --join-token) need_arg "$@"; JOIN_TOKEN=$2; shift 2 ;;
    --host-id) need_arg "$@"; HOST_ID=$2; shift 2 ;;
    --listen) need_arg "$@"; LISTEN=$2; shift 2 ;;
    --advertise-url) need_arg "$@"; ADVERTISE_URL=$2; shift 2 ;;
    --runtime) need_arg "$@"; RUNTIME=$2; shift 2 ;;
    --set) need_arg "$@"; EXTRA_ENV+=("$2"); shift 2 ;;
    --skip-kvm-check) SKIP_KVM=1; shift ;;
    --foreground) FOREGROUND=1; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done
((PURGE == 0 || UNINSTALL == 1)) || die "--purge only goes with --uninstall"

[[ $(id -u) -eq 0 ]] || die "run as root: curl -fsSL …/install.sh | sudo bash (or sudo bash install.sh)"

# systemd is in charge only when PID 1 is systemd and this is not a chroot of another system.
systemd_running() {
  [[ -d /run/systemd/system ]] && [[ $(cat /proc/1/comm 2>/dev/null) == systemd ]]
}

# A value from the current env file (re-runs keep what the first run was told).
env_file_value() {
  [[ -f $ENV_FILE ]] || return 0
  sed -n "s/^$1=//p" "$ENV_FILE" | tail -n 1
}

# ---- uninstall -------------------------------------------------------------------------------
if ((UNINSTALL == 1)); then
  step "uninstall"
  state=$(env_file_value DNAH_STATE_DIR)
  cache=$(env_file_value DNAH_CACHE_DIR)
  state=${state:-$STATE_DIR}
  cache=${cache:-$CACHE_DIR}
  if systemd_running && [[ -f $UNIT_FILE ]]; then
    log "stopping and disabling $UNIT_NAME"
    systemctl disable --now "$UNIT_NAME" || warn "systemctl disable --now $UNIT_NAME failed"
  fi
  if [[ -f $UNIT_FILE ]]; then
    log "removing $UNIT_FILE"
    rm -f "$UNIT_FILE"
    if systemd_running; then systemctl daemon-reload; fi
  else
    log "no $UNIT_FILE: nothing to remove"
  fi
  if [[ -f $ENV_FILE ]]; then
    log "removing $ENV_FILE"
    rm -f "$ENV_FILE"
  fi
  rmdir "$ENV_DIR" 2>/dev/null || true
  if [[ -e $PREFIX || -L $PREFIX ]]; then
    # A linked checkout (/opt/dnah/app -> DNAH_INSTALL_SOURCE) loses only its link.
    log "removing $PREFIX"
    rm -rf "$PREFIX"
  fi
  if ((PURGE == 1)); then
    for dir in "$state" "$cache"; do
      case $dir in
        / | /usr | /var | /var/lib | /var/cache | /etc | /opt | /home | /root | "") die "refusing to purge '$dir'" ;;
      esac
      if [[ -e $dir ]]; then
        log "purging $dir"
        rm -rf "$dir"
      fi
    done
  else
    log "kept $state and $cache (sandbox state, templates); --purge removes them"
  fi
  log "uninstalled"
  exit 0
fi

# ---- settings --------------------------------------------------------------------------------
CONTROL_URL=${CONTROL_URL:-$(env_file_value DNAH_SCHEDULER_URL)}
JOIN_TOKEN=${JOIN_TOKEN:-$(env_file_value DNAH_JOIN_TOKEN)}
HOST_ID=${HOST_ID:-$(env_file_value DNAH_HOST_ID)}
HOST_ID=${HOST_ID:-$(hostname -s)}
[[ -n $CONTROL_URL ]] || die "no control plane: set DNAH_CONTROL_URL or --control-url (the scheduler's URL, e.g. http://10.0.0.1:7001)"
url_re='^https?://[]A-Za-z0-9.:@[_-]+(/[A-Za-z0-9._~/-]*)?$'
[[ $CONTROL_URL =~ $url_re ]] || die "--control-url: expected an http(s) URL, got '$CONTROL_URL'"
CONTROL_URL=${CONTROL_URL%/}
[[ -n $JOIN_TOKEN ]] || die "no join token: set DNAH_JOIN_TOKEN or --join-token (the control plane's DNAH_JOIN_TOKEN)"
# A token goes into a systemd EnvironmentFile unquoted: keep it to a safe alphabet.
[[ $JOIN_TOKEN =~ ^[A-Za-z0-9._~+/=-]{16,512}$ ]] || die "--join-token: expected 16 to 512 characters from A-Z a-z 0-9 . _ ~ + / = -"
[[ $HOST_ID =~ ^[A-Za-z0-9._-]{1,64}$ ]] || die "--host-id: letters, digits, '.', '_' and '-' only (at most 64), got '$HOST_ID'"
if [[ -z $LISTEN ]]; then
  host=$(env_file_value DNAH_VMM_HOST)
  port=$(env_file_value DNAH_VMM_PORT)
  LISTEN="${host:-0.0.0.0}:${port:-7002}"
fi
[[ $LISTEN =~ ^([0-9.]+|\[[0-9a-fA-F:]+\]|localhost):([0-9]{1,5})$ ]] || die "--listen: expected HOST:PORT, got '$LISTEN'"
VMM_HOST=${BASH_REMATCH[1]}
VMM_PORT=${BASH_REMATCH[2]}
((VMM_PORT >= 1 && VMM_PORT <= 65535)) || die "--listen: port out of range: $VMM_PORT"
if [[ -z $ADVERTISE_URL ]]; then
  ADVERTISE_URL=$(env_file_value DNAH_VMM_ADVERTISE_URL)
fi
if [[ -z $ADVERTISE_URL ]]; then
  if [[ $VMM_HOST == 0.0.0.0 ]]; then
    addr=$(hostname -I 2>/dev/null | awk '{print $1}')
    [[ -n $addr ]] || die "cannot tell this host's address: give --advertise-url http://<address>:$VMM_PORT"
  else
    addr=$VMM_HOST
  fi
  ADVERTISE_URL="http://$addr:$VMM_PORT"
fi
base_url_re='^https?://[]A-Za-z0-9.:[_-]+/?$'
[[ $ADVERTISE_URL =~ $base_url_re ]] || die "--advertise-url: expected http(s)://host:port, got '$ADVERTISE_URL'"
if ((SKIP_KVM == 1)); then
  [[ -z $RUNTIME || $RUNTIME == jail ]] || die "--skip-kvm-check runs the jail runtime; drop --runtime $RUNTIME"
  RUNTIME=jail
fi
RUNTIME=${RUNTIME:-$(env_file_value DNAH_RUNTIME)}
RUNTIME=${RUNTIME:-auto}
case $RUNTIME in auto | jail | qemu | cloud-hypervisor) ;; *) die "--runtime: auto, jail, qemu or cloud-hypervisor, got '$RUNTIME'" ;; esac
for kv in "${EXTRA_ENV[@]}"; do
  [[ $kv =~ ^(DNAH|OTEL)_[A-Z0-9_]+=[A-Za-z0-9._~+/=:@,-]*$ ]] || die "--set: expected DNAH_*=value or OTEL_*=value (letters, digits, . _ ~ + / = : @ , -), got '$kv'"
done
for kv in "${EXTRA_ENV[@]}"; do
  case ${kv%%=*} in
    DNAH_STATE_DIR) STATE_DIR=${kv#*=} ;;
    DNAH_CACHE_DIR) CACHE_DIR=${kv#*=} ;;
  esac
done

# ---- preflight -------------------------------------------------------------------------------
step "preflight: OS, CPU, KVM and kernel features"
problems=()
problem() { problems+=("$1"); }
if [[ -r /etc/os-release ]]; then
  # shellcheck disable=SC1091
  os_id=$(. /etc/os-release && echo "${ID:-}")
  # shellcheck disable=SC1091
  os_version=$(. /etc/os-release && echo "${VERSION_ID:-}")
  # shellcheck disable=SC1091
  os_like=$(. /etc/os-release && echo "${ID_LIKE:-}")
  case "$os_id $os_version" in
    "ubuntu 22.04" | "ubuntu 24.04" | "debian 12") log "OS: $os_id $os_version (supported)" ;;
    *)
      if [[ $os_id == debian || $os_id == ubuntu || $os_like == *debian* ]]; then
        warn "OS: $os_id $os_version is not one of Ubuntu 22.04/24.04 or Debian 12; going on (apt-based)"
      else
        problem "OS: $os_id $os_version has no apt; use Ubuntu 22.04/24.04 or Debian 12"
      fi
      ;;
  esac
else
  problem "OS: no /etc/os-release; use Ubuntu 22.04/24.04 or Debian 12"
fi
arch=$(uname -m)
if [[ $arch == x86_64 ]]; then log "CPU: x86_64"; else problem "CPU: $arch; dnah hosts are x86_64 only"; fi
if ((SKIP_KVM == 1)); then
  warn "KVM: not checked (--skip-kvm-check); the vmm runs the jail runtime (sandboxes share this kernel)"
elif [[ ! -e /dev/kvm ]]; then
  problem "KVM: no /dev/kvm. Enable virtualization (VT-x/AMD-V) in the firmware or nested virtualization for a VM, then 'modprobe kvm_intel' (or kvm_amd); or install with --skip-kvm-check (jail runtime, no microVMs)"
elif ! (: <>/dev/kvm) 2>/dev/null; then
  problem "KVM: /dev/kvm exists but cannot be opened (permissions, or another hypervisor holds VT-x); check 'ls -l /dev/kvm' and dmesg"
else
  log "KVM: /dev/kvm opens"
fi
cg=$(stat -fc %T /sys/fs/cgroup 2>/dev/null || true)
if [[ $cg == cgroup2fs ]]; then
  log "cgroups: v2 (unified) mounted"
elif [[ -d /sys/fs/cgroup/memory && -d /sys/fs/cgroup/pids && -d /sys/fs/cgroup/freezer ]]; then
  warn "cgroups: v1 (legacy) only; the jail runtime works, but v2 is what dnah is built for: boot with systemd.unified_cgroup_hierarchy=1"
else
  problem "cgroups: neither v2 at /sys/fs/cgroup nor v1 memory/pids/freezer; mount cgroup2 (mount -t cgroup2 none /sys/fs/cgroup) or boot with systemd.unified_cgroup_hierarchy=1"
fi
module_available() {
  [[ -d /sys/module/$1 ]] || grep -qw "$1" /proc/filesystems 2>/dev/null || modprobe -n -q "$1" 2>/dev/null
}
if module_available overlay; then log "overlayfs: available"; else problem "overlayfs: missing; 'modprobe overlay' (kernel CONFIG_OVERLAY_FS)"; fi
for mod in vhost_vsock tun; do
  if module_available "$mod" || { [[ $mod == tun ]] && [[ -c /dev/net/tun ]]; } || { [[ $mod == vhost_vsock ]] && [[ -c /dev/vhost-vsock ]]; }; then
    log "kernel module $mod: available"
  elif ((SKIP_KVM == 1)); then
    warn "kernel module $mod: not loadable here; only microVMs need it (jail runtime chosen)"
  else
    problem "kernel module $mod: not loadable; install the kernel's extra modules (Ubuntu: linux-modules-extra-\$(uname -r)) and 'modprobe $mod'"
  fi
done
userns=$(cat /proc/sys/user/max_user_namespaces 2>/dev/null || echo 0)
if ((userns > 0)); then log "user namespaces: enabled ($userns)"; else problem "user namespaces: disabled; sysctl -w user.max_user_namespaces=15000"; fi
min_gib=${DNAH_MIN_DISK_GIB:-10}
[[ $min_gib =~ ^[0-9]+$ ]] || die "DNAH_MIN_DISK_GIB: expected a whole number, got '$min_gib'"
for dir in /opt /var; do
  probe=$dir
  [[ -d $probe ]] || probe=/
  free_kib=$(df -Pk "$probe" | awk 'NR==2 {print $4}')
  if ((free_kib / 1024 / 1024 >= min_gib)); then
    log "disk: $((free_kib / 1024 / 1024)) GiB free under $dir"
  else
    problem "disk: only $((free_kib / 1024)) MiB free under $dir, need ${min_gib} GiB (templates, images, sandbox disks); free space or set DNAH_MIN_DISK_GIB"
  fi
done
if ((${#problems[@]} > 0)); then
  printf 'dnah-install: this host is not ready:\n' >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 1
fi

# ---- apt packages ----------------------------------------------------------------------------
step "packages: ${APT_PACKAGES[*]}, virtiofsd"
export DEBIAN_FRONTEND=noninteractive
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
apt_updated=0
apt_update() {
  if ((apt_updated == 0)); then
    log "apt-get update"
    apt-get update -qq
    apt_updated=1
  fi
}
missing=()
for pkg in "${APT_PACKAGES[@]}"; do have_pkg "$pkg" || missing+=("$pkg"); done
if ((${#missing[@]} > 0)); then
  apt_update
  log "installing ${missing[*]}"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "all present"
fi
# virtiofsd: its own package on Ubuntu 24.04 and Debian 13; qemu-system-common ships the C
# daemon at /usr/lib/qemu/virtiofsd elsewhere. Installed where the archive has it.
if [[ -x /usr/libexec/virtiofsd || -x /usr/lib/qemu/virtiofsd || -x /usr/bin/virtiofsd ]] || have_pkg virtiofsd; then
  log "virtiofsd: present"
else
  if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -print -quit 2>/dev/null) ]]; then apt_update; fi
  if apt-cache policy virtiofsd 2>/dev/null | sed -n 's/^ *Candidate: *//p' | grep -qv '(none)'; then
    apt_update
    log "installing virtiofsd"
    apt-get install -y -qq --no-install-recommends virtiofsd >/dev/null
  else
    warn "virtiofsd: not in this archive; microVM sandboxes get no shared folder (install qemu-system-common for /usr/lib/qemu/virtiofsd)"
  fi
fi

# ---- downloads -------------------------------------------------------------------------------
WORK=$(mktemp -d)
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT

# The one way anything is downloaded: from DNAH_INSTALL_FROM when set (and then only from
# there), else from <base url>/<name>. Writes $WORK/<name> and prints its path.
fetch() {
  local name=$1 base=$2 out=$WORK/$1
  if [[ -n ${DNAH_INSTALL_FROM:-} ]]; then
    [[ -f $DNAH_INSTALL_FROM/$name ]] || die "DNAH_INSTALL_FROM=$DNAH_INSTALL_FROM has no '$name'"
    log "taking $name from $DNAH_INSTALL_FROM" >&2
    cp "$DNAH_INSTALL_FROM/$name" "$out"
  else
    [[ -n $base ]] || die "no source for $name: set DNAH_RELEASE_URL, DNAH_INSTALL_FROM or DNAH_INSTALL_SOURCE (see --help)"
    log "downloading $base/$name" >&2
    curl -fsSL --retry 3 --connect-timeout 20 -o "$out" "$base/$name" || die "download failed: $base/$name"
  fi
  printf '%s\n' "$out"
}

sha256_of() { sha256sum "$1" | awk '{print $1}'; }
# The sha256 a sums file (sha256sum format) gives for a name; empty when it lists none.
sum_for() { awk -v n="$2" '$2 == n || $2 == "*"n {print $1}' "$1" | head -n 1; }
check_sha256() {
  local file=$1 name=$2 want=$3 got
  [[ -n $want ]] || die "no sha256 for $name: refusing to install an unchecked file"
  got=$(sha256_of "$file")
  [[ $got == "$want" ]] || die "$name: sha256 $got, expected $want; not installed"
  log "$name: sha256 ok"
}
stamp_is() { [[ -f $STAMP_DIR/$1 && $(cat "$STAMP_DIR/$1") == "$2" ]]; }
stamp_set() {
  mkdir -p "$STAMP_DIR"
  printf '%s\n' "$2" >"$STAMP_DIR/$1"
}

# dnah's SHA256SUMS (release or DNAH_INSTALL_FROM), fetched once when a step needs it.
# Called directly (not in $(...)), so the fetched path stays in DNAH_SUMS for later steps.
DNAH_SUMS=""
load_dnah_sums() {
  if [[ -z $DNAH_SUMS ]]; then DNAH_SUMS=$(fetch SHA256SUMS "$DNAH_RELEASE_URL"); fi
}
have_dnah_artifacts() { [[ -n $DNAH_RELEASE_URL || -n ${DNAH_INSTALL_FROM:-} ]]; }

# ---- Node.js ---------------------------------------------------------------------------------
step "Node.js v$NODE_VERSION (nodejs.org release tarball, checked against SHASUMS256.txt)"
if [[ -x $NODE_DIR/bin/node ]] && [[ $("$NODE_DIR/bin/node" --version 2>/dev/null) == "v$NODE_VERSION" ]] && stamp_is node "$NODE_VERSION"; then
  log "Node.js: already installed at $NODE_DIR"
else
  tarball=$(fetch "$NODE_TARBALL" "$NODE_BASE_URL")
  sums=$(fetch SHASUMS256.txt "$NODE_BASE_URL")
  check_sha256 "$tarball" "$NODE_TARBALL" "$(sum_for "$sums" "$NODE_TARBALL")"
  mkdir -p "$WORK/node"
  tar -xJf "$tarball" -C "$WORK/node" --strip-components=1 --no-same-owner
  [[ -x $WORK/node/bin/node ]] || die "$NODE_TARBALL holds no bin/node"
  mkdir -p "$PREFIX"
  rm -rf "$NODE_DIR.new"
  mv "$WORK/node" "$NODE_DIR.new"
  rm -rf "$NODE_DIR"
  mv "$NODE_DIR.new" "$NODE_DIR"
  stamp_set node "$NODE_VERSION"
  log "Node.js: installed $("$NODE_DIR/bin/node" --version) at $NODE_DIR"
fi

# ---- Cloud Hypervisor --------------------------------------------------------------------------
step "Cloud Hypervisor $CH_VERSION and ch-remote (GitHub release, pinned sha256)"
install_ch_binary() {
  local asset=$1 target=$2 want file
  want=${PINNED_SHA256[$asset]}
  if [[ -n ${DNAH_INSTALL_FROM:-} && -f $DNAH_INSTALL_FROM/SHA256SUMS ]]; then
    local local_sum
    local_sum=$(sum_for "$DNAH_INSTALL_FROM/SHA256SUMS" "$asset")
    if [[ -n $local_sum && $local_sum != "$want" ]]; then
      warn "$asset: using the sha256 from $DNAH_INSTALL_FROM/SHA256SUMS, not the pinned $CH_VERSION one"
      want=$local_sum
    fi
  fi
  if [[ -x $BIN_DIR/$target ]] && stamp_is "$target" "$CH_VERSION $want" && [[ $(sha256_of "$BIN_DIR/$target") == "$want" ]]; then
    log "$target: already installed ($("$BIN_DIR/$target" --version 2>/dev/null | head -n 1))"
    return
  fi
  file=$(fetch "$asset" "$CH_BASE_URL")
  check_sha256 "$file" "$asset" "$want"
  mkdir -p "$BIN_DIR"
  install -m 0755 "$file" "$BIN_DIR/$target.new"
  mv "$BIN_DIR/$target.new" "$BIN_DIR/$target"
  stamp_set "$target" "$CH_VERSION $want"
  log "$target: installed at $BIN_DIR/$target ($("$BIN_DIR/$target" --version 2>/dev/null | head -n 1))"
}
install_ch_binary cloud-hypervisor-static cloud-hypervisor
install_ch_binary ch-remote-static ch-remote

# ---- guest kernel and base image ---------------------------------------------------------------
# Both unpack into the cache folder the vmm reads (kernels/, images/base/, templates/base/).
install_cache_tarball() {
  local name=$1 what=$2 want file
  if ! have_dnah_artifacts; then
    warn "$what: no release to take it from (DNAH_RELEASE_URL unset); build it on this host with 'npm run template && node --import tsx packages/cli/src/main.ts image build base' in $APP_DIR"
    return
  fi
  load_dnah_sums
  want=$(sum_for "$DNAH_SUMS" "$name")
  if stamp_is "$name" "$want" && [[ -n $want ]]; then
    log "$what: already installed in $CACHE_DIR"
    return
  fi
  file=$(fetch "$name" "$DNAH_RELEASE_URL")
  check_sha256 "$file" "$name" "$want"
  mkdir -p "$CACHE_DIR"
  tar -xzf "$file" -C "$CACHE_DIR" --no-same-owner
  stamp_set "$name" "$want"
  log "$what: unpacked into $CACHE_DIR"
}
step "guest kernel and base image (dnah release)"
install_cache_tarball "$KERNEL_TARBALL" "guest kernel"
install_cache_tarball "$IMAGE_TARBALL" "base image"

# ---- dnah ------------------------------------------------------------------------------------
export PATH="$NODE_DIR/bin:$PATH"
if [[ -n ${DNAH_INSTALL_SOURCE:-} ]]; then
  step "dnah from the checkout $DNAH_INSTALL_SOURCE (linked at $APP_DIR)"
  src=$(cd "$DNAH_INSTALL_SOURCE" && pwd -P) || die "DNAH_INSTALL_SOURCE=$DNAH_INSTALL_SOURCE is not a folder"
  [[ -f $src/services/vmm/src/main.ts && -f $src/package-lock.json ]] || die "DNAH_INSTALL_SOURCE=$src is not a dnah checkout (no services/vmm/src/main.ts)"
  if [[ -L $APP_DIR && $(readlink "$APP_DIR") == "$src" ]]; then
    log "already linked"
  else
    mkdir -p "$PREFIX"
    rm -rf "$APP_DIR"
    ln -s "$src" "$APP_DIR"
    log "linked $APP_DIR -> $src"
  fi
  # A checkout someone already installed keeps its node_modules (npm writes
  # node_modules/.package-lock.json on every install).
  if [[ -f $src/node_modules/.package-lock.json && -d $src/node_modules/tsx ]]; then
    log "dependencies: already installed in the checkout"
  else
    log "dependencies: npm ci in $src"
    (cd "$src" && npm ci --no-audit --no-fund)
  fi
else
  step "dnah $DNAH_VERSION (release tarball)"
  want=""
  if have_dnah_artifacts; then
    load_dnah_sums
    want=$(sum_for "$DNAH_SUMS" "$DNAH_SOURCE_TARBALL")
  fi
  if [[ -d $APP_DIR && ! -L $APP_DIR ]] && [[ -n $want ]] && stamp_is app "$want"; then
    log "already installed at $APP_DIR"
  else
    file=$(fetch "$DNAH_SOURCE_TARBALL" "$DNAH_RELEASE_URL")
    check_sha256 "$file" "$DNAH_SOURCE_TARBALL" "$want"
    mkdir -p "$WORK/app"
    tar -xzf "$file" -C "$WORK/app" --strip-components=1 --no-same-owner
    [[ -f $WORK/app/services/vmm/src/main.ts ]] || die "$DNAH_SOURCE_TARBALL is not a dnah source tree"
    rm -rf "$APP_DIR.new"
    mv "$WORK/app" "$APP_DIR.new"
    rm -rf "$APP_DIR"
    mv "$APP_DIR.new" "$APP_DIR"
    stamp_set app "$want"
    log "unpacked into $APP_DIR"
  fi
  # The services run from TypeScript through tsx, and the guest agent is bundled with esbuild:
  # both are devDependencies, so this is a full `npm ci`, not `--omit=dev`.
  lock=$(sha256_of "$APP_DIR/package-lock.json")
  if [[ -d $APP_DIR/node_modules/tsx ]] && stamp_is npm-ci "$lock"; then
    log "dependencies: already installed"
  else
    log "dependencies: npm ci in $APP_DIR"
    (cd "$APP_DIR" && npm ci --no-audit --no-fund)
    stamp_set npm-ci "$lock"
  fi
fi
if [[ -f $APP_DIR/guest/dist/agent.mjs ]]; then
  log "guest agent: already bundled"
else
  log "guest agent: npm run build:guest"
  (cd "$APP_DIR" && npm run --silent build:guest)
fi

# ---- configuration -----------------------------------------------------------------------------
# Writes $2 (mode $3) from stdin only when its content or mode differs; says which.
CHANGED=()
write_if_changed() {
  local what=$1 target=$2 mode=$3 tmp
  tmp=$(mktemp "$WORK/new.XXXXXX")
  cat >"$tmp"
  if [[ -f $target ]] && cmp -s "$tmp" "$target" && [[ $(stat -c %a "$target") == "$mode" ]]; then
    log "$what: unchanged ($target)"
    return
  fi
  mkdir -p "$(dirname "$target")"
  chmod "$mode" "$tmp"
  mv "$tmp" "$target"
  CHANGED+=("$what")
  log "$what: written ($target, mode $mode)"
}

step "configuration: $ENV_FILE and $UNIT_FILE"
mkdir -p "$ENV_DIR"
chmod 0755 "$ENV_DIR"
{
  echo "# dnah vmm settings, written by install.sh (re-run it to change them). Holds the join"
  echo "# token: root only. All settings: services/vmm/README.md."
  echo "DNAH_SCHEDULER_URL=$CONTROL_URL"
  echo "DNAH_JOIN_TOKEN=$JOIN_TOKEN"
  echo "DNAH_HOST_ID=$HOST_ID"
  echo "DNAH_VMM_HOST=$VMM_HOST"
  echo "DNAH_VMM_PORT=$VMM_PORT"
  echo "DNAH_VMM_ADVERTISE_URL=$ADVERTISE_URL"
  echo "DNAH_RUNTIME=$RUNTIME"
  echo "DNAH_CH_BIN=$BIN_DIR/cloud-hypervisor"
  echo "DNAH_STATE_DIR=$STATE_DIR"
  echo "DNAH_CACHE_DIR=$CACHE_DIR"
  echo "PATH=$NODE_DIR/bin:$BIN_DIR:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  for kv in "${EXTRA_ENV[@]}"; do
    case ${kv%%=*} in DNAH_STATE_DIR | DNAH_CACHE_DIR) ;; *) echo "$kv" ;; esac
  done
} | write_if_changed "env file" "$ENV_FILE" 600

write_if_changed "systemd unit" "$UNIT_FILE" 644 <<EOF
[Unit]
Description=dnah vmm: the sandbox host agent
Documentation=file://$APP_DIR/docs/install.md
Wants=network-online.target
After=network-online.target

[Service]
Type=simple
EnvironmentFile=$ENV_FILE
WorkingDirectory=$APP_DIR
ExecStart=$NODE_DIR/bin/node --import tsx services/vmm/src/main.ts
Restart=always
RestartSec=2
# The vmm drains on SIGTERM (its own bound is 30 s).
KillMode=mixed
TimeoutStopSec=40
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$STATE_DIR" "$CACHE_DIR"

# ---- start and wait for registration ---------------------------------------------------------
vmm_url="http://$VMM_HOST:$VMM_PORT"
[[ $VMM_HOST != 0.0.0.0 ]] || vmm_url="http://127.0.0.1:$VMM_PORT"
# Connect's JSON protocol over plain HTTP: any HTTP status means the server answers.
http_answers() { [[ $(curl -s -o /dev/null -m 3 -w '%{http_code}' "$1" 2>/dev/null || true) != 000 ]]; }
# The scheduler's ListHosts, filtered for this host id; its log line is the fallback (a
# control plane that refuses ListHosts to an unauthenticated caller).
host_listed() {
  curl -s -m 3 -X POST -H 'content-type: application/json' -d '{}' \
    "$CONTROL_URL/dnah.scheduler.v1.SchedulerService/ListHosts" 2>/dev/null |
    grep -q "\"hostId\":\"$HOST_ID\""
}
wait_for_registration() {
  local log_cmd=$1 wait_s=${DNAH_INSTALL_WAIT_S:-60} start=$SECONDS listening=0 control=0
  step "waiting for the vmm to register with $CONTROL_URL (up to ${wait_s}s)"
  while ((SECONDS - start < wait_s)); do
    if ((listening == 0)) && http_answers "$vmm_url/"; then
      listening=1
      log "vmm answers on $vmm_url"
    fi
    if ((control == 0)) && http_answers "$CONTROL_URL/"; then
      control=1
      log "control plane answers at $CONTROL_URL"
    fi
    if ((listening == 1 && control == 1)); then
      if host_listed || eval "$log_cmd" 2>/dev/null | grep -q '"msg":"registered with scheduler"'; then
        log "registered as $HOST_ID (advertised at $ADVERTISE_URL)"
        return 0
      fi
    fi
    sleep 0.5
  done
  if ((listening == 0)); then
    printf 'dnah-install: error: the vmm does not answer on %s after %ss; see: %s\n' "$vmm_url" "$wait_s" "$log_cmd" >&2
  elif ((control == 0)); then
    printf 'dnah-install: error: the control plane %s does not answer; check the URL and the firewall (port open to this host?)\n' "$CONTROL_URL" >&2
  else
    printf 'dnah-install: error: the vmm runs but did not register as %s within %ss (join token refused?); see: %s\n' "$HOST_ID" "$wait_s" "$log_cmd" >&2
  fi
  return 1
}

if ((FOREGROUND == 1)); then
  step "starting the vmm in the foreground (Ctrl-C stops it)"
  vmm_log=$STATE_DIR/vmm-foreground.log
  : >"$vmm_log"
  chmod 600 "$vmm_log"
  set -a
  # shellcheck disable=SC1090
  . "$ENV_FILE"
  set +a
  cd "$APP_DIR"
  node --import tsx services/vmm/src/main.ts > >(tee -a "$vmm_log") 2>&1 &
  vmm_pid=$!
  # shellcheck disable=SC2317 # called by the trap
  stop_vmm() {
    kill -TERM "$vmm_pid" 2>/dev/null || true
    wait "$vmm_pid" 2>/dev/null || true
    exit 0
  }
  trap stop_vmm TERM INT
  if ! wait_for_registration "cat $vmm_log"; then
    kill -TERM "$vmm_pid" 2>/dev/null || true
    wait "$vmm_pid" 2>/dev/null || true
    exit 1
  fi
  status=0
  wait "$vmm_pid" || status=$?
  exit "$status"
elif systemd_running; then
  step "systemd: enabling and starting $UNIT_NAME"
  if ((${#CHANGED[@]} > 0)); then systemctl daemon-reload; fi
  systemctl enable --quiet "$UNIT_NAME"
  if ((${#CHANGED[@]} > 0)) && systemctl is-active --quiet "$UNIT_NAME"; then
    log "restarting $UNIT_NAME (changed: ${CHANGED[*]})"
    systemctl restart "$UNIT_NAME"
  else
    systemctl start "$UNIT_NAME"
  fi
  wait_for_registration "journalctl -u $UNIT_NAME -o cat -n 200 --no-pager"
else
  step "not starting the vmm"
  log "systemd is not running here (a container or chroot): $UNIT_FILE is written but nothing was started."
  log "start it by hand with --foreground, or: set -a; . $ENV_FILE; cd $APP_DIR; $NODE_DIR/bin/node --import tsx services/vmm/src/main.ts"
fi
log "done"
