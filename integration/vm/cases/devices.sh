# Inside the container: open each test node and print what open said, once before and
# once after the runner has changed the container's memory limit (it creates /ctl/go).
probe() {
	for n in allowed denied wild; do
		echo "read $n: $(cat "/nodes/$n" 2>&1)"
	done
	echo "write wild: $( (echo x >/nodes/wild) 2>&1)"
	echo "read spec: $(cat /dev/vmtest-spec 2>&1)"
}
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
