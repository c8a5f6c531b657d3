//! What each verb tells the GPU journal ([`crate::gpu::journal`]) about a container that
//! holds GPUs: its grant at create, the signals `kill` sent, the status `run` reaped, and
//! its release at delete. A container without GPUs is not recorded. Nothing here fails a
//! verb: the journal's own errors are warnings.

use std::path::Path;

use nix::sys::signal::Signal;

use super::Globals;
use crate::gpu::config::JournalConfig;
use crate::gpu::journal::{self, caller, Event, Pod, Record};
use crate::gpu::GpuGrant;
use crate::state::{State, Status};

/// `create` succeeded: the GPUs are the container's until `delete`.
pub(super) fn granted(g: &Globals, st: &State, grant: Option<&GpuGrant>) {
    let Some(grant) = grant else { return };
    let event = Event::Grant(journal::Grant {
        bundle: st.bundle.clone(),
        sharing: grant.sharing,
        source: grant.source.name().to_string(),
        config_sha256: journal::file_digest(&st.bundle.join("config.json")),
        image: journal::image_annotations(&st.annotations),
        pod: Pod::from_annotations(&st.annotations),
        pid: st.pid,
        caller: caller::current(),
    });
    journal::record(
        Some(&grant.journal),
        &Record::now(&st.id, &g.root.path, &grant.gpus, event),
    );
}

/// `kill` delivered `sig`.
pub(super) fn killed(g: &Globals, st: &State, sig: Signal, all: bool) {
    if st.gpus.is_empty() {
        return;
    }
    let event = Event::Kill(journal::Kill {
        signal: sig.as_str().to_string(),
        all,
        pod: Pod::from_annotations(&st.annotations),
        caller: caller::current(),
    });
    journal::record(
        st.gpu_journal.as_ref(),
        &Record::now(&st.id, &g.root.path, &st.gpus, event),
    );
}

/// `run` in the foreground reaped init with `status`; `gpus` and `journal` are what its
/// create granted and recorded the grant in.
pub(super) fn exited(
    g: &Globals,
    id: &str,
    gpus: &[String],
    journal: Option<&JournalConfig>,
    status: i32,
) {
    if gpus.is_empty() {
        return;
    }
    let event = Event::Exit { status };
    journal::record(journal, &Record::now(id, &g.root.path, gpus, event));
}

/// `delete` is about to take the container down (its cgroup still exists, so its OOM
/// count can be read); `status` is what it found before killing anything.
pub(super) fn releasing(root: &Path, st: &State, status: Status, force: bool) {
    if st.gpus.is_empty() {
        return;
    }
    let oom_kills = st.cgroup_to_remove().and_then(|cg| cg.oom_events().ok());
    let event = Event::Release(journal::Release {
        oom_kills,
        forced: force,
        found: status.as_str().to_string(),
        pod: Pod::from_annotations(&st.annotations),
        caller: force.then(caller::current),
    });
    journal::record(
        st.gpu_journal.as_ref(),
        &Record::now(&st.id, root, &st.gpus, event),
    );
}
