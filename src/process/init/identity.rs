//! The init steps that make the process the container's user: no_new_privs, the bounding
//! set, uid, gid and groups, capabilities, and the working directory entered (as that user
//! where root may not) and checked to lie inside the container.

use nix::unistd::{setresgid, setresuid, Gid, Uid};

use super::Ctx;
use crate::linux::caps;
use crate::plan::Plan;
use crate::process::error::{Error, Result};

pub(super) fn step_nnp(ctx: &mut Ctx) -> Result<()> {
    if ctx.plan.no_new_privileges {
        nix::sys::prctl::set_no_new_privs()
            .map_err(|e| Error::sys("setting no_new_privs", "prctl", "PR_SET_NO_NEW_PRIVS", e))?;
    }
    Ok(())
}

pub(super) fn step_bounding(ctx: &mut Ctx) -> Result<()> {
    Ok(caps::drop_bounding(&ctx.plan.caps)?)
}

pub(super) fn step_ids(ctx: &mut Ctx) -> Result<()> {
    let p = ctx.plan;
    caps::set_keep_caps(true)?;
    set_additional_gids(p)?;
    let g = Gid::from_raw(p.gid);
    setresgid(g, g, g)
        .map_err(|e| Error::sys(format!("setting gid {}", p.gid), "setresgid", "", e))?;
    let u = Uid::from_raw(p.uid);
    setresuid(u, u, u)
        .map_err(|e| Error::sys(format!("setting uid {}", p.uid), "setresuid", "", e))?;
    Ok(caps::set_keep_caps(false)?)
}

fn set_additional_gids(p: &Plan) -> Result<()> {
    let gids: Vec<Gid> = p
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&gids)
        .map_err(|e| Error::sys("setting additional gids", "setgroups", "", e))?;
    Ok(())
}

pub(super) fn step_caps(ctx: &mut Ctx) -> Result<()> {
    Ok(caps::apply(&ctx.plan.caps)?)
}

/// chdir before any filter and before the uid change, as root; where root may not enter
/// (a directory only the container's user or group can read: an unmapped owner in a
/// user namespace, a root-squashed export) with the container's ids as filesystem ids.
/// Then make sure the result is inside the container: a cwd such as `/proc/self/fd/N`
/// that reaches a leaked host directory reads "(unreachable)" (CVE-2024-21626).
pub(super) fn step_cwd(ctx: &mut Ctx) -> Result<()> {
    let cwd = &ctx.plan.cwd;
    match nix::unistd::chdir(cwd) {
        Ok(()) => {}
        Err(nix::errno::Errno::EACCES | nix::errno::Errno::EPERM) => chdir_as_user(ctx.plan)?,
        Err(e) => return Err(Error::sys("entering process.cwd", "chdir", cwd, e)),
    }
    let now =
        nix::unistd::getcwd().map_err(|e| Error::sys("checking process.cwd", "getcwd", cwd, e))?;
    if !now.is_absolute() || now.to_string_lossy().starts_with("(unreachable)") {
        return Err(Error::CwdOutsideRoot(cwd.to_path_buf()));
    }
    Ok(())
}

fn chdir_as_user(p: &Plan) -> Result<()> {
    set_additional_gids(p)?;
    let gid = nix::unistd::setfsgid(Gid::from_raw(p.gid));
    let uid = nix::unistd::setfsuid(Uid::from_raw(p.uid));
    let r = nix::unistd::chdir(&p.cwd);
    nix::unistd::setfsuid(uid);
    nix::unistd::setfsgid(gid);
    r.map_err(|e| {
        Error::sys(
            format!("entering process.cwd as uid {} gid {}", p.uid, p.gid),
            "chdir",
            &p.cwd,
            e,
        )
    })
}
