//! gpurun: a small, fast OCI container runtime for GPU jobs.
//!
//! `cli` parses and prints; `runtime` owns the container lifecycle (create, start, kill,
//! delete, exec, `run` in the foreground, hooks, rollback). A create's data flow is
//! `spec` (load, validate) → `gpu` (spec edits) → `plan` (resolved facts) → `process`
//! (clone, init steps, execve), with `state` (the container's directory), `cgroup` and
//! `hooks` beside it. See docs in `runtime-spec/`.

#![deny(unsafe_code)]

pub mod atomic_file;
pub mod cli;
pub mod error;
pub mod features;
pub mod gpu;
/// The node configuration, kept by the GPU layer it configures.
pub use gpu::config;
pub mod hooks;
pub mod id;
pub mod linux;
pub mod log;
pub mod notify;
pub mod plan;
pub mod process;
pub mod runtime;
#[doc(hidden)]
pub mod skip;
pub mod spec;
pub mod state;
