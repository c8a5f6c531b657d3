#!/usr/bin/env python3
"""Per-layer counts of the tests a CI run executed, for the end of .ci/run.

    scripts/test-summary.py SKIP_LOG CARGO_LOG...

Reads cargo test's output (a log whose file name contains "integration" is the real
clients' run) (its "Running <source>" and "test result:" lines), the VM
harness's "vm: pass <case>" lines, and the skip log that tests append to through
GPURUN_SKIP_LOG (gpurun::skip). A test that returned early because it could not run is
reported "ok" by cargo; it is subtracted here, so "passed" counts only tests that ran.
Exits 1 when a layer executed nothing or anything failed.
"""

import os
import re
import sys

LAYERS = ["unit", "root integration", "VM", "real clients"]

RUNNING = re.compile(r"^\s*Running (.+?) \((\S+)\)\s*$")
DOCTESTS = re.compile(r"^\s*Doc-tests (\S+)")
RESULT = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed;")
VM_PASS = re.compile(r"^vm: pass (\S+)")


def layer_of(source):
    """The layer of one test binary, from the source cargo names in its Running line."""
    if source.startswith("integration/"):
        return "real clients"
    if source.startswith("unittests"):
        return "unit"
    if source == "tests/vm_cgroup_v2.rs":
        return "VM"
    return "root integration"


def binary_stem(path):
    """`target/.../deps/core_isolation-0123abcd` -> `core_isolation-0123abcd`."""
    return os.path.basename(path)


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    skip_log, logs = sys.argv[1], sys.argv[2:]
    passed = {layer: 0 for layer in LAYERS}
    failed = {layer: 0 for layer in LAYERS}
    skipped = {layer: 0 for layer in LAYERS}
    binaries = {}
    vm_cases = 0
    for log in logs:
        current = None
        with open(log, errors="replace") as f:
            for line in f:
                m = RUNNING.match(line)
                if m:
                    source, path = m.groups()
                    if "integration" in os.path.basename(log):
                        source = "integration/" + source
                    current = layer_of(source)
                    binaries[binary_stem(path)] = current
                    continue
                if DOCTESTS.match(line):
                    current = "real clients" if "integration" in os.path.basename(log) else "unit"
                    continue
                m = RESULT.match(line)
                if m and current:
                    passed[current] += int(m.group(1))
                    failed[current] += int(m.group(2))
                    continue
                if VM_PASS.match(line):
                    vm_cases += 1
    if os.path.exists(skip_log):
        with open(skip_log, errors="replace") as f:
            for line in f:
                binary = line.split("\t", 1)[0]
                layer = binaries.get(binary)
                if layer:
                    skipped[layer] += 1
    ok = True
    print(f"{'layer':<18} {'ran and passed':>14} {'skipped':>8} {'failed':>7}")
    for layer in LAYERS:
        ran = passed[layer] - skipped[layer]
        extra = f"  ({vm_cases} cases inside the VMs)" if layer == "VM" else ""
        print(f"{layer:<18} {ran:>14} {skipped[layer]:>8} {failed[layer]:>7}{extra}")
        if ran <= 0 or failed[layer]:
            ok = False
    if vm_cases == 0:
        ok = False
    total_ran = sum(passed.values()) - sum(skipped.values())
    print(f"total: {total_ran} passed, {sum(failed.values())} failed, {sum(skipped.values())} skipped")
    if not ok:
        print("test-summary: a layer executed no test, or a test failed", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
