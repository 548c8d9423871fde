#!/usr/bin/env bash
# Image build figures (BENCHMARKS.md, "Images"): a medium (x86_64 UEFI) image built twice from
# the same inputs with the base cached (time of each step, sizes, byte-identical or not), the
# .img.xz at the default level, and the field-journey figures of tests/tests/image.rs (NUC and
# Raspberry Pi: form to email, power-on to online, to replication through the tunnel).
#   benchmarks/image.sh [--no-boot]
# Needs scripts/setup.sh, scripts/setup-image.sh and packaging/build-static.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d /tmp/agog-image-bench.XXXXXX)
trap 'rm -rf "$out"' EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$out/ca.key" \
  -out "$out/ca.pem" -subj /CN=bench-ca -days 2 2>/dev/null
args=(--size medium --ca-cert "$out/ca.pem" --facility facility-bench-001 --tenant tenant-bench
      --region us-east --hub-url https://hub.example.com:8443 --advertise-host 10.8.0.12
      --token agog_bt_benchbenchbenchbenchbenchbenchbenchbenchben --source-date-epoch 1735689600)
echo "== base (cached or not)"
/usr/bin/time -f "   base + first build: %e s wall" nice -n 5 image-builder/build-image "${args[@]}" --out "$out/a" --compress xz 2>&1 \
  | grep -E '^\[|xz|done|wall'
echo "== second build, same inputs (no xz)"
/usr/bin/time -f "   %e s wall" nice -n 5 image-builder/build-image "${args[@]}" --out "$out/b" --compress none 2>&1 | grep -E 'done|wall'
a=$(cut -d' ' -f1 "$out/a/agog-edge-medium-facility-bench-001.img.sha256")
b=$(cut -d' ' -f1 "$out/b/agog-edge-medium-facility-bench-001.img.sha256")
[ "$a" = "$b" ] && echo "   byte-identical: yes ($a)" || echo "   byte-identical: NO ($a vs $b)"
img="$out/a/agog-edge-medium-facility-bench-001.img"
echo "== sizes"
echo "   .img apparent $(du -h --apparent-size "$img" | cut -f1), allocated $(du -h "$img" | cut -f1), .img.xz $(du -h --apparent-size "$img.xz" | cut -f1)"
if [ "${1:-}" != --no-boot ]; then
  echo "== the field journey under qemu -accel tcg (tests/tests/image.rs)"
  AGOG_PG_BIN="$(bash scripts/setup.sh 2>/dev/null | tail -n 1)" \
    nice -n 5 cargo nextest run -p agog-tests --test image --no-capture 2>&1 \
    | grep -E 'image built|power-on|PASS|FAIL'
fi
