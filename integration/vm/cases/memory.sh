# Inside the container (memory.max 32 MiB): busybox awk builds a 64 MiB string, touching
# 64 MiB of anonymous memory, so the cgroup's OOM killer must kill it. (Piping /dev/zero
# into `tail`, which keeps its whole input, works too but takes seconds under emulation.)
# The shell reports awk's status and then stays, so that the runner can read the cgroup
# before deleting the container.
awk 'BEGIN { s = sprintf("%67108864s", ""); print "built", length(s) }'
echo "hog-status $?"
exec sleep 600
