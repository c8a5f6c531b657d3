#!/usr/bin/env bash
# Build an OCI bundle around Debian's static busybox.
#
#   scripts/mkbundle.sh DIR [ARGS...]
#
# DIR/rootfs gets /bin/busybox, one symlink per applet, /etc/passwd and /etc/group with
# root; DIR/config.json is `gpurun spec` with process.args set to ARGS (default: sh) and
# process.terminal false. An existing DIR/config.json is replaced.
#
# Environment: GPURUN (the gpurun binary; default target/release/gpurun of this checkout,
# then gpurun on PATH), BUSYBOX (default /bin/busybox; must be statically linked).
set -euo pipefail

if [ "$#" -lt 1 ]; then
	echo "usage: $0 DIR [ARGS...]" >&2
	exit 2
fi
dir=$1
shift
[ "$#" -gt 0 ] || set -- sh

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
gpurun=${GPURUN:-}
if [ -z "$gpurun" ]; then
	if [ -x "$here/target/release/gpurun" ]; then
		gpurun=$here/target/release/gpurun
	elif command -v gpurun >/dev/null 2>&1; then
		gpurun=$(command -v gpurun)
	else
		echo "$0: no gpurun binary: run 'make build' or set GPURUN" >&2
		exit 1
	fi
fi

busybox=${BUSYBOX:-/bin/busybox}
if [ ! -x "$busybox" ]; then
	echo "$0: $busybox not found: install busybox-static (apt-get install busybox-static)" >&2
	exit 1
fi
# A dynamically linked busybox would find no C library inside the rootfs.
if ldd "$busybox" >/dev/null 2>&1; then
	echo "$0: $busybox is dynamically linked: install busybox-static" >&2
	exit 1
fi

rootfs=$dir/rootfs
mkdir -p "$rootfs"/{bin,dev,etc,proc,sys,tmp,root}
chmod 1777 "$rootfs/tmp"
chmod 0700 "$rootfs/root"
install -m 0755 "$busybox" "$rootfs/bin/busybox"
for applet in $("$rootfs/bin/busybox" --list); do
	[ "$applet" = busybox ] || ln -sfn busybox "$rootfs/bin/$applet"
done
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\n' >"$rootfs/etc/group"

rm -f "$dir/config.json"
"$gpurun" spec --bundle "$dir"
python3 - "$dir/config.json" "$@" <<'PY'
import json
import sys

path, args = sys.argv[1], sys.argv[2:]
with open(path) as f:
    spec = json.load(f)
spec["process"]["args"] = args
spec["process"]["terminal"] = False
with open(path, "w") as f:
    json.dump(spec, f, indent=2)
    f.write("\n")
PY
