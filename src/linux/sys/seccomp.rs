//! Raw seccomp(2) wrappers.
