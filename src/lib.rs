//! gpurun: a small, fast OCI container runtime for GPU jobs.
//!
//! The data flow is `cli` → `spec` (load, validate) → `gpu` (spec edits) → `plan`
//! (resolved facts) → `process` (clone, init steps, execve). See docs in `runtime-spec/`.

#![deny(unsafe_code)]

pub mod atomic_file;
pub mod cgroup;
pub mod cli;
pub mod config;
pub mod error;
pub mod features;
pub mod gpu;
pub mod hooks;
pub mod lifecycle;
pub mod linux;
pub mod log;
pub mod notify;
pub mod plan;
pub mod process;
#[doc(hidden)]
pub mod skip;
pub mod spec;
pub mod state;
