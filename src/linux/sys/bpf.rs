//! Raw bpf(2) wrappers for the cgroup device filter.
