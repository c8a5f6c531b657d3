#!/usr/bin/env bash
# Build a busybox bundle under .bundles/demo and run it with gpurun, printing what the
# container sees. Needs root (namespaces and mounts).
#
# Environment: GPURUN (the gpurun binary; default target/release/gpurun).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
gpurun=${GPURUN:-target/release/gpurun}
bundle=.bundles/demo

if [ "$(id -u)" -ne 0 ]; then
	echo "demo: run as root (gpurun creates namespaces and mounts)" >&2
	exit 1
fi

rm -rf "$bundle"
GPURUN=$gpurun scripts/mkbundle.sh "$bundle" sh /view.sh

# What the container runs: its own view of the machine.
cat >"$bundle/rootfs/view.sh" <<'SH'
echo "hostname:     $(hostname)"
echo "pid of sh:    $$"
echo "user:         $(id)"
echo "network:      $(ls /sys/class/net | tr '\n' ' ')"
echo "processes:"
ps -o pid,user,comm
echo "mounts:"
mount
echo "capabilities:"
grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)' /proc/self/status
echo "limits:       nofile $(ulimit -n)"
gpus=$(ls /dev/nvidia* 2>/dev/null || true)
if [ -n "$gpus" ]; then
	echo "GPUs:" $gpus
else
	echo "GPUs: none granted"
fi
SH
python3 - "$bundle/config.json" <<'PY'
import json
import sys

path = sys.argv[1]
with open(path) as f:
    spec = json.load(f)
spec["hostname"] = "gpurun-demo"
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
    f.write("\n")
PY

echo "== gpurun run ./$bundle"
exec "$gpurun" run "./$bundle"
