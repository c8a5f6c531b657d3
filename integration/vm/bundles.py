#!/usr/bin/env python3
"""Write one OCI bundle per VM test case.

    bundles.py GPURUN OUT

OUT/<case>/config.json is `GPURUN spec` edited for the case; every bundle shares the
read-only rootfs the harness puts at /bundles/rootfs inside the VM.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOTFS = "/bundles/rootfs"
MiB = 1 << 20

# Character majors 120-127 are reserved for local use: no driver of Debian's kernel
# claims them, so open() of an allowed node fails with ENXIO, of a denied one with EPERM.
ALLOWED = (120, 0)
DENIED = (120, 1)
WILD = (121, 5)
SPEC_NODE = (122, 0)
# The systemd boot's device case: majors 240-254 are handed out to drivers dynamically from
# 254 down; the case checks /proc/devices that 240 and 241 are free. 241:0 has no rule.
SD_ALLOWED = (240, 0)


def base(gpurun):
    with tempfile.TemporaryDirectory() as d:
        subprocess.run([gpurun, "spec", "--bundle", d], check=True)
        spec = json.loads((Path(d) / "config.json").read_text())
    spec["root"] = {"path": ROOTFS, "readonly": True}
    spec["process"]["terminal"] = False
    return spec


def sh(script):
    return ["sh", "-c", script]


def bind(source, destination, *opts):
    return {
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": ["bind", *opts],
    }


def cases():
    busy = "while :; do :; done"
    return {
        "hello": {"args": sh("echo hello from gpurun; cat /proc/self/cgroup")},
        "memory_oom": {
            "args": ["sh", "/cases/memory.sh"],
            "resources": {"memory": {"limit": 32 * MiB}},
        },
        "pids_fork_count": {
            "args": ["sh", "/cases/pids_count.sh"],
            "resources": {"pids": {"limit": 16}},
        },
        "pids_fork_bomb": {
            "args": ["sh", "/cases/fork_bomb.sh"],
            "resources": {"pids": {"limit": 16}},
        },
        "cpu_quota": {
            "args": sh(busy),
            "resources": {"cpu": {"quota": 20000, "period": 100000}},
            "cgroupsPath": "/gpurun-vm/cpu_quota",
        },
        "cpuset": {
            "args": sh("grep Cpus_allowed_list /proc/self/status"),
            "resources": {"cpu": {"cpus": "0", "mems": "0"}},
        },
        "devices": {
            "args": ["sh", "/cases/devices.sh"],
            "mounts": [
                bind("/vmtest/devices/nodes", "/nodes"),
                bind("/vmtest/devices/ctl", "/ctl", "rw"),
            ],
            "devices": [
                {
                    "path": "/dev/vmtest-spec",
                    "type": "c",
                    "major": SPEC_NODE[0],
                    "minor": SPEC_NODE[1],
                    "fileMode": 0o666,
                    "uid": 0,
                    "gid": 0,
                }
            ],
            "device_rules": [
                {"allow": True, "type": "c", "major": ALLOWED[0], "minor": ALLOWED[1], "access": "rw"},
                {"allow": True, "type": "c", "major": WILD[0], "access": "r"},
                # A `linux.devices` node is made but, as with runc, only usable with a
                # rule that allows it.
                {"allow": True, "type": "c", "major": SPEC_NODE[0], "minor": SPEC_NODE[1], "access": "rwm"},
            ],
            "resources": {"memory": {"limit": 64 * MiB}},
        },
        "freeze": {"args": sh(f"{busy} & {busy}")},
        "update": {
            "args": ["sleep", "600"],
            "resources": {
                "memory": {"limit": 32 * MiB},
                "pids": {"limit": 32},
                "cpu": {"quota": 50000, "period": 100000},
            },
        },
        # The systemd boot (GPURUN_VM_INIT=systemd), run with gpurun --systemd-cgroup.
        "systemd_scope": {
            "args": sh("cat /proc/self/cgroup; exec sleep 600"),
            "resources": {"memory": {"limit": 32 * MiB}, "pids": {"limit": 64}},
            "cgroupsPath": "system.slice:gpurun:vmtest",
        },
        "systemd_devices": {
            "args": ["sh", "/cases/systemd_devices.sh"],
            "mounts": [
                bind("/vmtest/systemd_devices/nodes", "/nodes"),
                bind("/vmtest/systemd_devices/ctl", "/ctl", "rw"),
            ],
            "device_rules": [
                {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"},
                {"allow": True, "type": "c", "major": SD_ALLOWED[0], "minor": SD_ALLOWED[1], "access": "rw"},
            ],
            "cgroupsPath": "system.slice:gpurun:vmdevices",
        },
        # The hybrid systemd boot (GPURUN_VM_CGROUP=hybrid).
        "systemd_hybrid": {
            "args": ["sleep", "600"],
            "resources": {"memory": {"limit": 32 * MiB}, "pids": {"limit": 64}},
            "cgroupsPath": "system.slice:gpurun:vmhybrid",
        },
        "systemd_oom_update": {
            "args": ["sh", "/cases/memory.sh"],
            "resources": {"memory": {"limit": 32 * MiB}},
            "cgroupsPath": "system.slice:gpurun:vmoom",
        },
    }


def main():
    gpurun, out = sys.argv[1], Path(sys.argv[2])
    template = base(gpurun)
    for name, case in cases().items():
        spec = json.loads(json.dumps(template))
        spec["process"]["args"] = case["args"]
        linux = spec["linux"]
        res = linux.setdefault("resources", {})
        res.update(case.get("resources", {}))
        res["devices"] = res.get("devices", []) + case.get("device_rules", [])
        spec["mounts"] += case.get("mounts", [])
        if "devices" in case:
            linux["devices"] = case["devices"]
        if "cgroupsPath" in case:
            linux["cgroupsPath"] = case["cgroupsPath"]
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        (d / "config.json").write_text(json.dumps(spec, indent=2) + "\n")


if __name__ == "__main__":
    main()
