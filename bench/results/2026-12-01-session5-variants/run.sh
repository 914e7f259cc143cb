#!/bin/bash
# Session 5's export-variant table (docs/performance.md): BERT-base 90% 4x1 int8, batch 1,
# seq 128, each export variant against the default export, 3 alternated rounds at 1 and
# 2 threads. Writes OUT (default out/variants)/p50.txt as "round threads variant p50_ms".
set -euo pipefail
cd "$(dirname "$0")/../../.."
out=${OUT:-out/variants}
S=build/release/sparq
mkdir -p "$out"
declare -A flags=(
  [default]="--opset 17" [opset11]="--opset 11" [scale-mul]="--opset 17 --attention-scale mul"
  [q-mul]="--opset 17 --attention-scale q-mul" [qk-mul]="--opset 17 --attention-scale qk-mul"
  [tanh]="--opset 17 --gelu tanh" [sigmoid]="--opset 17 --gelu sigmoid"
  [gemm2d]="--opset 17 --linear gemm2d" [mask10000]="--opset 17 --mask-fill -10000"
  [bool]="--opset 17 --mask-dtype bool" [fresh]="--opset 17 --fresh-layernorm"
  [nofold]="--opset 17 --no-constant-folding")
variants="default opset11 scale-mul q-mul qk-mul tanh sigmoid gemm2d mask10000 bool fresh nofold"
for v in $variants; do
  if [ ! -f "$out/bb-$v/manifest.json" ]; then
    # shellcheck disable=SC2086
    /usr/bin/python3 tools/make_models.py --family bert --size bert-base --prune 0.9 --block 4x1 \
      --batch 1 --seq 128 --no-reference ${flags[$v]} --out "$out/bb-$v" >/dev/null 2>&1
  fi
  "$S" convert "$out/bb-$v/model.onnx" -o "$out/v5-$v.sparq" --precision int8 >/dev/null
done
: >"$out/p50.txt"
for r in 1 2 3; do for t in 1 2; do for v in $variants; do
  p=$("$S" bench "$out/v5-$v.sparq" --threads $t --seq 128 --warmup 10 --iterations 100 --json |
      /usr/bin/python3 -c "import json,sys; print(json.load(sys.stdin)['latency_ms']['p50'])")
  echo "$r $t $v $p" | tee -a "$out/p50.txt"
done; done; done
