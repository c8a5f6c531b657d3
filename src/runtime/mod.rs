//! The container lifecycle behind the CLI verbs, one file a verb: `create` (with its
//! rollback), `start`, `kill`, `delete`, `exec`, `run` in the foreground, the cgroup verbs
//! and the read-only queries. Every hook runs through [`crate::hooks::dispatch`], under
//! the runtime spec's failure policy for its phase.
//!
//! The CLI parses and prints; everything that changes a container happens here. Inside
//! this folder the imports go one way: `foreground` uses `create`, `start` and `delete`;
//! `exec` uses `foreground`; `delete` uses `kill`; `create` takes its GPUs from
//! [`crate::gpu::prepare`]. Any of them may use the helpers (`console`, `files`, `hook_dispatch`,
//! `journal`, `rollback`) and this file; the helpers use none of the verbs.

use std::path::{Path, PathBuf};

use crate::state::{Root, State, Status};

mod cgroup_verbs;
mod console;
mod create;
mod delete;
mod exec;
mod files;
mod foreground;
mod hook_dispatch;
mod journal;
mod kill;
mod query;
mod rollback;
mod start;

pub use cgroup_verbs::{oom_count, oom_watch, pause, resume, stats_event, update};
pub use create::{create, Created};
pub use delete::delete;
pub use exec::{exec, ExecOpts};
pub use files::write_pid_file;
pub use foreground::{run, RunOpts};
pub use kill::{kill, parse_signal};
pub use query::{load_public, pids};
pub use start::start;

use rollback::Creating;

/// What every verb gets from the global flags.
pub struct Globals {
    pub root: Root,
    pub systemd_cgroup: bool,
    pub rootless: bool,
}

pub struct CreateOpts {
    /// `run` in the foreground: a terminal is proxied by gpurun itself, not sent away.
    pub foreground: bool,
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// `--gpus` (with `--exclusive`): a GPU request without editing config.json.
    pub gpus: Option<crate::gpu::request::CliRequest>,
}

fn frozen(st: &State) -> bool {
    st.open_cgroup()
        .ok()
        .flatten()
        .is_some_and(|h| h.is_frozen())
}

pub fn status_of(c_dir: &Path, st: &State) -> Status {
    st.current_status(c_dir, || frozen(st))
}
