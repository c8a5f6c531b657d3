# The cases of the systemd boot (GPURUN_VM_INIT=systemd): systemd 252 is pid 1 on the pure
# cgroup v2 guest and the runner is gpurun-vm.service, in /system.slice. Sourced by
# guest.sh, whose helpers (fail, wait_for, status_of, expect_file, ...) these use.
#
# systemd_smoke checks the host without gpurun: what gpurun's systemd cgroup driver needs
# from pid 1 (StartTransientUnit on /run/systemd/private, delegated scopes that go away).
# systemd_scope, systemd_devices and systemd_oom_update run gpurun --systemd-cgroup.

SD_PRIVATE=/run/systemd/private

# unit_gone UNIT: systemd no longer knows UNIT (a transient unit is collected once stopped).
unit_gone() {
	[ "$(systemctl show -p LoadState --value "$1")" = not-found ]
}

# prop UNIT PROPERTY: one property's value, as `systemctl show` prints it.
prop() {
	systemctl show -p "$2" --value "$1"
}

expect_prop() {
	got=$(prop "$1" "$2")
	[ "$got" = "$3" ] || fail "$1 has $2=$got, expected $3"
}

pid_of() {
	$G state "$1" 2>/dev/null | sed -n 's/.*"pid": *\([0-9]*\).*/\1/p'
}

# One line: the runner's FAIL line is a case's last line.
one_line() {
	tr '\n' ' ' <"$1"
}

start_detached_systemd() {
	$G --systemd-cgroup run -d -b "/bundles/$1" "$1" >"/tmp/$1.out" 2>&1 </dev/null ||
		fail "gpurun --systemd-cgroup run -d $1 failed: $(one_line "/tmp/$1.out")"
}

daemon_reload() {
	out=$(systemctl daemon-reload 2>&1) || fail "systemctl daemon-reload failed: $out"
	[ -S "$SD_PRIVATE" ] || fail "$SD_PRIVATE is gone after daemon-reload"
}

# Kill the container, delete it; its scope's directory and unit must go.
stop_and_delete_scope() {
	$G kill "$1" KILL || fail "gpurun kill $1 KILL failed"
	wait_for 100 is_status "$1" stopped || fail "$1 is '$(status_of "$1")' 10 s after SIGKILL"
	out=$($G delete "$1" 2>&1) || fail "gpurun delete $1 failed: $out"
	wait_for 50 test ! -e "$CG/system.slice/$2" || fail "delete left $CG/system.slice/$2"
	wait_for 50 unit_gone "$2" || fail "$2 is still loaded after delete: $(prop "$2" LoadState)/$(prop "$2" ActiveState)"
}

case_systemd_smoke() {
	[ "$(cat /proc/1/comm)" = systemd ] || fail "pid 1 is '$(cat /proc/1/comm)', not systemd"
	[ -S "$SD_PRIVATE" ] || fail "$SD_PRIVATE is not a socket"
	mounts=$(grep cgroup /proc/self/mountinfo | awk '{print $5, $(NF-2)}' | tr '\n' ' ')
	[ "$mounts" = "/sys/fs/cgroup cgroup2 " ] || fail "cgroup mounts are '$mounts', not cgroup2 alone"
	expect_file /proc/self/cgroup 0::/system.slice/gpurun-vm.service
	echo "systemd $(systemctl show -p Version --value)"

	# systemd-run --scope (as root, without --wait) calls StartTransientUnit with its own
	# pid and Delegate on the private socket, as gpurun's driver does with the container's
	# init: there is no bus daemon here to go through. (busctl cannot be used for this: it
	# always says Hello, which only a bus daemon answers.)
	[ ! -e /run/dbus/system_bus_socket ] || fail "a D-Bus system bus is running"
	u=smoke-test.scope
	d=$CG/system.slice/$u
	out=$(systemd-run --scope --unit=smoke-test -p Delegate=yes /bin/sh -c \
		"cat /proc/self/cgroup; test -d $d && echo dir-exists; echo controllers: \$(cat $d/cgroup.controllers);
		 systemctl show -p Delegate -p ActiveState $u" 2>&1) ||
		fail "systemd-run --scope failed: $(echo "$out" | tr '\n' ' ')"
	echo "$out" | sed 's/^/systemd-run: /'
	for want in "0::/system.slice/$u" dir-exists Delegate=yes ActiveState=active; do
		echo "$out" | grep -qx "$want" || fail "systemd-run --scope: no line '$want'"
	done
	echo "$out" | grep -q '^controllers:.* memory' || fail "the delegated scope has no memory controller"
	echo "$out" | grep -q '^controllers:.* pids' || fail "the delegated scope has no pids controller"
	wait_for 50 test ! -e "$d" || fail "$d is still there 5 s after its process ended"
	wait_for 50 unit_gone "$u" || fail "$u is still loaded after its process ended"

	# A scope in a slice that has no unit file: systemd makes the slices on the way
	# (cgroupsPath "smoke-nested.slice:x:y" lands in /smoke.slice/smoke-nested.slice).
	u=smoke-nested.scope
	d=$CG/smoke.slice/smoke-nested.slice/$u
	out=$(systemd-run --scope --unit=smoke-nested --slice=smoke-nested.slice -p Delegate=yes \
		/bin/sh -c "cat /proc/self/cgroup; test -d $d && echo dir-exists" 2>&1) ||
		fail "systemd-run --scope --slice failed: $(echo "$out" | tr '\n' ' ')"
	echo "$out" | sed 's/^/systemd-run --slice: /'
	for want in "0::/smoke.slice/smoke-nested.slice/$u" dir-exists; do
		echo "$out" | grep -qx "$want" || fail "systemd-run --scope --slice: no line '$want'"
	done
	wait_for 50 test ! -e "$d" || fail "$d is still there 5 s after its process ended"
	wait_for 50 unit_gone "$u" || fail "$u is still loaded after its process ended"

	daemon_reload
	expect_prop gpurun-vm.service ActiveState active
	echo "daemon-reload: done; pid 1 is $(cat /proc/1/comm)"
}

# gpurun --systemd-cgroup with cgroupsPath system.slice:gpurun:vmtest: the container's
# cgroup is the delegated scope gpurun-vmtest.scope, limits are written there, survive a
# daemon-reload (systemd re-applies what it was told), and delete removes the unit.
case_systemd_scope() {
	c=systemd_scope
	u=gpurun-vmtest.scope
	d=$CG/system.slice/$u
	start_detached_systemd "$c"
	is_status "$c" running || fail "state is '$(status_of "$c")', not running"
	pid=$(pid_of "$c")
	expect_file "/proc/$pid/cgroup" "0::/system.slice/$u"
	wait_for 50 grep -qx 0::/ "/tmp/$c.out" ||
		fail "the container's /proc/self/cgroup (cgroup namespace) is not 0::/: $(one_line "/tmp/$c.out")"
	echo "$u: $(systemctl show -p Delegate -p ActiveState -p Slice -p MemoryMax -p TasksMax "$u" | tr '\n' ' ')"
	expect_prop "$u" Delegate yes
	expect_prop "$u" ActiveState active
	expect_file "$d/memory.max" 33554432
	expect_file "$d/pids.max" 64
	daemon_reload
	echo "after daemon-reload: memory.max $(cat "$d/memory.max"), pids.max $(cat "$d/pids.max")"
	expect_file "$d/memory.max" 33554432
	expect_file "$d/pids.max" 64
	expect_prop "$u" ActiveState active
	is_status "$c" running || fail "state is '$(status_of "$c")' after daemon-reload"
	stop_and_delete_scope "$c" "$u"
}

# expect_no_driver FILE KEY: the probe line KEY failed with ENXIO or ENODEV (no driver: both
# filters let it through).
expect_no_driver() {
	line=$(grep "^$2:" "$1")
	case $line in
	*"No such device"*) ;;
	*) fail "$(basename "$1"): '$line' is not ENXIO/ENODEV" ;;
	esac
}

check_sd_probe() {
	expect_no_driver "$1" "read allowed"
	expect_no_driver "$1" "write allowed"
	expect_open "$1" "read denied" "Operation not permitted"
	expect_open "$1" "write denied" "Operation not permitted"
	expect_open "$1" "write null" "ok"
}

# Deny all, allow c 1:3 rw and c 240:0 rw: 240:0 passes systemd's device filter and
# gpurun's (ENXIO: no driver), 241:0 neither (EPERM); the same after a daemon-reload, which
# makes systemd re-apply its own filter (a GPU lost after daemon-reload is this bug).
case_systemd_devices() {
	c=systemd_devices
	u=gpurun-vmdevices.scope
	v=/vmtest/$c
	for major in 240 241; do
		! grep -q "^ *$major " /proc/devices || fail "char major $major is taken: $(grep "^ *$major " /proc/devices)"
	done
	rm -rf "$v"
	mkdir -p "$v/nodes" "$v/ctl"
	mknod -m 0666 "$v/nodes/allowed" c 240 0
	mknod -m 0666 "$v/nodes/denied" c 241 0
	start_detached_systemd "$c"
	pid=$(pid_of "$c")
	expect_file "/proc/$pid/cgroup" "0::/system.slice/$u"
	echo "$u: $(systemctl show -p Delegate -p DevicePolicy -p DeviceAllow "$u" | tr '\n' ' ')"
	wait_for 300 test -e "$v/ctl/before" || fail "no probe result: $(one_line "/tmp/$c.out")"
	sed 's/^/before: /' "$v/ctl/before"
	check_sd_probe "$v/ctl/before"
	daemon_reload
	touch "$v/ctl/go"
	wait_for 300 test -e "$v/ctl/after" || fail "no second probe result"
	sed 's/^/after daemon-reload: /' "$v/ctl/after"
	check_sd_probe "$v/ctl/after"
	is_status "$c" running || fail "state is '$(status_of "$c")' after daemon-reload"
	stop_and_delete_scope "$c" "$u"
}

# An OOM kill inside a systemd-driven container: the kernel kills the hog, the container
# and its scope stay up (systemd 252 has no OOMPolicy for scopes; gpurun asks for
# OOMPolicy=continue where systemd has it). Then `gpurun update` changes memory.max
# through the unit's MemoryMax too, so a daemon-reload keeps the new limit; delete removes
# the unit.
case_systemd_oom_update() {
	c=systemd_oom_update
	u=gpurun-vmoom.scope
	d=$CG/system.slice/$u
	start_detached_systemd "$c"
	expect_file "$d/memory.max" 33554432
	wait_for 600 grep -q '^hog-status' "/tmp/$c.out" ||
		fail "the memory hog did not end in 60 s: $(one_line "/tmp/$c.out")"
	st=$(sed -n 's/^hog-status //p' "/tmp/$c.out")
	[ "$st" = 137 ] || fail "awk exited with $st, not 137 (SIGKILL by the OOM killer)"
	kills=$(field "$d/memory.events" oom_kill)
	[ "${kills:-0}" -ge 1 ] || fail "memory.events oom_kill is '${kills}'"
	is_status "$c" running || fail "state is '$(status_of "$c")' after the OOM kill of a child"
	expect_prop "$u" ActiveState active
	echo "after the OOM kill: oom_kill=$kills, $u $(prop "$u" ActiveState)"
	out=$($G update --memory 64m "$c" 2>&1) || fail "gpurun update failed: $out"
	expect_file "$d/memory.max" 67108864
	expect_prop "$u" MemoryMax 67108864
	daemon_reload
	expect_file "$d/memory.max" 67108864
	echo "after update and daemon-reload: memory.max $(cat "$d/memory.max"), MemoryMax $(prop "$u" MemoryMax)"
	stop_and_delete_scope "$c" "$u"
}

# The hybrid layout (GPURUN_VM_CGROUP=hybrid): systemd manages name=systemd, the unified
# hierarchy and the v1 controllers it accounts for; gpurun makes the scope's path in the
# other v1 hierarchies (freezer, cpuset, ...). Limits are in the v1 files, survive a
# daemon-reload, the v1 device list is systemd's and gpurun's strict one (not "a *:* rwm"),
# pause/resume use the v1 freezer directory gpurun made, and delete removes all of it.
case_systemd_hybrid() {
	c=systemd_hybrid
	u=gpurun-vmhybrid.scope
	rel=/system.slice/$u
	[ -d "$CG/unified" ] && [ -d "$CG/memory" ] || fail "not a hybrid host: $(ls "$CG" | tr '\n' ' ')"
	start_detached_systemd "$c"
	pid=$(pid_of "$c")
	echo "init's cgroups: $(tr '\n' ' ' <"/proc/$pid/cgroup")"
	for h in name=systemd memory pids devices freezer; do
		grep -q ":$h:$rel\$" "/proc/$pid/cgroup" || grep -q ",$h:$rel\$" "/proc/$pid/cgroup" ||
			grep -q ":$h,[^:]*:$rel\$" "/proc/$pid/cgroup" || fail "init is not in $h:$rel"
	done
	grep -q "^0::$rel\$" "/proc/$pid/cgroup" || fail "init is not in the unified $rel"
	expect_prop "$u" Delegate yes
	expect_file "$CG/memory$rel/memory.limit_in_bytes" 33554432
	expect_file "$CG/pids$rel/pids.max" 64
	list=$(cat "$CG/devices$rel/devices.list")
	echo "devices.list: $(echo "$list" | tr '\n' ' ')"
	echo "$list" | grep -qx 'c 1:3 rwm' || fail "devices.list has no c 1:3 rwm"
	! echo "$list" | grep -qx 'a \*:\* rwm' || fail "devices.list allows everything"
	daemon_reload
	expect_file "$CG/memory$rel/memory.limit_in_bytes" 33554432
	list=$(cat "$CG/devices$rel/devices.list")
	! echo "$list" | grep -qx 'a \*:\* rwm' || fail "devices.list allows everything after daemon-reload"
	echo "after daemon-reload: memory $(cat "$CG/memory$rel/memory.limit_in_bytes"), $(echo "$list" | wc -l) device rules"
	$G pause "$c" || fail "gpurun pause failed"
	expect_file "$CG/freezer$rel/freezer.state" FROZEN
	$G resume "$c" || fail "gpurun resume failed"
	expect_file "$CG/freezer$rel/freezer.state" THAWED
	$G kill "$c" KILL || fail "gpurun kill $c KILL failed"
	wait_for 100 is_status "$c" stopped || fail "$c is '$(status_of "$c")' 10 s after SIGKILL"
	out=$($G delete "$c" 2>&1) || fail "gpurun delete $c failed: $out"
	for h in systemd memory pids devices freezer unified; do
		wait_for 50 test ! -e "$CG/$h$rel" || fail "delete left $CG/$h$rel"
	done
	wait_for 50 unit_gone "$u" || fail "$u is still loaded after delete"
}
