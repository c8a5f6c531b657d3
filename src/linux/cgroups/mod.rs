//! The container's cgroup: v2, or v1 hierarchies plus a unified leaf on hybrid hosts.
