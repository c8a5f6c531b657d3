# Inside the container (pids.max 16): fork sleepers until the kernel refuses. Each
# success prints one line; ash leaves the subshell at the first failed fork. The sleepers
# then hold their pids while the runner reads the cgroup.
(
	i=0
	while [ "$i" -lt 100 ]; do
		sleep 600 &
		i=$((i + 1))
		echo "forked $i"
	done
) 2>&1
echo "loop-ended"
exec sleep 600
