#!/usr/bin/env bash
# The one list of what gpurun's builds, tests, demo and benchmark need from Debian's
# archive. `make demo`, `make test`, `make bench`, the VM harness and .ci/run all call it;
# it installs only what is missing, so a second call does nothing.
#
#   scripts/deps.sh GROUP...
#
#   build    a C toolchain and glibc's static archive (every cargo build here links
#            gpurun statically: .cargo/config.toml)
#   demo     build + a static busybox and python3 (scripts/mkbundle.sh)
#   test     demo + runc and crun (tests that run one bundle under both), gcc-multilib
#            (a static i386 program for the seccomp architecture tests), iproute2,
#            procps, util-linux (`script`, `unshare`)
#   lint     protoc (clippy over the workspace builds the CRI bindings) + rustfmt, clippy
#   clients  containerd, its runc shim, podman with conmon, protoc (integration/)
#   vm       qemu-system-x86, cpio, xz-utils, systemd (integration/vm/run.sh)
#   bench    runc, crun, busybox (scripts/bench.sh)
#   ci       all of the above, before anything builds
#
# Installing needs root. Without it the missing packages are named; the script fails for
# the groups build and demo, and under CI=true, and otherwise goes on (the tests that need
# a missing package say so).
set -euo pipefail

want=()
components=()
add_group() {
	case $1 in
	build) want+=(gcc libc6-dev pkg-config ca-certificates) ;;
	demo) add_group build && want+=(busybox-static python3) ;;
	test) add_group demo && want+=(runc crun gcc-multilib iproute2 procps util-linux) ;;
	lint) add_group build && want+=(protobuf-compiler) && components+=(rustfmt clippy) ;;
	clients) add_group demo && want+=(containerd podman conmon protobuf-compiler util-linux) ;;
	vm) add_group demo && want+=(qemu-system-x86 cpio xz-utils systemd) ;;
	bench) add_group demo && want+=(runc crun) ;;
	ci) for g in test lint clients vm bench; do add_group "$g"; done ;;
	*)
		echo "deps: unknown group '$1' (build demo test lint clients vm bench ci)" >&2
		exit 2
		;;
	esac
}
[ "$#" -gt 0 ] || set -- demo
for g in "$@"; do add_group "$g"; done

installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

need=()
for p in $(printf '%s\n' "${want[@]}" | sort -u); do
	installed "$p" || need+=("$p")
done

# qemu-utils may come from bookworm-backports on a machine that has no backports source:
# installing bookworm's qemu-system-x86 then removes it. Say what happened either way.
qemu_utils_before=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)

if [ "${#need[@]}" -gt 0 ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "deps: missing ${need[*]}: run this as root, or: apt-get install ${need[*]}" >&2
		case " $* " in *" build "* | *" demo "*) exit 1 ;; esac
		[ "${CI:-}" != true ] || exit 1
		exit 0
	fi
	echo "deps: installing ${need[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q
	apt-get install -y -q --no-install-recommends "${need[@]}"
fi

if printf '%s\n' "${need[@]}" | grep -qx qemu-system-x86; then
	qemu_from=$(apt-cache policy qemu-system-x86 | awk '/\*\*\*/ { getline; print $2, $3; exit }')
	echo "deps: qemu-system-x86 $(dpkg-query -W -f='${Version}' qemu-system-x86) installed from ${qemu_from:-?}"
	qemu_utils_after=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
	if [ -n "$qemu_utils_before" ] && [ "$qemu_utils_before" != "$qemu_utils_after" ]; then
		echo "deps: qemu-utils was $qemu_utils_before, now ${qemu_utils_after:-removed} (apt resolved it against bookworm's qemu; nothing here needs it)"
	fi
fi

if [ "${#components[@]}" -gt 0 ]; then
	if ! command -v rustup >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/rustup" ]; then
		PATH=$HOME/.cargo/bin:$PATH
	fi
	missing_components=()
	for c in $(printf '%s\n' "${components[@]}" | sort -u); do
		rustup component list --installed 2>/dev/null | grep -q "^$c" || missing_components+=("$c")
	done
	if [ "${#missing_components[@]}" -gt 0 ]; then
		echo "deps: rustup component add ${missing_components[*]}"
		rustup component add "${missing_components[@]}"
	fi
fi
