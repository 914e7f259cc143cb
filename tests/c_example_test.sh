#!/usr/bin/env bash
# Installs the built library into a temporary prefix, builds examples/c against it
# with find_package(sparq) and with pkg-config, and runs both on a converted model.
# Usage: c_example_test.sh BUILD_DIR SOURCE_DIR SPARQ_CLI MODELS_DIR
set -euo pipefail
build=$1 src=$2 cli=$3 models=$4
[ -f "$models/bert-14/model.onnx" ] || { echo "c_example_test: no models; skipped"; exit 0; }
work=$(mktemp -d /tmp/sparq_cex_XXXXXX)
trap 'rm -rf "$work"' EXIT
cmake --install "$build" --prefix "$work/prefix" >/dev/null
"$cli" convert "$models/bert-14/model.onnx" -o "$work/m.sparq" --precision int8 >/dev/null
cmake -S "$src/examples/c" -B "$work/build" -DCMAKE_PREFIX_PATH="$work/prefix" >/dev/null
cmake --build "$work/build" >/dev/null
LD_LIBRARY_PATH="$work/prefix/lib" "$work/build/sparq_example" "$work/m.sparq" 9
libdir=$(ls -d "$work"/prefix/lib*/pkgconfig | head -n 1)
PKG_CONFIG_PATH="$libdir" cc -std=c99 -Wall -Werror "$src/examples/c/main.c" \
  $(PKG_CONFIG_PATH="$libdir" pkg-config --cflags --libs sparq) -o "$work/example_pc"
LD_LIBRARY_PATH="$(dirname "$libdir")" "$work/example_pc" "$work/m.sparq" 5 >"$work/pc.txt"
grep -q "last_hidden_state: \[1, 5, 32\]" "$work/pc.txt"
grep -q "^plan: [0-9]* steps ([0-9]* op by op), 13 matmuls, 2 attentions fused" "$work/pc.txt"
# The installed Python module, when one was built, imports from the prefix alone and
# finds the installed libsparq through its RUNPATH.
py=$(ls "$work"/prefix/lib/python3/dist-packages/sparq*.so 2>/dev/null | head -n 1 || true)
if [ -n "$py" ]; then
  (cd "$work" && PYTHONPATH="$(dirname "$py")" /usr/bin/python3 -c "
import numpy as np, sparq
assert sparq.__file__.startswith('$work/prefix'), sparq.__file__
m = sparq.Model('$work/m.sparq', threads=1)
out = m.run({'input_ids': np.arange(3, 12, dtype=np.int64).reshape(1, 9)})
assert out['last_hidden_state'].shape == (1, 9, 32)
assert m.plan_summary()['fused_attention'] == 2
") || { echo "c_example_test: installed Python module failed"; exit 1; }
  echo "installed Python module: ok"
fi
echo "c_example_test: ok"
