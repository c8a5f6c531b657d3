//! The read-only verbs' view of a container (`state`, `ps`, `list`): read without the
//! container's lock, so a long `create` or `exec` never blocks them.

use std::path::PathBuf;

use super::{status_of, Globals};
use crate::error::{Error, Result};
use crate::state::{self, State};

/// Read a container's state without taking its lock (`state`, `ps`, `list`). A directory
/// without state.json is a create that has made the directory and not yet written the
/// file (a window of microseconds), or a delete half done: either way, no container yet.
fn read_unlocked(g: &Globals, id: &str) -> Result<(PathBuf, State)> {
    state::validate_id(id)?;
    let dir = g.root.dir(id);
    let file = dir.join(state::STATE_FILE);
    if !file.exists() {
        return Err(Error::NotExist(id.to_string()));
    }
    match state::load_file(&file) {
        Err(e) if e.is_not_found() => Err(Error::NotExist(id.to_string())),
        r => r.map(|st| (dir, st)),
    }
}

pub fn load_public(g: &Globals, id: &str) -> Result<state::PublicState> {
    let (dir, st) = read_unlocked(g, id)?;
    Ok(st.public(status_of(&dir, &st)))
}

pub fn pids(g: &Globals, id: &str) -> Result<Vec<i32>> {
    let (_, st) = read_unlocked(g, id)?;
    match st.open_cgroup()? {
        Some(cg) => Ok(cg.pids()?),
        None => Ok(if st.init_alive() {
            vec![st.pid]
        } else {
            vec![]
        }),
    }
}
