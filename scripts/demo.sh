#!/usr/bin/env bash
# sparq's main job on a default it builds itself (about 3-6 minutes on 2 cores):
#   1. install missing Debian packages and build the release preset;
#   2. generate BERT-base (12 layers, hidden 768) with seeded random weights, pruned to
#      90% sparsity in 4x1 blocks, with float64 reference outputs (tools/make_models.py),
#      and the same model unpruned for sparq's dense path;
#   3. convert both to fp32 and int8 .sparq files;
#   4. run the pruned model and check its outputs against the float64 reference;
#   5. time sparq sparse against sparq dense and ONNX Runtime (npm's onnxruntime-node in
#      bench/peers; skipped with a note when npm cannot install it), batch 1, seq 128,
#      1 and 2 threads, medians measured side by side in this run.
# Generated files go to out/demo (git ignores out/); SPARQ_DEMO_DIR overrides. Models
# already generated there are reused.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/deps.sh
sparq_install_deps

out=${SPARQ_DEMO_DIR:-out/demo}
mkdir -p "$out"
py=/usr/bin/python3
step() { echo "== [$1/6] $2 ($(date +%H:%M:%S))" >&2; }

step 1 "building the release preset"
jobs=$(nproc 2>/dev/null || echo 2)
cmake --preset release >/dev/null
cmake --build --preset release -j "$jobs" --target sparq_cli >&2
sparq=build/release/sparq
"$sparq" version

step 2 "generating BERT-base: pruned 90% in 4x1 blocks (with float64 references) and dense"
if [ ! -f "$out/bert-base-90/manifest.json" ]; then
  $py tools/make_models.py --family bert --size bert-base --opset 17 --prune 0.9 --block 4x1 \
    --batch 1 --seq 128 --out "$out/bert-base-90" >&2
fi
if [ ! -f "$out/bert-base-dense/manifest.json" ]; then
  $py tools/make_models.py --family bert --size bert-base --opset 17 --batch 1 --seq 128 --no-reference \
    --out "$out/bert-base-dense" >&2
fi

step 3 "converting to .sparq (fp32 and int8)"
for p in fp32 int8; do
  "$sparq" convert "$out/bert-base-90/model.onnx" -o "$out/sparse-$p.sparq" --precision "$p" | tail -n 1
  "$sparq" convert "$out/bert-base-dense/model.onnx" -o "$out/dense-$p.sparq" --precision "$p" | tail -n 1
done

step 4 "checking the pruned model's outputs against its float64 reference"
ins=()
for f in "$out"/bert-base-90/input_*.npy; do
  n=$(basename "$f" .npy); ins+=(-i "${n#input_}=$f")
done
for p in fp32 int8; do
  "$sparq" run "$out/sparse-$p.sparq" "${ins[@]}" -o "$out/run-$p" >/dev/null
  $py tools/compare_outputs.py "$out/run-$p" "$out/bert-base-90" "$p"
done

step 5 "installing ONNX Runtime (npm onnxruntime-node) for the peer columns"
ort=0
if command -v npm >/dev/null 2>&1 || { apt-get install -y -q --no-install-recommends npm >/dev/null 2>&1 && command -v npm >/dev/null; }; then
  if (cd bench/peers && timeout 300 npm install --ignore-scripts --no-audit --no-fund >/dev/null 2>&1); then
    ort=1
    [ -f "$out/bert-base-90/model-ort-int8.onnx" ] ||
      $py bench/peers/ort_dynamic_int8.py "$out/bert-base-90/model.onnx" "$out/bert-base-90/model-ort-int8.onnx" >&2
  fi
fi
[ $ort = 1 ] || echo "note: npm could not install onnxruntime-node here; the ONNX Runtime rows are skipped" >&2

step 6 "timing: batch 1, seq 128, medians of 50 runs (ONNX Runtime: 30), same threads"
p50() { "$sparq" bench "$1" --threads "$2" --seq 128 --warmup 5 --iterations 50 --json |
        $py -c "import json,sys; print('%.2f' % json.load(sys.stdin)['latency_ms']['p50'])"; }
ort_p50() {  # the better of spinning on and off
  local a b
  a=$(node bench/peers/ort_bench.js "$1" "$2" 0 | $py -c "import json,sys; print(json.load(sys.stdin)['p50'])")
  b=$(node bench/peers/ort_bench.js "$1" "$2" 1 | $py -c "import json,sys; print(json.load(sys.stdin)['p50'])")
  $py -c "print('%.2f' % min($a, $b))"
}
declare -A t
for th in 1 2; do
  echo "   threads $th ..." >&2
  t[sparse-int8-$th]=$(p50 "$out/sparse-int8.sparq" $th)
  t[sparse-fp32-$th]=$(p50 "$out/sparse-fp32.sparq" $th)
  t[dense-int8-$th]=$(p50 "$out/dense-int8.sparq" $th)
  t[dense-fp32-$th]=$(p50 "$out/dense-fp32.sparq" $th)
  if [ $ort = 1 ]; then
    t[ort-int8-$th]=$(ort_p50 "$out/bert-base-90/model-ort-int8.onnx" $th)
    t[ort-fp32-$th]=$(ort_p50 "$out/bert-base-90/model.onnx" $th)
  fi
done
echo
echo "BERT-base, 90% sparse in 4x1 blocks, batch 1, seq 128: p50 latency (ms) and sparq sparse int8's speedup"
printf "%-34s %10s %10s %12s %12s\n" engine "1 thread" "2 threads" "speedup 1T" "speedup 2T"
row() {
  local k=$1 label=$2
  [ -n "${t[$k-1]:-}" ] || return 0
  printf "%-34s %10s %10s %11sx %11sx\n" "$label" "${t[$k-1]}" "${t[$k-2]}" \
    "$($py -c "print('%.2f' % (${t[$k-1]} / ${t[sparse-int8-1]}))")" \
    "$($py -c "print('%.2f' % (${t[$k-2]} / ${t[sparse-int8-2]}))")"
}
row sparse-int8 "sparq sparse int8"
row sparse-fp32 "sparq sparse fp32"
row dense-int8 "sparq dense int8 (unpruned)"
row dense-fp32 "sparq dense fp32 (unpruned)"
row ort-int8 "ONNX Runtime dynamic int8"
row ort-fp32 "ONNX Runtime fp32"
echo
echo "files: $out; more: $sparq --help, docs/performance.md"
