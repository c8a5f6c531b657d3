# Inside the container (pids.max 16): every process forks copies of itself forever; a
# copy whose fork fails exits, so the bomb keeps spinning at the limit. Init itself forks
# once and then becomes a sleeper, so the container stays up for `delete --force`.
exec 2>/dev/null
bomb() {
	while :; do
		bomb &
	done
}
bomb &
echo "bomb-started"
exec sleep 600
