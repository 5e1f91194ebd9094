#!/usr/bin/env bash
# Cross-builds tests/native/test_kernels.cpp for AArch64 and runs it under qemu-aarch64:
# the NEON kernels against the scalar reference kernels.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."

CXX=${CXX_AARCH64:-aarch64-linux-gnu-g++}
QEMU=${QEMU_AARCH64:-qemu-aarch64}
OUT=tests/native/build
mkdir -p "$OUT"

# LUTLM_HAVE_NEON gives kNeonKernels its extern declaration (external linkage).
"$CXX" -std=c++17 -O2 -ffp-contract=off -static -Icsrc -DLUTLM_HAVE_NEON=1 -Wall -Wextra \
  tests/native/test_kernels.cpp csrc/kernels_scalar.cpp csrc/kernels_neon.cpp \
  -o "$OUT/test_kernels_aarch64"

# Static binary: qemu needs no sysroot.
exec "$QEMU" "$OUT/test_kernels_aarch64"
