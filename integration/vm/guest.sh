#!/bin/sh
# Stage 2 of the test VM, on the tmpfs root. It runs in one of two ways:
#
# - busybox boot: as pid 1 it mounts the filesystems of a pure cgroup v2 host (cgroup2
#   alone at /sys/fs/cgroup), runs the cases in a child (pid 1's `wait` also reaps the
#   containers' orphaned inits) and powers the VM off;
# - systemd boot: systemd is pid 1 and has mounted everything (cgroup2 alone, too);
#   gpurun-vm.service starts `guest.sh systemd`, which runs the cases in a child and powers
#   the VM off.
#
# Each case prints its notes as `LOG <case>: ...` and then exactly one of
#   PASS <case> (<ms> ms)
#   FAIL <case> <why>
# on the serial console; `VM-DONE` ends the run. integration/vm/run.sh parses these lines.
# The kernel command line may name the cases to run: gpurun.cases=hello,cpuset
export PATH=/usr/bin:/bin
G=gpurun
CG=/sys/fs/cgroup
ALL_CASES="hello memory_oom pids_fork_count pids_fork_bomb cpu_quota cpuset devices freeze update"

boot_report() {
	read -r up _ </proc/uptime
	echo
	echo "BOOT uptime=${up}s kernel=$(uname -r) cpus=$(grep -c ^processor /proc/cpuinfo) pid1=$(cat /proc/1/comm)"
	echo "BOOT cgroup mounts: $(grep cgroup /proc/self/mountinfo | awk '{print $5, $(NF-2)}' | tr '\n' ' ')"
	echo "BOOT controllers: $(cat "$CG/cgroup.controllers" 2>/dev/null || ls "$CG" | tr '\n' ' ')"
}

# Runs the cases in a child, then powers off (never returns).
run_and_power_off() {
	/vm/guest.sh run &
	wait $!
	sync
	poweroff -f
	exit 0
}

if [ "$$" = 1 ]; then
	mount -t proc proc /proc
	mount -t sysfs sysfs /sys
	[ -c /dev/null ] || mount -t devtmpfs devtmpfs /dev
	mkdir -p /dev/pts /dev/shm
	mount -t devpts devpts /dev/pts
	mount -t cgroup2 cgroup2 "$CG"
	mount -t tmpfs tmpfs /run
	mount -t tmpfs tmpfs /tmp
	boot_report
	run_and_power_off
fi

if [ "${1:-}" = systemd ]; then
	boot_report
	us=$(systemctl show -p UserspaceTimestampMonotonic --value)
	echo "BOOT $(systemctl --version | head -n 1) started at $((us / 1000)) ms;" \
		"this runner's cgroup: $(cat /proc/self/cgroup)"
	run_and_power_off
fi

# ---- helpers (cases run in subshells: `fail` ends the case) ----

fail() {
	echo "$*"
	exit 1
}

# Centiseconds since boot, from /proc/uptime.
up_cs() {
	read -r u _ </proc/uptime
	f=${u#*.}
	f=${f#0}
	echo $((${u%.*} * 100 + f))
}

# wait_for TRIES CMD...: run CMD every 0.1 s until it succeeds, at most TRIES times.
wait_for() {
	n=$1
	shift
	while ! "$@" >/dev/null 2>&1; do
		n=$((n - 1))
		[ "$n" -gt 0 ] || return 1
		sleep 0.1
	done
}

status_of() {
	$G state "$1" 2>/dev/null | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p'
}

is_status() {
	[ "$(status_of "$1")" = "$2" ]
}

procs_at_least() {
	[ "$(wc -l <"$1/cgroup.procs")" -ge "$2" ]
}

usage_usec() {
	sed -n 's/^usage_usec //p' "$1/cpu.stat"
}

# field FILE KEY: the value of KEY in a flat keyed cgroup file.
field() {
	sed -n "s/^$2 //p" "$1"
}

expect_file() {
	got=$(cat "$1" 2>&1)
	[ "$got" = "$2" ] || fail "$1 is '$got', expected '$2'"
}

start_detached() {
	$G run -d -b "/bundles/$1" "$1" >"/tmp/$1.out" 2>&1 </dev/null ||
		fail "gpurun run -d $1 failed: $(cat "/tmp/$1.out")"
}

# Kill init, wait until the container is stopped, delete it, check the cgroup is gone.
stop_and_delete() {
	$G kill "$1" KILL || fail "gpurun kill $1 KILL failed"
	wait_for 100 is_status "$1" stopped || fail "$1 is '$(status_of "$1")' 10 s after SIGKILL"
	out=$($G delete "$1" 2>&1) || fail "gpurun delete $1 failed: $out"
	[ ! -e "$2" ] || fail "gpurun delete $1 left $2"
}

# ---- cases ----

case_hello() {
	t0=$(up_cs)
	out=$($G run -b /bundles/hello hello 2>&1 </dev/null) || fail "gpurun run exited $?: $out"
	t1=$(up_cs)
	echo "gpurun run (create, start, wait, delete) took $(((t1 - t0) * 10)) ms"
	echo "$out" | sed 's/^/output: /'
	echo "$out" | grep -qx "hello from gpurun" || fail "unexpected output: $out"
	echo "$out" | grep -qx "0::/" || fail "/proc/self/cgroup in the cgroup namespace is not 0::/: $out"
	[ ! -e "$CG/hello" ] || fail "run left $CG/hello behind"
}

case_memory_oom() {
	d=$CG/memory_oom
	echo "started at $(cut -d' ' -f1 /proc/uptime) s"
	start_detached memory_oom
	expect_file "$d/memory.max" 33554432
	wait_for 600 grep -q '^hog-status' /tmp/memory_oom.out ||
		fail "the memory hog did not end in 60 s: $(cat /tmp/memory_oom.out)"
	st=$(sed -n 's/^hog-status //p' /tmp/memory_oom.out)
	[ "$st" = 137 ] || fail "awk exited with $st, not 137 (SIGKILL by the OOM killer)"
	kills=$(field "$d/memory.events" oom_kill)
	dmesg | sed -n 's/^\[ *\([0-9.]*\)\] \(Memory cgroup out of memory: Killed process [0-9]* ([a-z]*)\).*/kernel at \1 s: \2/p'
	echo "memory.events: $(tr '\n' ' ' <"$d/memory.events")"
	echo "memory.peak: $(cat "$d/memory.peak" 2>/dev/null || echo none)"
	[ "${kills:-0}" -ge 1 ] || fail "memory.events oom_kill is '${kills}'"
	ev=$($G events --stats memory_oom 2>&1) || fail "gpurun events --stats failed: $ev"
	echo "$ev" | grep -q '"oom_kill":[1-9]' || fail "events --stats shows no oom_kill: $ev"
	stop_and_delete memory_oom "$d"
}

case_pids_fork_count() {
	d=$CG/pids_fork_count
	start_detached pids_fork_count
	wait_for 600 grep -q '^loop-ended' /tmp/pids_fork_count.out ||
		fail "the fork loop did not stop in 60 s: $(tail -n 3 /tmp/pids_fork_count.out)"
	forks=$(grep -c '^forked' /tmp/pids_fork_count.out)
	cur=$(cat "$d/pids.current")
	refused=$(field "$d/pids.events" max)
	echo "successful forks: $forks; pids.current: $cur; pids.events max: $refused"
	expect_file "$d/pids.max" 16
	[ "$forks" -ge 1 ] && [ "$forks" -le 15 ] || fail "$forks forks succeeded under pids.max 16"
	[ "$cur" -le 16 ] || fail "pids.current is $cur"
	grep -q "can't fork" /tmp/pids_fork_count.out || fail "no fork was refused"
	[ "${refused:-0}" -ge 1 ] || fail "pids.events max is '$refused'"
	out=$($G delete --force pids_fork_count 2>&1) || fail "delete --force failed: $out"
	[ ! -e "$d" ] || fail "delete --force left $d"
}

case_pids_fork_bomb() {
	d=$CG/pids_fork_bomb
	start_detached pids_fork_bomb
	wait_for 300 grep -q '^bomb-started' /tmp/pids_fork_bomb.out || fail "the bomb did not start"
	sleep 1
	most=0
	i=0
	while [ "$i" -lt 20 ]; do
		cur=$(cat "$d/pids.current")
		[ "$cur" -le 16 ] || fail "pids.current is $cur under pids.max 16"
		[ "$cur" -gt "$most" ] && most=$cur
		i=$((i + 1))
		sleep 0.05
	done
	refused=$(field "$d/pids.events" max)
	echo "highest pids.current seen: $most; pids.events max: $refused"
	[ "${refused:-0}" -ge 1 ] || fail "pids.events max is '$refused': the bomb never hit the limit"
	is_status pids_fork_bomb running || fail "state is '$(status_of pids_fork_bomb)', not running"
	t0=$(up_cs)
	out=$($G delete --force pids_fork_bomb 2>&1) || fail "delete --force failed: $out"
	t1=$(up_cs)
	echo "delete --force took $(((t1 - t0) * 10)) ms"
	[ ! -e "$d" ] || fail "delete --force left $d"
	left=$(for f in /proc/[0-9]*/cmdline; do tr '\0' ' ' <"$f" && echo; done 2>/dev/null |
		grep -c '^sh /cases/fork_bomb.sh')
	[ "$left" = 0 ] || fail "$left bomb processes are still alive"
}

case_cpu_quota() {
	d=$CG/gpurun-vm/cpu_quota
	start_detached cpu_quota
	expect_file "$d/cpu.max" "20000 100000"
	sleep 0.5
	u0=$(usage_usec "$d")
	t0=$(up_cs)
	sleep 2
	u1=$(usage_usec "$d")
	t1=$(up_cs)
	permille=$(((u1 - u0) / ((t1 - t0) * 10)))
	echo "usage $((u1 - u0)) us over $(((t1 - t0) * 10)) ms: ${permille} per mille;" \
		"nr_throttled $(field "$d/cpu.stat" nr_throttled)"
	[ "$permille" -ge 150 ] && [ "$permille" -le 250 ] ||
		fail "the busy loop used ${permille} per mille of the time under a 20 % quota"
	stop_and_delete cpu_quota "$d"
	[ ! -e "$CG/gpurun-vm" ] || fail "delete left the parent $CG/gpurun-vm it created"
}

case_cpuset() {
	mine=$(sed -n 's/^Cpus_allowed_list:[[:space:]]*//p' /proc/self/status)
	[ "$mine" = 0-1 ] || fail "the VM's own Cpus_allowed_list is '$mine', not 0-1"
	out=$($G run -b /bundles/cpuset cpuset 2>&1 </dev/null) || fail "gpurun run exited $?: $out"
	echo "container: $out"
	echo "$out" | grep -q '^Cpus_allowed_list:[[:space:]]*0$' || fail "unexpected: $out"
}

# expect_open FILE KEY TEXT: the probe line KEY in FILE carries the error TEXT.
expect_open() {
	line=$(grep "^$2:" "$1")
	case $line in
	*"$3"*) ;;
	*) fail "$(basename "$1"): '$line' does not say '$3'" ;;
	esac
}

check_probe() {
	enxio="No such device or address"
	eperm="Operation not permitted"
	expect_open "$1" "read allowed" "$enxio"
	expect_open "$1" "read denied" "$eperm"
	expect_open "$1" "read wild" "$enxio"
	expect_open "$1" "write wild" "$eperm"
	expect_open "$1" "read spec" "$enxio"
}

case_devices() {
	d=$CG/devices
	v=/vmtest/devices
	for major in 120 121 122; do
		! grep -q "^ *$major " /proc/devices || fail "char major $major is taken: $(grep "^ *$major " /proc/devices)"
	done
	rm -rf "$v"
	mkdir -p "$v/nodes" "$v/ctl"
	mknod -m 0666 "$v/nodes/allowed" c 120 0
	mknod -m 0666 "$v/nodes/denied" c 120 1
	mknod -m 0666 "$v/nodes/wild" c 121 5
	start_detached devices
	wait_for 300 test -e "$v/ctl/before" || fail "no probe result: $(cat /tmp/devices.out)"
	sed 's/^/before: /' "$v/ctl/before"
	check_probe "$v/ctl/before"
	out=$(echo '{"memory":{"limit":100663296}}' | $G update --resources - devices 2>&1) ||
		fail "gpurun update failed: $out"
	expect_file "$d/memory.max" 100663296
	touch "$v/ctl/go"
	wait_for 300 test -e "$v/ctl/after" || fail "no second probe result"
	sed 's/^/after update: /' "$v/ctl/after"
	check_probe "$v/ctl/after"
	out=$($G delete --force devices 2>&1) || fail "delete --force failed: $out"
	[ ! -e "$d" ] || fail "delete --force left $d"
}

case_freeze() {
	d=$CG/freeze
	start_detached freeze
	wait_for 300 procs_at_least "$d" 2 || fail "the two busy loops did not start"
	$G pause freeze || fail "gpurun pause failed"
	is_status freeze paused || fail "state is '$(status_of freeze)' after pause"
	expect_file "$d/cgroup.freeze" 1
	grep -qx 'frozen 1' "$d/cgroup.events" || fail "cgroup.events: $(tr '\n' ' ' <"$d/cgroup.events")"
	for pid in $(cat "$d/cgroup.procs"); do
		s=$(cut -d' ' -f3 "/proc/$pid/stat")
		[ "$s" = S ] || [ "$s" = D ] || fail "process $pid is in state $s while frozen"
	done
	u0=$(usage_usec "$d")
	sleep 1
	u1=$(usage_usec "$d")
	echo "cpu usage while frozen for 1 s: $((u1 - u0)) us"
	[ $((u1 - u0)) -le 10000 ] || fail "the frozen container used $((u1 - u0)) us of CPU in 1 s"
	$G resume freeze || fail "gpurun resume failed"
	is_status freeze running || fail "state is '$(status_of freeze)' after resume"
	expect_file "$d/cgroup.freeze" 0
	grep -qx 'frozen 0' "$d/cgroup.events" || fail "cgroup.events: $(tr '\n' ' ' <"$d/cgroup.events")"
	u0=$(usage_usec "$d")
	sleep 1
	u1=$(usage_usec "$d")
	echo "cpu usage after resume for 1 s: $((u1 - u0)) us"
	[ $((u1 - u0)) -ge 200000 ] || fail "the thawed busy loops used only $((u1 - u0)) us in 1 s"
	stop_and_delete freeze "$d"
}

case_update() {
	d=$CG/update
	start_detached update
	expect_file "$d/memory.max" 33554432
	expect_file "$d/pids.max" 32
	expect_file "$d/cpu.max" "50000 100000"
	r='{"memory":{"limit":67108864},"pids":{"limit":64},"cpu":{"quota":30000,"period":100000}}'
	out=$(echo "$r" | $G update --resources - update 2>&1) || fail "update --resources - failed: $out"
	expect_file "$d/memory.max" 67108864
	expect_file "$d/pids.max" 64
	expect_file "$d/cpu.max" "30000 100000"
	out=$($G update --memory 96m --pids-limit 100 --cpu-quota -1 update 2>&1) ||
		fail "update with flags failed: $out"
	expect_file "$d/memory.max" 100663296
	expect_file "$d/pids.max" 100
	expect_file "$d/cpu.max" "max 100000"
	is_status update running || fail "state is '$(status_of update)' after update"
	out=$($G delete --force update 2>&1) || fail "delete --force failed: $out"
	[ ! -e "$d" ] || fail "delete --force left $d"
}

# The systemd boot's cases (systemd_*).
. /vm/guest-systemd.sh

# ---- runner ----

cases=$(sed -n 's/.*gpurun\.cases=\([^ ]*\).*/\1/p' /proc/cmdline | tr ',' ' ')
[ -n "$cases" ] || cases=$ALL_CASES
failed=0
for c in $cases; do
	t0=$(up_cs)
	(case_"$c") >"/tmp/case-$c.log" 2>&1
	rc=$?
	t1=$(up_cs)
	sed "s/^/LOG $c: /" "/tmp/case-$c.log"
	if [ "$rc" = 0 ]; then
		echo "PASS $c ($(((t1 - t0) * 10)) ms)"
	else
		echo "FAIL $c $(tail -n 1 "/tmp/case-$c.log")"
		failed=$((failed + 1))
		$G delete --force "$c" >/dev/null 2>&1
	fi
done
if [ "$failed" -gt 0 ]; then
	dmesg | tail -n 40 | sed 's/^/DMESG /'
fi
read -r up _ </proc/uptime
echo "VM-DONE failed=$failed uptime=${up}s"
