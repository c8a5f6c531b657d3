# Inside the container (systemd_devices): open each test node and print what open said,
# once before and once after the runner's `systemctl daemon-reload` (it creates /ctl/go).
probe() {
	for n in allowed denied; do
		echo "read $n: $(cat "/nodes/$n" 2>&1)"
		echo "write $n: $( (echo x >"/nodes/$n") 2>&1)"
	done
	echo "write null: $( (echo x >/dev/null) 2>&1 && echo ok)"
}
. /cases/probe_twice.sh
