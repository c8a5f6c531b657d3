//! OCI seccomp profiles compiled to classic BPF in the parent and loaded in the child.
