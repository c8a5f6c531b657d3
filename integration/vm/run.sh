#!/usr/bin/env bash
# Run gpurun's cgroup v2 cases in a VM, on Debian's own kernel with only cgroup2 mounted.
#
#   integration/vm/run.sh        (make vm-test; cargo test --test vm_cgroup_v2 with
#                                 GPURUN_VM_TESTS=1)
#   GPURUN_VM_INIT=systemd integration/vm/run.sh
#                                (the same guest with systemd 252 as pid 1: the cases of
#                                 gpurun's systemd cgroup driver, guest-systemd.sh)
#
# 1. Installs what is missing from Debian's archive (scripts/deps.sh vm: qemu-system-x86,
#    busybox-static, cpio, xz-utils, python3, libc6-dev, systemd); that needs root,
#    nothing else here does.
# 2. Fetches the kernel that linux-image-amd64 depends on with `apt-get download`, unpacks
#    it with `dpkg-deb -x` (never installs it) and keeps vmlinuz, its config and the ELF
#    image unpacked from vmlinuz (booted through PVH, skipping decompression) in the cache.
# 3. Builds a static gpurun (crt-static) for x86_64.
# 4. Packs an initramfs: busybox-static, gpurun, init + guest.sh, and one bundle per case
#    over a shared busybox rootfs (bundles.py, cases/). The systemd boot adds this host's
#    systemd, systemctl, systemd-run and busctl with every library they load, and the two
#    units in systemd/ (a target and gpurun-vm.service, the case runner).
# 5. Boots it under `qemu-system-x86_64 -accel tcg` and requires a `PASS <case>` line on
#    the serial console for every case, within the timeout.
#
# Environment:
#   GPURUN_VM_CACHE    kernel cache (default ${XDG_CACHE_HOME:-~/.cache}/gpurun-vm)
#   GPURUN_VM_INIT     pid 1 of the guest: busybox (guest.sh, the default) or systemd
#   GPURUN_VM_CGROUP   with systemd: v2 (the default) or hybrid (v1 controllers and cgroup2
#                      at /sys/fs/cgroup/unified; its case is systemd_hybrid)
#   GPURUN_VM_WORK     build directory (default target/vm, target/vm-systemd for the
#                      systemd boot); console.log is kept there
#   GPURUN_VM_TIMEOUT  seconds for the whole VM run (default 300)
#   GPURUN_VM_CASES    comma-separated cases to run (default: all of the boot's cases:
#                      the nine cgroup v2 cases, or systemd_smoke,systemd_scope,systemd_devices,systemd_oom_update)
#   GPURUN_VM_GPURUN   a statically linked gpurun to use instead of building one
#   GPURUN_VM_KERNEL   a vmlinuz to boot instead of Debian's (its config is not checked)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cache=${GPURUN_VM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/gpurun-vm}
init_mode=${GPURUN_VM_INIT:-busybox}
timeout_s=${GPURUN_VM_TIMEOUT:-300}
case $init_mode in
busybox)
	work=${GPURUN_VM_WORK:-$repo/target/vm}
	all_cases="hello,memory_oom,pids_fork_count,pids_fork_bomb,cpu_quota,cpuset,devices,freeze,update"
	;;
systemd)
	work=${GPURUN_VM_WORK:-$repo/target/vm-systemd}
	all_cases="systemd_smoke,systemd_scope,systemd_devices,systemd_oom_update"
	if [ "${GPURUN_VM_CGROUP:-v2}" = hybrid ]; then
		work=${GPURUN_VM_WORK:-$repo/target/vm-systemd-hybrid}
		all_cases="systemd_hybrid"
	fi
	;;
*)
	printf 'vm: GPURUN_VM_INIT is busybox or systemd, not %s\n' "$init_mode" >&2
	exit 1
	;;
esac
cases=${GPURUN_VM_CASES:-$all_cases}
export PATH=$HOME/.cargo/bin:$PATH

# Kernel options the cases need built in (the initramfs loads no modules).
required_config=(
	BLK_DEV_INITRD DEVTMPFS TMPFS SERIAL_8250_CONSOLE
	CGROUPS MEMCG CGROUP_PIDS CGROUP_SCHED FAIR_GROUP_SCHED CFS_BANDWIDTH CPUSETS
	CGROUP_BPF BPF_SYSCALL NAMESPACES PID_NS NET_NS IPC_NS UTS_NS SECCOMP_FILTER
)

say() { printf 'vm: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

t_script=$(now)

ensure_packages() {
	"$repo/scripts/deps.sh" vm || die "the VM harness needs the packages above (scripts/deps.sh vm)"
}

# The linux-image-6.1.0-N-amd64 package that linux-image-amd64 depends on.
kernel_package() {
	apt-cache depends linux-image-amd64 2>/dev/null |
		sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1 || true
}

# Sets $kernel (vmlinuz) and $kconfig (its config, or empty).
fetch_kernel() {
	if [ -n "${GPURUN_VM_KERNEL:-}" ]; then
		kernel=$GPURUN_VM_KERNEL
		kconfig=
		return
	fi
	local pkg dir tmp
	pkg=$(kernel_package)
	if [ -z "$pkg" ] && [ "$(id -u)" -eq 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
		pkg=$(kernel_package)
	fi
	if [ -z "$pkg" ]; then
		# No package lists (offline): use what the cache holds.
		dir=$(find "$cache" -mindepth 1 -maxdepth 1 -type d -name 'linux-image-*' 2>/dev/null |
			sort -V | tail -n 1)
		[ -n "$dir" ] || die "cannot resolve linux-image-amd64 (run apt-get update) and $cache is empty"
		say "package lists unavailable; using the cached $(basename "$dir")"
	else
		dir=$cache/$pkg
		if [ ! -s "$dir/vmlinuz" ] || [ ! -s "$dir/config" ]; then
			say "fetching $pkg"
			tmp=$(mktemp -d)
			chmod 0755 "$tmp"
			# apt drops to _apt for downloads; let it write here.
			[ "$(id -u)" -ne 0 ] || ! id _apt >/dev/null 2>&1 || chown _apt "$tmp"
			(cd "$tmp" && apt-get download -q "$pkg") >&2
			dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/x"
			mkdir -p "$dir"
			cp "$tmp"/x/boot/vmlinuz-* "$dir/vmlinuz.part"
			cp "$tmp"/x/boot/config-* "$dir/config"
			mv "$dir/vmlinuz.part" "$dir/vmlinuz"
			rm -rf "$tmp"
			# Older kernels are not needed again.
			find "$cache" -mindepth 1 -maxdepth 1 -type d -name 'linux-image-*' \
				! -name "$pkg" -exec rm -rf {} +
		fi
	fi
	kernel=$dir/vmlinuz
	kconfig=$dir/config
	[ -s "$dir/vmlinux" ] || extract_vmlinux "$dir"
	# QEMU boots the uncompressed ELF through its PVH entry, which skips the slow xz
	# decompression under emulation (about 5 s here).
	[ -s "$dir/vmlinux" ] && grep -q '^CONFIG_PVH=y' "$kconfig" && kernel=$dir/vmlinux
	return 0
}

# DIR/vmlinuz is a bzImage with an xz payload: unpack that payload (the kernel's ELF
# image) to DIR/vmlinux, as the kernel's scripts/extract-vmlinux does. Best effort.
extract_vmlinux() {
	local off
	off=$(LC_ALL=C grep -aob $'\xfd7zXZ' "$1/vmlinuz" | head -n 1 | cut -d: -f1 || true)
	[ -n "$off" ] || return 0
	tail -c "+$((off + 1))" "$1/vmlinuz" | xz -dc --single-stream >"$1/vmlinux.part" 2>/dev/null || true
	if [ "$(head -c 4 "$1/vmlinux.part" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
		mv "$1/vmlinux.part" "$1/vmlinux"
	else
		rm -f "$1/vmlinux.part"
	fi
}

check_config() {
	[ -n "$kconfig" ] || return 0
	local o v bad=()
	for o in "${required_config[@]}"; do
		v=$(sed -n "s/^CONFIG_$o=//p" "$kconfig")
		[ "$v" = y ] || bad+=("CONFIG_$o=${v:-unset}")
	done
	[ "${#bad[@]}" -eq 0 ] || die "$kernel lacks built-in ${bad[*]}"
}

# Sets $gpurun to a statically linked binary.
build_gpurun() {
	if [ -n "${GPURUN_VM_GPURUN:-}" ]; then
		gpurun=$GPURUN_VM_GPURUN
	else
		[ "$(uname -m)" = x86_64 ] || die "the VM is x86_64; build a static x86_64 gpurun and set GPURUN_VM_GPURUN"
		local triple=x86_64-unknown-linux-gnu
		say "building a static gpurun"
		# With --target the flags reach only gpurun's own artifacts, which land in
		# target/$triple, apart from the ordinary build.
		(cd "$repo" && RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
			cargo build --release --target "$triple" --bin gpurun) >&2
		gpurun=$repo/target/$triple/release/gpurun
	fi
	[ -x "$gpurun" ] || die "$gpurun is not an executable"
	if ldd "$gpurun" 2>/dev/null | grep -q '=>'; then
		die "$gpurun is dynamically linked; the VM has no C library"
	fi
}

add_busybox() { # DIR: /bin/busybox and one symlink per applet
	mkdir -p "$1/bin"
	cp /bin/busybox "$1/bin/busybox"
	local a
	for a in $(/bin/busybox --list); do
		[ "$a" = busybox ] || ln -sfn busybox "$1/bin/$a"
	done
}

# copy_elf DIR FILE...: each FILE and every library ldd says it loads, the dynamic loader
# included, at the same paths under DIR (links followed: a library's file is named by the
# path the loader looks up).
copy_elf() {
	local dir=$1 f p dest
	shift
	for f in "$@"; do
		for p in "$f" $(ldd "$f" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
			# Into the real directory: on a merged-/usr host /lib/x/libc.so.6 lands in
			# /usr/lib/x, which DIR's /lib link reaches too.
			dest=$dir$(readlink -f "$(dirname "$p")")/$(basename "$p")
			[ -e "$dest" ] && continue
			mkdir -p "$(dirname "$dest")"
			cp -L "$p" "$dest"
		done
	done
}

# systemd 252 as pid 1 (GPURUN_VM_INIT=systemd): this host's systemd, the clients the cases
# use, the two units it starts, and the few files in /etc it reads.
add_systemd() { # ROOT
	local root=$1 l bin p bins=()
	for l in lib lib64; do
		[ ! -L "/$l" ] || ln -sfn "$(readlink "/$l")" "$root/$l"
	done
	# Merged /usr, as systemd expects ("System is tainted: unmerged-usr" otherwise).
	mv "$root"/bin/* "$root/usr/bin/"
	rmdir "$root/bin"
	ln -sfn usr/bin "$root/bin"
	mkdir -p "$root/var"
	ln -sfn ../run "$root/var/run"
	for bin in systemctl systemd-run busctl; do
		p=$(command -v "$bin") || die "$bin is missing: install systemd"
		bins+=("$p")
	done
	[ -x /lib/systemd/systemd ] || die "/lib/systemd/systemd is missing: install systemd"
	copy_elf "$root" /lib/systemd/systemd "${bins[@]}"
	mkdir -p "$root/usr/lib/systemd/system"
	install -m 0644 "$here"/systemd/gpurun-vm.{target,service} "$root/usr/lib/systemd/system/"
	# A fixed machine id: an empty one is a "first boot" (presets, a generated id).
	printf '%s\n' 67707572756e766d746573746d616368 >"$root/etc/machine-id"
	cp -L /etc/os-release "$root/etc/os-release"
	printf 'gpurun-vm\n' >"$root/etc/hostname"
	printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
		>"$root/etc/passwd"
	printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
	printf '/lib/systemd/systemd\n' >"$root/vm/pid1"
}

make_initramfs() {
	ldd /bin/busybox >/dev/null 2>&1 && die "/bin/busybox is dynamically linked: install busybox-static"
	local root=$work/root rootfs=$work/root/bundles/rootfs
	rm -rf "$work"
	mkdir -p "$root"/{usr/bin,vm,dev,proc,sys,run,tmp,etc}
	add_busybox "$root"
	install -m 0755 "$here/init" "$root/init"
	install -m 0755 "$here/guest.sh" "$root/vm/guest.sh"
	install -m 0644 "$here/guest-systemd.sh" "$root/vm/guest-systemd.sh"
	install -m 0755 "$gpurun" "$root/usr/bin/gpurun"

	add_busybox "$rootfs"
	mkdir -p "$rootfs"/{dev,etc,proc,sys,tmp,root,run,nodes,ctl,cases}
	chmod 1777 "$rootfs/tmp"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$rootfs/etc/passwd"
	printf 'root:x:0:\n' >"$rootfs/etc/group"
	install -m 0644 "$here"/cases/*.sh "$rootfs/cases/"
	python3 "$here/bundles.py" "$gpurun" "$root/bundles"
	[ "$init_mode" != systemd ] || add_systemd "$root"

	# Uncompressed: unpacking gzip under emulation costs about a second with systemd.
	(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) \
		>"$work/initramfs.cpio"
}

ensure_packages
fetch_kernel
check_config
build_gpurun
make_initramfs
say "kernel $kernel; initramfs $(du -h "$work/initramfs.cpio" | cut -f1); pid 1 $init_mode; cases ${cases//,/ }"

append="console=ttyS0 quiet loglevel=1 panic=-1 mitigations=off"
# GPURUN_VM_CGROUP=hybrid (systemd boot only): systemd's hybrid layout, v1 controllers with
# cgroup2 at /sys/fs/cgroup/unified, as on older Kubernetes nodes. Otherwise cgroup2 alone.
if [ "$init_mode" = systemd ] && [ "${GPURUN_VM_CGROUP:-v2}" = hybrid ]; then
	hierarchy=0
else
	append="$append cgroup_no_v1=all"
	hierarchy=1
fi
# GPURUN_VM_APPEND: more kernel arguments (e.g. systemd.log_level=debug).
append_extra=${GPURUN_VM_APPEND:-}
if [ "$init_mode" = systemd ]; then
	# Straight to the runner: no sysinit.target, journald or udev; systemd's own messages
	# (notices and up) on the console between the cases' lines.
	append="$append systemd.unified_cgroup_hierarchy=$hierarchy systemd.unit=gpurun-vm.target"
	append="$append systemd.show_status=0 systemd.log_target=console systemd.log_level=notice"
	append="$append gpurun.cases=$cases"
elif [ "$cases" != "$all_cases" ]; then
	append="$append gpurun.cases=$cases"
fi
log=$work/console.log
t_vm=$(now)
set +e
timeout -k 10 "$timeout_s" qemu-system-x86_64 -accel tcg -m 1024 -smp 2 \
	-nographic -no-reboot -nic none \
	-kernel "$kernel" -initrd "$work/initramfs.cpio" -append "$append${append_extra:+ $append_extra}" \
	</dev/null 2>&1 | stdbuf -o0 tr -d '\r' | tee "$log"
rc=${PIPESTATUS[0]}
set -e
vm_s=$(since "$t_vm")

failed=0
[ "$rc" -eq 124 ] && say "the VM did not finish within ${timeout_s}s" && failed=1
[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && say "qemu exited with status $rc" && failed=1
grep -q '^VM-DONE' "$log" || {
	say "no VM-DONE line: the runner in the VM did not finish"
	failed=1
}
for c in ${cases//,/ }; do
	if grep -Eq "^PASS $c( |$)" "$log"; then
		say "pass $c"
	else
		why=$(grep -E "^FAIL $c( |$)" "$log" | head -n 1 | cut -d' ' -f3-)
		say "FAIL $c: ${why:-no result line}"
		failed=1
	fi
done
boot=$(sed -n 's/.*BOOT uptime=\([0-9.]*\)s.*/\1/p' "$log" | head -n 1)
done_up=$(sed -n 's/^VM-DONE .*uptime=\([0-9.]*\)s.*/\1/p' "$log" | head -n 1)
# Wall time outside the runner: QEMU's start, firmware, kernel boot, power-off.
outside=$(awk -v v="$vm_s" -v b="${boot:-0}" -v d="${done_up:-0}" \
	'BEGIN { if (d > 0) printf "%.1f", v - (d - b); else print "?" }')
say "boot: ${boot:-?} s to the runner on the guest's clock, ${outside} s of wall time outside the cases;" \
	"VM run ${vm_s} s; whole script $(since "$t_script") s; log $log"
[ "$failed" -eq 0 ] || die "VM cgroup v2 tests failed"
say "all ${cases//,/ } passed"
