# Inside the container: open each test node and print what open said, once before and
# once after the runner has changed the container's memory limit (it creates /ctl/go).
probe() {
	for n in allowed denied wild; do
		echo "read $n: $(cat "/nodes/$n" 2>&1)"
	done
	echo "write wild: $( (echo x >/nodes/wild) 2>&1)"
	echo "read spec: $(cat /dev/vmtest-spec 2>&1)"
}
. /cases/probe_twice.sh
