#!/usr/bin/env bash
# The test command: machine setup (idempotent), then every test of the workspace.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh >/dev/null
# Tests run the binaries as real processes.
cargo build --workspace --bins
# The static musl builds (x86_64, aarch64) that tests/tests/packaging.rs checks and packages.
# Warm (nothing changed): about a second; cold: see BENCHMARKS.md.
bash packaging/build-static >/dev/null
export AGOG_PG_BIN="$(bash scripts/setup.sh 2>/dev/null | tail -n 1)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
