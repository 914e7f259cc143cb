#!/usr/bin/env bash
# sparq's main job, for now: build, then time sparq's SpMM against oneDNN's dense
# matmul on BERT-base layer shapes (M = 128 tokens) at several sparsities, int8 and
# fp32, on 1 and 2 threads, side by side in one run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
sparq_install_deps

jobs=$(nproc 2>/dev/null || echo 2)
echo "== building (release preset)" >&2
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs" --target sparq_cli >&2

sparq=build/release/sparq
"$sparq" version
echo
echo "== BERT-base linear layers, M=128 tokens: sparq SpMM vs oneDNN dense (medians, same run)"
first=1
for threads in 1 2; do
  for precision in int8 fp32; do
    for shape in "768 768" "768 3072" "3072 768"; do
      set -- $shape
      for s in 0 0.7 0.9; do
        if [ $first = 1 ]; then
          "$sparq" kernel-bench --m 128 --k "$1" --n "$2" --sparsity "$s" --precision "$precision" --threads "$threads"
          first=0
        else
          "$sparq" kernel-bench --m 128 --k "$1" --n "$2" --sparsity "$s" --precision "$precision" --threads "$threads" | tail -n 1
        fi
      done
    done
  done
done
echo
echo "sparsity 0 runs sparq's dense GEMM; the full grid: $sparq kernel-bench --sweep"
