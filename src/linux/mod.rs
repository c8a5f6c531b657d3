//! One kernel mechanism a module. Only `sys` holds `unsafe`.

pub mod caps;
pub mod cgroups;
pub mod child;
pub mod console;
pub mod dbus;
pub mod devices;
pub mod error;
pub mod inroot;
pub mod namespaces;
pub mod procstat;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod sys;

pub use error::Error;
