#!/usr/bin/env bash
# Installs what the real-client tests (integration/) need on Debian 12, as root:
# containerd 1.6 (ctr, the runc shim), podman with conmon, protoc for the CRI bindings,
# a static libc for the pause image, busybox-static for the images, and `script`.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
	echo "integration/ci-deps.sh: run as root" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
pkgs=(containerd podman conmon protobuf-compiler busybox-static libc6-dev gcc util-linux)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
containerd --version
podman --version
protoc --version
