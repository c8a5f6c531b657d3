# Sourced by the device cases after they define probe(): writes its output to /ctl/before,
# waits (at most 60 s) for the runner to create /ctl/go after it changed something, writes
# /ctl/after, then keeps the container running.
probe >/ctl/before.tmp
mv /ctl/before.tmp /ctl/before
i=0
while [ ! -e /ctl/go ] && [ "$i" -lt 600 ]; do
	sleep 0.1
	i=$((i + 1))
done
probe >/ctl/after.tmp
mv /ctl/after.tmp /ctl/after
exec sleep 600
