//! OCI seccomp profiles compiled to classic BPF in the parent and loaded in the child.

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profiles are not supported yet")]
    Unsupported,
}

#[derive(Debug, Clone)]
pub struct CompiledSeccomp;

pub fn compile(_p: &oci_spec::runtime::LinuxSeccomp) -> Result<CompiledSeccomp, SeccompError> {
    Err(SeccompError::Unsupported)
}

pub fn install(_c: &CompiledSeccomp) -> Result<(), SeccompError> {
    Err(SeccompError::Unsupported)
}
