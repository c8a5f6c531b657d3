#!/usr/bin/env bash
# Prepares, on a build machine, what the GPU check needs on a machine with an NVIDIA GPU
# (which may have no compiler, no busybox and no network): the static gpurun binary,
# busybox-static, the CUDA driver-API check program and the glibc files it loads.
# Output: DIR (default .gpucheck, ignored by git). Then, on the GPU machine, as root:
#   integration/gpu-machine/check.sh DIR
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=${1:-.gpucheck}
rm -rf "$out"
mkdir -p "$out/lib"
make -s build
cp target/release/gpurun "$out/gpurun"
cp /bin/busybox "$out/busybox"
cc -O2 -Wall -o "$out/cuda_check" integration/gpu-machine/cuda_check.c -ldl
for f in $(ldd "$out/cuda_check" | grep -o '/[^ ]*'); do cp -L "$f" "$out/lib/"; done
echo "prepared $out: $(ls "$out" "$out/lib" | tr '\n' ' ')"
