#!/usr/bin/env bash
# gpurun beside runc and crun on one busybox bundle: `make bench` runs this, as root.
#
#   scripts/bench.sh [BENCH FLAGS...]        e.g. --iters 100 --cases a,c
#
# Installs from Debian's archive what is missing (runc, crun, busybox-static, and a C
# compiler for the fake GPU driver tree), builds gpurun and the bench program
# (examples/bench) in release mode, and runs it. The bench enters a private mount
# namespace where a tmpfs covers /sys/fs/cgroup/unified, so every runtime sees the same
# pure-v1 cgroup layout (crun refuses hybrid hosts); the host's mounts are not touched.
# It prints the tables and writes target/bench/results.json.
#
# Environment: BENCH_ITERS (default 50), BENCH_WARMUP (3), BENCH_ROUNDS (5),
# BENCH_CONCURRENCY (50), BENCH_CASES (a,b,c,d), BENCH_RUNTIMES (gpurun,runc,crun),
# BENCH_OUT, BENCH_TIMEOUT (seconds per measurement, 120), CARGO.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ "$(id -u)" -ne 0 ]; then
	echo "bench: run as root: the runtimes create namespaces, cgroups and mounts" >&2
	exit 2
fi

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

need=()
for pkg in runc crun busybox-static; do
	installed "$pkg" || need+=("$pkg")
done
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)
if [ "${#need[@]}" -gt 0 ]; then
	echo "bench: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${need[@]}"
fi

export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"
cargo=${CARGO:-cargo}
# gpurun as `make build` makes it (static), then the bench program.
make -s build CARGO="$cargo"
"$cargo" build --release --example bench
exec target/release/examples/bench "$@"
