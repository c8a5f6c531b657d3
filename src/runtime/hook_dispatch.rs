//! The runtime's side of hooks: the state a hook reads, built from the stored state, and
//! the phases the runtime itself runs, with their warnings logged.

use std::path::Path;

use oci_spec::runtime::Hooks;

use crate::error::{Error, Result};
use crate::hooks::{HookState, Phase};
use crate::state::State;

/// Run `phase`'s hooks under its failure policy: a failure that only warns is logged (to
/// `--log`, else stderr) and the lifecycle goes on; one that aborts is the error.
pub(super) fn run(
    phase: Phase,
    hooks: Option<&Hooks>,
    state: &HookState,
    cwd: &Path,
) -> Result<()> {
    crate::hooks::dispatch(phase, hooks, state, cwd, &mut |w| {
        crate::log::warn_caller(&w.to_string())
    })
    .map_err(Error::from)
}

pub(super) fn state_of<'a>(st: &'a State, status: &'a str, pid: i32) -> HookState<'a> {
    HookState {
        oci_version: &st.oci_version,
        id: &st.id,
        status,
        pid,
        bundle: &st.bundle,
        annotations: &st.annotations,
    }
}
