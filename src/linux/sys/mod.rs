//! The only place with `unsafe`: raw system calls that nix lacks, each wrapped once with a
//! named error. Submodules group them by the mechanism that uses them.
#![allow(unsafe_code)]

pub mod bpf;
pub mod mountapi;
pub mod proc;
pub mod seccomp;
pub mod tty;
