#!/usr/bin/env bash
# Generates the conformance model set into DIR (default build/models) with
# tools/make_models.py. Skips (exit 0, with a note) when python3-torch is missing.
set -euo pipefail
out=${1:-build/models}
here=$(cd "$(dirname "$0")" && pwd)
if ! /usr/bin/python3 -c "import torch, onnx, numpy" 2>/dev/null; then
  echo "make_test_models: python3-torch/python3-onnx/python3-numpy missing; no conformance models" >&2
  exit 0
fi
mkdir -p "$out"
gen() {
  local name=$1; shift
  if [ -f "$out/$name/manifest.json" ] && [ "$out/$name/manifest.json" -nt "$here/make_models.py" ]; then
    return 0
  fi
  /usr/bin/python3 "$here/make_models.py" --out "$out/$name" "$@" 2>"$out/$name.log" >/dev/null ||
    { cat "$out/$name.log" >&2; exit 1; }
}
gen bert-14 --family bert --opset 14
gen bert-17 --family bert --opset 17
gen bert-head-14 --family bert --opset 14 --head --batch 3 --seq 7
gen bert-pruned-4x1 --family bert --opset 17 --prune 0.9 --block 4x1
gen distilbert-14 --family distilbert --opset 14
gen distilbert-17 --family distilbert --opset 17 --seq 13
gen distilbert-head-1x4 --family distilbert --opset 14 --head --prune 0.8 --block 1x4
gen roberta-14 --family roberta --opset 14
gen roberta-17 --family roberta --opset 17 --batch 3 --seq 9
gen roberta-1x1 --family roberta --opset 14 --prune 0.7 --block 1x1
gen roberta-left-pad --family roberta --opset 14 --left-pad --batch 3
gen bert-opset11 --family bert --opset 11 --head
gen distilbert-opset12 --family distilbert --opset 12
gen roberta-opset13 --family roberta --opset 13
# Export variants of the same models (issue 10): each must reach the same plan as its
# default export (tests/conformance_test.cpp, ExportVariantsReachTheFastPath).
gen bert-14-fresh-ln --family bert --opset 14 --fresh-layernorm
gen bert-14-nofold --family bert --opset 14 --no-constant-folding
gen distilbert-14-fresh-ln --family distilbert --opset 14 --fresh-layernorm
gen roberta-14-nofold --family roberta --opset 14 --no-constant-folding
# One class per model; every family gets each class (make_models.py --help).
for f in bert distilbert roberta; do
  gen $f-11 --family $f --opset 11
  gen $f-14-tanh --family $f --opset 14 --gelu tanh
  gen $f-14-sigmoid --family $f --opset 14 --gelu sigmoid
  gen $f-14-gemm2d --family $f --opset 14 --linear gemm2d
  gen $f-14-bool-mask --family $f --opset 14 --mask-dtype bool
done
gen bert-14-scale-mul --family bert --opset 14 --attention-scale mul
gen bert-14-q-mul --family bert --opset 14 --attention-scale q-mul
gen distilbert-14-scale-mul --family distilbert --opset 14 --attention-scale mul
gen roberta-14-qk-mul --family roberta --opset 14 --attention-scale qk-mul
gen bert-14-mask-10000 --family bert --opset 14 --mask-fill -10000
gen roberta-14-mask-10000 --family roberta --opset 14 --mask-fill -10000
gen distilbert-14-mask-inf --family distilbert --opset 14 --mask-fill=-inf
gen distilbert-14-nofold --family distilbert --opset 14 --no-constant-folding
gen roberta-14-fresh-ln --family roberta --opset 14 --fresh-layernorm
echo "make_test_models: models in $out" >&2
