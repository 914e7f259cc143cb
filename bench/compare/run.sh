#!/usr/bin/env bash
# The peer benchmark in one command: installs what it needs (Debian packages, npm's
# onnxruntime-node into bench/peers only), builds the release preset, then runs
# bench/compare/compare.py with the given options (see its --help). The full grid (four
# models x four sparsities x seq 128/384 x 1 and 2 threads x six engines) takes about
# 1.5-2 hours on 2 cores; --models/--sparsities/--threads narrow it.
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/deps.sh
SPARQ_PACKAGES+=(python3-matplotlib libopenblas0-pthread)
sparq_install_deps
if ! command -v npm >/dev/null 2>&1; then  # best effort: ONNX Runtime is skipped without it
  apt-get install -y -q --no-install-recommends nodejs npm >/dev/null 2>&1 || true
fi
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc 2>/dev/null || echo 2)" --target sparq_cli >&2
if [ ! -d bench/peers/node_modules/onnxruntime-node ]; then
  (cd bench/peers && timeout 300 npm install --ignore-scripts --no-audit --no-fund >&2) ||
    echo "note: npm could not install onnxruntime-node; ONNX Runtime is skipped" >&2
fi
exec /usr/bin/python3 bench/compare/compare.py "$@"
