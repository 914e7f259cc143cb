#!/usr/bin/env bash
# Installs the Debian packages sparq builds, tests and benchmarks with, when missing.
# Sourced by scripts/test.sh and scripts/demo.sh. Needs root (or sudo) only when
# something is missing.
set -euo pipefail

# libdnnl-dev's CMake config needs the OpenCL headers and library, which Debian only
# *recommends* (and we install with --no-install-recommends): ocl-icd-opencl-dev.
# clang-14 with libfuzzer-14-dev and libclang-rt-14-dev builds the fuzz targets (the
# `fuzz` preset); libonnx-testdata holds ONNX's own node tests; clang-format checks style.
SPARQ_PACKAGES=(
  build-essential cmake pkg-config git ca-certificates
  libdnnl-dev ocl-icd-opencl-dev libtbb-dev libxsimd-dev libxxhash-dev
  libonnx-dev libprotobuf-dev protobuf-compiler
  python3 python3-dev python3-torch python3-onnx python3-numpy python3-pytest pybind11-dev
  libbenchmark-dev libgtest-dev
  qemu-user
  clang-14 libfuzzer-14-dev libclang-rt-14-dev clang-format
  libonnx-testdata
)

sparq_install_deps() {
  local missing=()
  for p in "${SPARQ_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("$p")
    fi
  done
  if [ ${#missing[@]} -eq 0 ]; then
    return 0
  fi
  echo "sparq: installing ${missing[*]}" >&2
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q >&2
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >&2
}
