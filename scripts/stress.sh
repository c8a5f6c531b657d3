#!/bin/sh
# make stress (root): the fault, race and load tests with larger counts than `make test`
# runs them. Every count can be overridden from the environment:
#
#   GPURUN_FAULT_KILLS      moments at which a `gpurun create` is SIGKILLed (test: 24)
#   GPURUN_RACE_IDS         ids raced through create/start/kill/delete at once (test: 100)
#   GPURUN_LOAD_CONTAINERS  containers run under load (test: 200)
#   GPURUN_LOAD_PARALLEL    how many of them at a time (test: 8)
#   GPURUN_FUZZ_ITERS       generated inputs per fuzz target, when STRESS_FUZZ=1
set -eu
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

if [ "$(id -u)" != 0 ]; then
    echo "stress: needs root (without it the tests only skip)" >&2
    exit 1
fi

export GPURUN_FAULT_KILLS="${GPURUN_FAULT_KILLS:-400}"
export GPURUN_RACE_IDS="${GPURUN_RACE_IDS:-500}"
export GPURUN_LOAD_CONTAINERS="${GPURUN_LOAD_CONTAINERS:-2000}"
export GPURUN_LOAD_PARALLEL="${GPURUN_LOAD_PARALLEL:-16}"

# The fault tests need a gpurun with fail points; build it once, here, not inside a test.
$CARGO build --quiet --features failpoints --bin gpurun --target-dir target/failpoints
export GPURUN_FAILPOINTS_BIN="$PWD/target/failpoints/debug/gpurun"

tests="faults races load"
if [ "${STRESS_FUZZ:-0}" = 1 ]; then
    export GPURUN_FUZZ_ITERS="${GPURUN_FUZZ_ITERS:-100000}"
    tests="$tests fuzz_config fuzz_gpu fuzz_state"
fi

echo "stress: kills=$GPURUN_FAULT_KILLS race-ids=$GPURUN_RACE_IDS" \
    "containers=$GPURUN_LOAD_CONTAINERS parallel=$GPURUN_LOAD_PARALLEL"
for t in $tests; do
    start=$(date +%s)
    $CARGO test --quiet --test "$t" -- --nocapture
    echo "stress: $t passed in $(( $(date +%s) - start )) s"
done
