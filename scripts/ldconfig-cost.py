#!/usr/bin/env python3
"""What running ldconfig for the container would cost, against what gpurun does instead.

    scripts/ldconfig-cost.py [RUNS]

gpurun places the driver libraries where the image's loader already looks (one bind mount
per file, runtime-spec/gpu.md). The other way is to place them anywhere and run the host's
ldconfig on the container's root so that ld.so.cache lists them. This measures the least
that second way costs — one `ldconfig -r <root>` writing a cache, with nothing for the
sandbox it would need around it (a sealed copy of the binary, a mount namespace, a fork) —
on two roots built here:

  small   a busybox-sized image: only the driver's 20 libraries in /usr/lib/x86_64-linux-gnu
  large   an image with a distribution's worth of libraries (hard links to this host's
          /usr/lib/x86_64-linux-gnu, about 900 shared objects) plus the driver's 20

The driver's libraries are stood in for by 20 of this host's shared objects (ldconfig reads
each file's ELF header and SONAME, so any real library costs it the same). Prints the median
and the 10th/90th percentiles of RUNS runs (default 30) in milliseconds.
"""
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HOST_LIBS = Path("/usr/lib/x86_64-linux-gnu")
LDCONFIG = next(p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if os.path.exists(p))


def stand_ins(n):
    libs = sorted(p for p in HOST_LIBS.glob("lib*.so.*") if p.is_file() and not p.is_symlink())
    return libs[:n]


def make_root(top, name, large):
    root = top / name
    lib = root / "usr/lib/x86_64-linux-gnu"
    if large:
        # Hard links: the same inodes, no copying, same filesystem as the host's libraries
        # when /tmp is on it; otherwise a copy.
        try:
            shutil.copytree(HOST_LIBS, lib, symlinks=True, copy_function=os.link)
        except OSError:
            shutil.rmtree(lib, ignore_errors=True)
            shutil.copytree(HOST_LIBS, lib, symlinks=True)
    lib.mkdir(parents=True, exist_ok=True)
    driver = lib / "driver-stand-ins"
    driver.mkdir()
    for p in stand_ins(20):
        shutil.copy2(p, driver / p.name)
    (root / "etc/ld.so.conf.d").mkdir(parents=True)
    (root / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (root / "etc/ld.so.conf.d/driver.conf").write_text("/usr/lib/x86_64-linux-gnu/driver-stand-ins\n")
    (root / "var/cache/ldconfig").mkdir(parents=True)
    return root


def measure(root, runs):
    times = []
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"}
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([LDCONFIG, "-r", str(root)], check=True, env=env,
                       stdin=subprocess.DEVNULL)
        times.append((time.perf_counter() - t) * 1000)
    cache = root / "etc/ld.so.cache"
    listed = subprocess.run([LDCONFIG, "-p", "-C", str(cache)], capture_output=True,
                            text=True, check=True).stdout.count("=>")
    times.sort()
    q = statistics.quantiles(times, n=10)
    return statistics.median(times), q[0], q[-1], listed


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    with tempfile.TemporaryDirectory(prefix="gpurun-ldconfig-") as d:
        top = Path(d)
        print(f"ldconfig {LDCONFIG}, {runs} runs each, milliseconds")
        print(f"{'root':<8}{'median':>9}{'p10':>9}{'p90':>9}{'cache entries':>15}")
        for name, large in (("small", False), ("large", True)):
            root = make_root(top, name, large)
            med, p10, p90, listed = measure(root, runs)
            print(f"{name:<8}{med:>9.2f}{p10:>9.2f}{p90:>9.2f}{listed:>15}")


if __name__ == "__main__":
    main()
