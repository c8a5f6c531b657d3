//! The error of building a plan from a spec: a value that is valid OCI but cannot be
//! resolved on this host, or an error of the layer that resolves it.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("invalid configuration: linux.seccomp: {0}")]
    SeccompProfile(#[source] crate::linux::seccomp::SeccompError),
    #[error(transparent)]
    Spec(#[from] crate::spec::Error),
    #[error(transparent)]
    Linux(#[from] crate::linux::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
