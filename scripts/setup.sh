#!/usr/bin/env bash
# Idempotent machine setup for tests, the lab and benches.
# Gets PostgreSQL 16.2 + pgvector binaries from the `pgserver` wheel on PyPI (no Python at run time),
# and the unprivileged user that runs throwaway clusters when we are root (initdb refuses root).
# Prints the binary directory on its last line. A second run takes well under a second.
set -euo pipefail

PG_WHEEL_VERSION="${AGOG_PGSERVER_VERSION:-0.1.4}"
if [ "$(id -u)" = 0 ]; then
  default_cache=/var/cache/agog   # readable by the unprivileged cluster user (/root is not)
else
  default_cache="${XDG_CACHE_HOME:-$HOME/.cache}/agog"
fi
CACHE="${AGOG_CACHE_DIR:-$default_cache}"
PG_ROOT="$CACHE/pgserver-$PG_WHEEL_VERSION"
PG_BIN="$PG_ROOT/pgserver/pginstall/bin"
PG_USER="${AGOG_PG_USER:-agogpg}"

log() { printf 'setup: %s\n' "$*" >&2; }

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -m pip --version >/dev/null 2>&1 || need_apt+=(python3-pip)
command -v runuser >/dev/null || need_apt+=(util-linux)
# The hub writes each provisioned edge's image (sfdisk, mtools, xz); the provisioning test makes
# its golden images with mkfs.vfat.
command -v sfdisk >/dev/null || need_apt+=(fdisk)
command -v mcopy >/dev/null || need_apt+=(mtools)
command -v mkfs.vfat >/dev/null || need_apt+=(dosfstools)
command -v xz >/dev/null || need_apt+=(xz-utils)
# The packaging test checks the .deb packages with Debian's lintian.
command -v lintian >/dev/null || need_apt+=(lintian)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then log "missing ${need_apt[*]}: install them (needs root)"; exit 1; fi
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if [ ! -x "$PG_BIN/postgres" ] || [ ! -f "$PG_ROOT/.complete" ]; then
  log "fetching PostgreSQL 16 + pgvector (pgserver $PG_WHEEL_VERSION wheel) into $PG_ROOT"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux2014_x86_64 -d "$tmp" "pgserver==$PG_WHEEL_VERSION"
  rm -rf "$PG_ROOT.partial" && mkdir -p "$PG_ROOT.partial"
  # zip drops the executable bit; python's zipfile keeps us free of an unzip dependency
  python3 - "$tmp"/pgserver-*.whl "$PG_ROOT.partial" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
  chmod -R a+rX "$PG_ROOT.partial"
  chmod a+x "$PG_ROOT.partial"/pgserver/pginstall/bin/*
  rm -rf "$PG_ROOT" && mv "$PG_ROOT.partial" "$PG_ROOT"
  touch "$PG_ROOT/.complete"
  chmod a+rx "$CACHE"
fi

if [ "$(id -u)" = 0 ] && ! id "$PG_USER" >/dev/null 2>&1; then
  log "creating unprivileged user $PG_USER for throwaway clusters"
  useradd --system --no-create-home --shell /usr/sbin/nologin "$PG_USER"
fi

# Tunnels (tests/tests/vpn_templates.rs, tunnel_wireguard.rs): userspace WireGuard (this kind of
# kernel has no module), its tools, OpenVPN, strongSwan's swanctl and charon with kernel-libipsec,
# nftables.
tunnel_pkgs=(wireguard-go wireguard-tools openvpn strongswan-swanctl charon-systemd
  libcharon-extra-plugins libstrongswan-standard-plugins nftables iproute2)
missing=()
for p in "${tunnel_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then log "missing ${missing[*]}: install them (needs root)"; exit 1; fi
  log "apt-get install ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian enables the units; the tests start their own daemons.
  systemctl disable --now openvpn.service strongswan.service >/dev/null 2>&1 || true
fi

# Headless Chromium and chromedriver for the dashboard test (tests/tests/dashboard.rs).
bash "$(dirname "$0")/setup-web.sh"

# The image builder's tools and qemu + OVMF for the image test (tests/tests/image.rs).
bash "$(dirname "$0")/setup-image.sh" >/dev/null

"$PG_BIN/postgres" --version >&2
echo "$PG_BIN"
