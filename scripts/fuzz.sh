#!/usr/bin/env bash
# Runs every libFuzzer target for a bounded time (docs/fuzzing.md).
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 60 s; targets onnx
#        sparq npy c_api). SPARQ_FUZZ_JOBS=N runs N targets at once (default 1).
#        SPARQ_FUZZ_MERGE=1 merges new coverage into the committed corpus afterwards.
#        SPARQ_FUZZ_KEEP_GOING=1 keeps fuzzing after a crash (libFuzzer -fork=1 with
#        -ignore_crashes), so a long run collects every reproducer it finds.
# Builds the `fuzz` preset (clang-14, ASan + UBSan + libFuzzer). Inputs found are kept in
# build/fuzz/work/<target>; a crash, leak, timeout or oversized allocation writes its
# reproducer to tests/fuzz/crashes/<target>/ (commit it with the fix: ctest replays it).
# Limits per input: 5 s, 2 GiB RSS, and no single allocation above 1.2 GiB (a rejected
# input must fail before allocating more than about 1 GiB; docs/limits.md).
# Not part of scripts/test.sh: CI replays the corpus deterministically instead.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
sparq_install_deps

secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(onnx sparq npy c_api)
jobs=${SPARQ_FUZZ_JOBS:-1}

cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$(nproc 2>/dev/null || echo 2)"
# Leak reports from oneTBB's worker threads at exit are suppressed by name, with the
# reason, in tests/lsan.supp; ASan aborts on its first report.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/tests/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

run_one() {
  local t=$1
  local work=build/fuzz/work/$t
  mkdir -p "$work" "tests/fuzz/crashes/$t"
  local more=()
  [ "${SPARQ_FUZZ_KEEP_GOING:-0}" = 1 ] && more=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
  local dict=()
  [ -f "tests/fuzz/$t.dict" ] && dict=(-dict="tests/fuzz/$t.dict")
  local before
  before=$(find "tests/fuzz/crashes/$t" -type f ! -name '.*' | wc -l)
  echo "fuzz: $t for ${secs}s" >&2
  build/fuzz/tests/fuzz/fuzz_"$t" -max_total_time="$secs" -timeout=5 -rss_limit_mb=2048 \
    -malloc_limit_mb=1200 -max_len=262144 -print_final_stats=1 "${dict[@]}" "${more[@]}" \
    -artifact_prefix="tests/fuzz/crashes/$t/" "$work" "tests/fuzz/corpus/$t" \
    >"build/fuzz/$t.log" 2>&1 && local rc=0 || local rc=$?
  # One summary line: executions, coverage, corpus.
  local stats
  stats=$(grep -E '^stat::(number_of_executed_units|new_units_added|peak_rss_mb)' "build/fuzz/$t.log" |
          sed 's/stat:://; s/  */ /g' | tr '\n' ' ' || true)
  local execs
  execs=$(grep -oE '^#[0-9]+' "build/fuzz/$t.log" | tail -n 1 || true)
  local cov
  cov=$(grep -oE 'cov: [0-9]+ ft: [0-9]+ corp: [0-9]+(/[0-9]+[a-zA-Z]*)?' "build/fuzz/$t.log" | tail -n 1 || true)
  local found
  found=$(find "tests/fuzz/crashes/$t" -type f ! -name '.*' | wc -l)
  echo "fuzz: $t: exit $rc; last $execs $cov; $stats; reproducers in tests/fuzz/crashes/$t: $found" >&2
  # With SPARQ_FUZZ_KEEP_GOING libFuzzer exits 0 after crashes: new reproducers fail the run.
  if [ "$found" -gt "$before" ]; then
    echo "fuzz: $t: $((found - before)) new reproducer(s)" >&2
    return 1
  fi
  return $rc
}

fail=0
pids=()
for t in "${targets[@]}"; do
  if [ "$jobs" -gt 1 ]; then
    run_one "$t" &
    pids+=($!)
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do sleep 1; done
  else
    run_one "$t" || fail=1
  fi
done
for p in "${pids[@]}"; do wait "$p" || fail=1; done

if [ "${SPARQ_FUZZ_MERGE:-0}" = 1 ]; then
  for t in "${targets[@]}"; do
    mkdir -p "build/fuzz/merged/$t"
    build/fuzz/tests/fuzz/fuzz_"$t" -merge=1 -timeout=5 -rss_limit_mb=2048 "build/fuzz/merged/$t" \
      "tests/fuzz/corpus/$t" "build/fuzz/work/$t" >/dev/null 2>&1 || fail=1
    rm -rf "tests/fuzz/corpus/$t" && mv "build/fuzz/merged/$t" "tests/fuzz/corpus/$t"
  done
fi
if [ $fail -ne 0 ]; then
  echo "fuzz: FAILED: reproducers in tests/fuzz/crashes/ (logs: build/fuzz/<target>.log)" >&2
  exit 1
fi
echo "fuzz: no crash" >&2
