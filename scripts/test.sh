#!/usr/bin/env bash
# Installs what is missing, then builds and runs every test through ctest, in stages:
#   1. release: the GoogleTest suites on every kernel path this CPU has, conformance,
#      the stress test, the C API, Python and CLI checks, the fuzz corpus replay, and a
#      subset under qemu-x86_64 -cpu Haswell (a CPU without AVX-512);
#   2. asan: the same suites under AddressSanitizer + UBSan (-fno-sanitize-recover),
#      built without oneDNN (so the CLI's no-oneDNN path is tested too), with the fuzz
#      corpus and every committed crash reproducer replayed under the sanitizers.
#      Not under asan: Python (python3 cannot load an ASan module), the C example and
#      qemu (an uninstrumented host or emulator).
# The conformance models are generated once (build/models) and shared by both stages.
# Before both: every C++ file is checked against .clang-format.
# Prints the time of each stage. Usage: scripts/test.sh [--release | --asan] (one stage).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
sparq_install_deps

presets=(release asan)
case "${1:-}" in
  --release) presets=(release) ;;
  --asan) presets=(asan) ;;
  "") ;;
  *) echo "usage: scripts/test.sh [--release | --asan]" >&2; exit 2 ;;
esac
jobs=$(nproc 2>/dev/null || echo 2)

t_all=$(date +%s)
times=()
# Style first: .clang-format is checked, not advisory (STYLE.md).
if [ -d .git ] && command -v clang-format >/dev/null 2>&1; then
  echo "== test.sh: clang-format check ($(date +%H:%M:%S))" >&2
  git ls-files '*.h' '*.cpp' | xargs clang-format --dry-run --Werror
fi
for preset in "${presets[@]}"; do
  t0=$(date +%s)
  echo "== test.sh: $preset: configure and build ($(date +%H:%M:%S))" >&2
  cmake --preset "$preset" >/dev/null
  cmake --build --preset "$preset" -j "$jobs"
  t1=$(date +%s)
  echo "== test.sh: $preset: ctest ($(date +%H:%M:%S))" >&2
  ctest --preset "$preset" -j "$jobs" -E '^fuzz_replay_'
  t2=$(date +%s)
  echo "== test.sh: $preset: fuzz corpus and reproducer replay ($(date +%H:%M:%S))" >&2
  ctest --preset "$preset" -j "$jobs" -R '^fuzz_replay_'
  t3=$(date +%s)
  times+=("$(printf '%-8s build %4ds  tests %4ds  fuzz replay %4ds' "$preset" $((t1 - t0)) $((t2 - t1)) $((t3 - t2)))")
done
echo "== test.sh: stage times" >&2
for t in "${times[@]}"; do echo "   $t" >&2; done
echo "   total $(($(date +%s) - t_all))s" >&2
