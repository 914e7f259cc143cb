#!/usr/bin/env bash
# Installs what is missing, configures, builds and runs every test through ctest:
# the GoogleTest suites on every kernel path this CPU has, the CLI checks, and a
# subset under qemu-x86_64 -cpu Haswell (a CPU without AVX-512).
# Usage: scripts/test.sh [--asan]   (--asan: the ASan+UBSan preset instead of release)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
sparq_install_deps

preset=release
if [ "${1:-}" = "--asan" ]; then preset=asan; fi
jobs=$(nproc 2>/dev/null || echo 2)

cmake --preset "$preset" >/dev/null
cmake --build --preset "$preset" -j "$jobs"
ctest --preset "$preset" -j "$jobs"
