#!/usr/bin/env bash
# The GPU checks of gpurun on a real NVIDIA machine, as root, with no network. Input: the
# directory prepare.sh made. Prints PASS/FAIL lines and a summary; exits non-zero on any
# FAIL. With $OUT set, the report is also written to $OUT/gpu-check.txt.
#   1. discovery matches `nvidia-smi -L`;
#   2. a container granted GPU 0 runs nvidia-smi and a CUDA program (allocation, kernel
#      launch, copy back) through the injected driver;
#   3. a container not granted the GPU cannot open it (mknod'ed node: EPERM).
set -uo pipefail
dir=$(cd "${1:-.gpucheck}" && pwd)
gpurun="$dir/gpurun"
work=$(mktemp -d /tmp/gpurun-gpucheck.XXXXXX)
root="$work/state"
report=()
fails=0
pass() { report+=("PASS $*"); echo "PASS $*"; }
fail() { report+=("FAIL $*"); echo "FAIL $*"; fails=$((fails + 1)); }
cleanup() {
	for id in $("$gpurun" --root "$root" list -q 2>/dev/null); do "$gpurun" --root "$root" delete -f "$id"; done
	rm -rf "$work"
}
trap cleanup EXIT

echo "== host"
uname -r
nvidia-smi -L || fail "nvidia-smi on the host"
cat /proc/driver/nvidia/version 2>/dev/null | head -1
# Where the driver's user-space files are (a driver container puts them elsewhere, and
# then gpurun's [nvidia] driver-root must point there).
ldconfig -p 2>/dev/null | grep -E 'libcuda\.so|libnvidia-ml\.so' | head -4
ls -d /usr/local/nvidia /run/nvidia/driver 2>/dev/null

echo "== 1. discovery"
host_uuids=$(nvidia-smi -L 2>/dev/null | grep -o 'GPU-[0-9a-f-]*' | sort)
ours=$("$gpurun" gpus --format json | grep -o 'GPU-[0-9a-f-]*' | sort -u)
"$gpurun" gpus
if [ -n "$host_uuids" ] && [ "$host_uuids" = "$ours" ]; then pass "discovery matches nvidia-smi -L ($(echo "$host_uuids" | wc -l) GPUs)"; else fail "discovery: nvidia-smi says [$host_uuids], gpurun says [$ours]"; fi

echo "== 1b. enrichment (through the driver's nvidia-smi)"
json=$("$gpurun" gpus --refresh --format json)
smi_cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' ')
ours_cc=$(echo "$json" | grep -o '"compute_capability": *"[0-9.]*"' | head -1 | grep -o '[0-9][0-9.]*')
if [ -n "$smi_cc" ] && [ "$smi_cc" = "$ours_cc" ]; then pass "compute capability $ours_cc matches nvidia-smi"; else fail "compute capability: nvidia-smi says '$smi_cc', gpurun says '$ours_cc'"; fi
echo "$json" | grep -q '"memory_total_mib": *[0-9]' && pass "gpus shows live memory" || fail "gpus shows no live memory"
cuda=$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: *[0-9.]*' | grep -o '[0-9][0-9.]*')
echo "nvidia-smi reports CUDA $cuda"

# A Debian-like glibc rootfs: busybox, the check program and the libraries it loads.
rootfs="$work/rootfs"
mkdir -p "$rootfs"/{bin,etc,proc,sys,dev,tmp,lib64,usr/bin,usr/lib/x86_64-linux-gnu,lib/x86_64-linux-gnu}
cp "$dir/busybox" "$rootfs/bin/busybox"
for a in sh cat ls echo mknod grep; do ln -s busybox "$rootfs/bin/$a"; done
cp "$dir/cuda_check" "$rootfs/bin/cuda_check"
cp "$dir"/lib/* "$rootfs/lib/x86_64-linux-gnu/"
[ -e "$dir/lib/ld-linux-x86-64.so.2" ] && cp "$dir/lib/ld-linux-x86-64.so.2" "$rootfs/lib64/"
echo 'root:x:0:0:root:/root:/bin/sh' > "$rootfs/etc/passwd"

bundle() { # bundle DIR ENV_JSON CAPS_JSON SCRIPT
	mkdir -p "$1"
	cat > "$1/config.json" <<JSON
{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false, "user": {"uid": 0, "gid": 0},
    "args": ["sh", "-c", "$4"],
    "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" $2],
    "cwd": "/",
    "capabilities": {"bounding": $3, "effective": $3, "permitted": $3},
    "noNewPrivileges": true
  },
  "root": {"path": "$rootfs", "readonly": false},
  "mounts": [
    {"destination": "/proc", "type": "proc", "source": "proc"},
    {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "mode=755"]},
    {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}
  ],
  "linux": {
    "resources": {"devices": [{"allow": false, "access": "rwm"}]},
    "namespaces": [{"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}]
  }
}
JSON
}

echo "== 2. a container granted GPU 0"
privileged='["CAP_SYS_ADMIN", "CAP_KILL", "CAP_MKNOD"]'
bundle "$work/granted" ', "NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_DRIVER_CAPABILITIES=compute,utility"' "$privileged" \
	'ls /dev/nvidia*; nvidia-smi -L; grep ModifyDeviceFiles /proc/driver/nvidia/params; cuda_check'
start=$(date +%s%N)
out=$("$gpurun" --root "$root" run -b "$work/granted" granted 2>&1); rc=$?
end=$(date +%s%N)
echo "$out"
echo "run with a GPU grant took $(( (end - start) / 1000000 )) ms"
echo "$out" | grep -q 'CUDA OK' && pass "CUDA program allocated, launched and read back in the container" || fail "CUDA program in the container (rc $rc)"
echo "$out" | grep -q '^GPU 0' && pass "nvidia-smi in the container sees GPU 0" || fail "nvidia-smi in the container"
echo "$out" | grep -q 'ModifyDeviceFiles: 0' && pass "params say ModifyDeviceFiles: 0" || fail "params file"
echo "$out" | grep -q '/dev/nvidia0' && pass "/dev/nvidia0 present" || fail "/dev/nvidia0 missing"

echo "== 2b. NVIDIA_REQUIRE_CUDA against the driver's CUDA version"
bundle "$work/req-ok" ", \"NVIDIA_VISIBLE_DEVICES=0\", \"NVIDIA_REQUIRE_CUDA=cuda>=${cuda:-1.0}\"" '[]' 'echo required-ok'
out=$("$gpurun" --root "$root" run -b "$work/req-ok" req-ok 2>&1)
echo "$out" | grep -q required-ok && pass "cuda>=${cuda} (the driver's own version) runs" || fail "cuda>=${cuda} refused: $out"
bundle "$work/req-no" ', "NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_REQUIRE_CUDA=cuda>=99.0"' '[]' 'echo should-not-run'
out=$("$gpurun" --root "$root" run -b "$work/req-no" req-no 2>&1)
echo "$out" | grep -q 'should-not-run' && fail "cuda>=99.0 was not refused" || pass "cuda>=99.0 refused: $(echo "$out" | tail -1)"

echo "== 3. a container not granted the GPU"
bundle "$work/denied" '' "$privileged" \
	'ls /dev/nvidia* 2>&1; mknod /dev/nvidia0 c 195 0 && cat /dev/nvidia0 2>&1; true'
out=$("$gpurun" --root "$root" run -b "$work/denied" denied 2>&1)
echo "$out"
echo "$out" | grep -q 'Operation not permitted' && pass "an ungranted GPU cannot be opened (EPERM)" || fail "an ungranted GPU could be opened"

echo "== summary"
printf '%s\n' "${report[@]}"
if [ -n "${OUT:-}" ]; then printf '%s\n' "${report[@]}" > "$OUT/gpu-check.txt"; fi
[ "$fails" -eq 0 ]
