#!/usr/bin/env bash
# What image-builder/build-image and the image test (tests/tests/image.rs) need. Idempotent.
#  - the build tools: mmdebstrap, e2fsprogs, dosfstools, mtools, fdisk (sfdisk), xz, file,
#    arch-test (mmdebstrap's check for a foreign architecture: the Pi image); curl (the test's
#    browser-less visit of the hub's pages inside a network namespace);
#  - qemu-system-x86_64 and OVMF, and qemu-system-aarch64, for booting the images, unpacked from
#    Debian's .debs into a private prefix ($CACHE/qemu): installing qemu-system-x86 from bookworm would remove the
#    machine's qemu-utils from bookworm-backports (they conflict). The libraries qemu links are
#    ordinary packages and are installed;
#  - the unprivileged user agog-image (with a subordinate id range) the test builds images as;
#  - qemu-user-static registered for arm64 (the Pi image's base) and the arm64 C compiler
#    (image-builder/postgres-arm64 builds pgvector for the Pi image with it).
# Prints the prefix on its last line.
set -euo pipefail
log() { printf 'setup-image: %s\n' "$*" >&2; }
if [ "$(id -u)" = 0 ]; then default_cache=/var/cache/agog; else default_cache="${XDG_CACHE_HOME:-$HOME/.cache}/agog"; fi
CACHE="${AGOG_CACHE_DIR:-$default_cache}"
QEMU="$CACHE/qemu"

apt_install() {
  if [ "$(id -u)" != 0 ]; then log "missing $*: install them as root (apt-get install --no-install-recommends $*)"; exit 1; fi
  log "apt-get install $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

need=()
for pair in qemu-aarch64-static:qemu-user-static aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu curl:curl newuidmap:uidmap mmdebstrap:mmdebstrap mkfs.ext4:e2fsprogs mkfs.vfat:dosfstools mcopy:mtools \
            sfdisk:fdisk xz:xz-utils file:file debugfs:e2fsprogs arch-test:arch-test; do
  PATH="$PATH:/usr/sbin:/sbin" command -v "${pair%%:*}" >/dev/null || need+=("${pair#*:}")
done
# qemu-system-x86 7.2's and qemu-system-common's shared libraries (apt-cache depends).
libs=(libaio1 libbpf1 libcapstone4 libfdt1 libfuse3-3 libglib2.0-0 libgmp10 libgnutls30 libhogweed6
  libibverbs1 libjpeg62-turbo libnettle8 libnuma1 libpixman-1-0 libpmem1 libpng16-16 librdmacm1
  libsasl2-2 libseccomp2 libslirp0 libudev1 liburing2 libvdeplug2 libzstd1 zlib1g libasound2
  libbrlapi0.8 libcacard0 libcap-ng0 libepoxy0 libgbm1 libncursesw6 libsndio7.0 libspice-server1
  libtinfo6 libusb-1.0-0 libusbredirparser1)
for l in "${libs[@]}"; do
  dpkg-query -W -f='${Status}\n' "$l" 2>/dev/null | grep -q '^install ok installed' || need+=("$l")
done
[ ${#need[@]} -eq 0 ] || apt_install "${need[@]}"

# The unprivileged user the image test builds images as (image-builder is rootless): a
# subordinate uid/gid range for its user namespace, and the shared base cache its own.
if [ "$(id -u)" = 0 ]; then
  id agog-image >/dev/null 2>&1 || useradd --system --create-home --home-dir /var/lib/agog-image \
    --shell /usr/sbin/nologin agog-image
  if ! grep -q '^agog-image:' /etc/subuid || ! grep -q '^agog-image:' /etc/subgid; then
    # Past every range already handed out.
    top=$(cat /etc/subuid /etc/subgid 2>/dev/null | awk -F: '{e=$2+$3} e>m{m=e} END{print (m>300000?m:300000)}')
    usermod --add-subuids "$top-$((top + 65535))" --add-subgids "$top-$((top + 65535))" agog-image
  fi
  install -d -m 0755 -o agog-image -g agog-image "$CACHE/image-builder"
  find "$CACHE/image-builder" -maxdepth 1 -name 'base-*.tar' ! -user agog-image -exec chown agog-image:agog-image {} +
fi

# The arm64 (Raspberry Pi) base runs its maintainer scripts under qemu-user: qemu-aarch64-static
# registered in binfmt_misc with the F flag (the kernel opens the interpreter at registration,
# so it works inside mmdebstrap's namespaces and chroots too).
if [ "$(id -u)" = 0 ] && [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  log "registering qemu-aarch64-static in binfmt_misc"
  sed 's|/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF|/usr/bin/qemu-aarch64-static:F|' \
    /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register
fi

if [ ! -f "$QEMU/.complete" ]; then
  [ "$(id -u)" = 0 ] || { log "qemu-system-x86 is not unpacked in $QEMU: run this as root once"; exit 1; }
  log "unpacking qemu-system-x86, qemu-system-arm and OVMF into $QEMU"
  tmp=$(mktemp -d)
  chmod 0755 "$tmp"   # apt-get download hands the files to its _apt user
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && apt-get download -qq qemu-system-x86 qemu-system-arm qemu-system-common qemu-system-data seabios ipxe-qemu ovmf >/dev/null) \
    || { apt-get update -qq && (cd "$tmp" && apt-get download -qq qemu-system-x86 qemu-system-arm qemu-system-common qemu-system-data seabios ipxe-qemu ovmf >/dev/null); }
  rm -rf "$QEMU.partial" && mkdir -p "$QEMU.partial"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$QEMU.partial"; done
  # /usr/share/qemu links to ../seabios etc. with absolute targets: point them into the prefix.
  find "$QEMU.partial/usr/share/qemu" -maxdepth 1 -type l | while read -r l; do
    t=$(readlink "$l")
    case "$t" in /usr/*) ln -sfn "$QEMU${t}" "$l" ;; esac
  done
  rm -rf "$QEMU" && mv "$QEMU.partial" "$QEMU"
  "$QEMU/usr/bin/qemu-system-x86_64" --version | head -n1 >&2
  "$QEMU/usr/bin/qemu-system-aarch64" --version | head -n1 >&2
  [ -f "$QEMU/usr/share/OVMF/OVMF_CODE.fd" ] || { log "no OVMF_CODE.fd in the ovmf package"; exit 1; }
  touch "$QEMU/.complete"
fi
echo "$QEMU"
