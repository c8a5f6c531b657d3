#!/usr/bin/env bash
# Install, from Debian's archive, what building gpurun and its demo bundle need and this
# machine lacks: a static busybox, python3 (edits config.json), a C linker for cargo.
# Installing needs root; without it the missing packages are named and the script fails.
set -euo pipefail

need=()
if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed'; then
	need+=(busybox-static)
fi
command -v python3 >/dev/null 2>&1 || need+=(python3)
command -v cc >/dev/null 2>&1 || need+=(gcc libc6-dev)

[ "${#need[@]}" -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "deps: missing ${need[*]}: run this as root, or: apt-get install ${need[*]}" >&2
	exit 1
fi
echo "deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${need[@]}"
