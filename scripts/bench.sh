#!/usr/bin/env bash
# gpurun beside runc and crun on one busybox bundle: `make bench` runs this, as root.
#
#   scripts/bench.sh [BENCH FLAGS...]        e.g. --iters 100 --cases a,c
#
# Installs from Debian's archive what is missing (scripts/deps.sh bench: runc, crun,
# busybox-static, a C compiler for the fake GPU driver tree), builds gpurun and the bench program
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

scripts/deps.sh bench

export PATH="$HOME/.cargo/bin:$PATH:/usr/sbin:/sbin"
cargo=${CARGO:-cargo}
# gpurun exactly as `cargo build --release` gives it (static: .cargo/config.toml), and
# the bench program.
"$cargo" build --release --bin gpurun --example bench
out=target/$(rustc -vV | sed -n 's/^host: //p')/release
GPURUN=${GPURUN:-$out/gpurun} exec "$out/examples/bench" "$@"
