//! Spawning the container: the parent side (`spawn`), the child's init steps (`init`) and
//! the channel between them (`sync`).

pub mod child;
pub mod error;
pub mod init;
pub mod sealed;
pub mod spawn;
pub mod sync;

pub use error::Error;
