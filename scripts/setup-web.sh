#!/usr/bin/env bash
# The dashboard test's browser: Debian's headless Chromium and its chromedriver (WebDriver),
# plus a font so pages render as on a desktop. Idempotent; nothing to do on a second run.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || need+=(fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    # Only the dashboard test needs them (the lab does not): say so, do not fail.
    printf 'setup: the dashboard test needs %s: install them as root\n' "${need[*]}" >&2
    exit 0
  fi
  printf 'setup: apt-get install %s\n' "${need[*]}" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
