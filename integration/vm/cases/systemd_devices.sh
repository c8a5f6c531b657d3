# Inside the container (systemd_devices): open each test node and print what open said,
# once before and once after the runner's `systemctl daemon-reload` (it creates /ctl/go).
probe() {
	for n in allowed denied; do
		echo "read $n: $(cat "/nodes/$n" 2>&1)"
		echo "write $n: $( (echo x >"/nodes/$n") 2>&1)"
	done
	echo "write null: $( (echo x >/dev/null) 2>&1 && echo ok)"
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
