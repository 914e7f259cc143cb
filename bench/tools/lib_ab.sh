#!/usr/bin/env bash
# A/B of two libsparq.so builds on one model, alternated round by round under the same CLI
# (docs/performance.md, session 6): each round runs `sparq bench` with LD_PRELOAD of build
# A, then of build B, and the report gives both p50s per round, the ratio A/B per round and
# its median.
#
# Usage: bench/tools/lib_ab.sh LIB_A LIB_B MODEL.sparq THREADS [ROUNDS=5] [SPARQ=build/release/sparq]
# SPARQ_AB_ARGS adds options to every `sparq bench` (e.g. SPARQ_AB_ARGS="--seq 384").
# Keep a copy of the old build's library first (cp build/release/libsparq.so.0.1.0 /tmp/a.so).
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,9p' "$0" >&2
  exit 2
fi
a=$1 b=$2 model=$3 threads=$4 rounds=${5:-5}
sparq=${6:-$(dirname "$0")/../../build/release/sparq}
for r in $(seq "$rounds"); do
  for side in A B; do
    lib=$a
    [ "$side" = B ] && lib=$b
    p50=$(LD_PRELOAD=$lib "$sparq" bench "$model" --threads "$threads" --warmup 20 \
      --iterations 150 ${SPARQ_AB_ARGS:-} --json |
      /usr/bin/python3 -c "import json, sys; print(json.load(sys.stdin)['latency_ms']['p50'])")
    echo "$r $side $p50"
  done
done | /usr/bin/python3 -c "
import statistics, sys
rows = [line.split() for line in sys.stdin]
a = [float(x[2]) for x in rows if x[1] == 'A']
b = [float(x[2]) for x in rows if x[1] == 'B']
ratios = [x / y for x, y in zip(a, b)]
print('A p50 ms', ' '.join('%.3f' % x for x in a))
print('B p50 ms', ' '.join('%.3f' % x for x in b))
print('A/B per round', ' '.join('%.3f' % x for x in ratios), ' median %.3f' % statistics.median(ratios))"
