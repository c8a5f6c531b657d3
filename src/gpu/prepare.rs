//! The one GPU entry point of `create`: [`prepare`] reads what the spec asks for, reads
//! the node configuration only when it asks for something, injects, and hands back a
//! [`GpuGrant`] that owns the lease until the container exists.
//!
//! ```text
//! let grant = gpu::prepare(&mut spec, &gpu::Container { id, root, rootfs, cli })?;
//! // plan, state, cgroup, clone; init waits for `start`
//! grant.bind(init_pid, init_start_time)?;   // the one lease write, in init's name
//! grant.keep();                              // the container exists: delete releases it
//! ```
//!
//! Dropping a grant before `keep` releases whatever it wrote, so a create that fails
//! after `prepare` leaves no lease behind.

use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;

use super::applied::{self, Mapped};
use super::combine::{self, Explicit};
use super::config::{Config, Sharing};
use super::edits::{self, Target};
use super::inventory::Inventory;
use super::lease::{Holder, Leases, Notes};
use super::request::{self, Asked, CliRequest, Parsed, Request, RequestSource};
use super::{cache, GpuError, Injection};

/// The hidden verb that refreshes the discovery cache in the background.
pub const REFRESH_VERB: &str = "refresh-gpus";
/// Under the state directory: the generated `/proc/driver/nvidia` views, shared by every
/// container whose view is the same.
pub const PROC_DRIVER_STORE: &str = "proc-driver-nvidia";
/// Under the state directory: what covers `/proc/driver` when the kernel has no NVIDIA
/// module (a fake driver tree).
pub const PROC_DRIVER_COVER: &str = "proc-driver-cover";

/// The container being created, as GPU injection sees it.
pub struct Container<'a> {
    pub id: &'a str,
    /// Its `--root`: part of the lease's holder, and never a parent of the GPU state.
    pub root: &'a Path,
    /// Only probed, never written.
    pub rootfs: &'a Path,
    /// `--gpus` (and `--exclusive`) from `create` or `run`.
    pub cli: Option<&'a CliRequest>,
}

/// GPUs granted to a container being created. It owns the container's lease: written
/// once by [`GpuGrant::bind`], released on drop unless [`GpuGrant::keep`] was called.
#[must_use = "dropping a grant releases its lease"]
#[derive(Debug)]
pub struct GpuGrant {
    /// UUIDs of the granted GPUs (MIG devices count as their parent).
    pub gpus: Vec<String>,
    pub sharing: Sharing,
    /// Which request was acted on.
    pub source: RequestSource,
    /// The container shares its GPUs through NVIDIA MPS.
    pub mps: bool,
    /// The state directory whose lease table holds the lease (recorded in the
    /// container's state for `delete`).
    pub state_dir: PathBuf,
    /// The GPU journal of the node configuration the grant was made under.
    pub journal: super::config::JournalConfig,
    leases: Leases,
    container_id: String,
    root: PathBuf,
    written: bool,
}

/// Reads the spec's GPU request, injects it, and returns the grant; `None` when the spec
/// asks for no GPU, or asked and was refused by policy (a warning says so). NVIDIA's hooks
/// in the edited spec, whether a request brought them or the engine did, are done last.
pub fn prepare(spec: &mut Spec, c: &Container<'_>) -> Result<Option<GpuGrant>, GpuError> {
    drop_internal_annotations(spec);
    let mut cfg = None;
    let grant = request_grant(spec, c, &mut cfg)?;
    if super::nvhooks::present(spec) {
        let cfg = loaded(&mut cfg)?;
        super::nvhooks::prepare(spec, c.rootfs, PROC_DRIVER_COVER, cfg)?;
    }
    Ok(grant)
}

/// The node configuration, read once per create however many steps need it.
fn loaded(slot: &mut Option<Config>) -> Result<&Config, super::config::ConfigError> {
    match slot {
        Some(cfg) => Ok(cfg),
        None => Ok(slot.insert(Config::load()?)),
    }
}

fn request_grant(
    spec: &mut Spec,
    c: &Container<'_>,
    slot: &mut Option<Config>,
) -> Result<Option<GpuGrant>, GpuError> {
    let asked = request::read(spec)?;
    let asks = asked.is_some() || c.cli.is_some();
    if !asks && !applied::lists_char_devices(spec) {
        warn_if_config_broken(slot);
        return Ok(None);
    }
    let cfg = match loaded(slot) {
        Ok(cfg) => cfg,
        Err(e) if !asks => {
            crate::log::warn_caller(&format!(
                "[gpu-config-ignored] {e}; ignored: this container asks for no GPU (its linux.devices were not \
                 checked for NVIDIA nodes)"
            ));
            return Ok(None);
        }
        Err(e) => return Err(e.into()),
    };
    let roots = cfg.roots();
    let nodes = applied::scan(spec, &roots)?;
    if !asks && nodes.is_empty() {
        return Ok(None);
    }
    check_state_dir(cfg, c.root)?;
    if !nodes.is_empty() {
        applied::check_files(spec, &roots)?;
    }
    let Some(inj) = grant_for(spec, asked, &nodes, c, cfg)? else {
        return Ok(None);
    };
    report(&inj);
    if inj.grant.gpus.is_empty() {
        return Ok(None);
    }
    let mps = request::env_map(spec).contains_key("CUDA_MPS_PIPE_DIRECTORY");
    GpuGrant::reserve(cfg, c, &inj, mps).map(Some)
}

/// One request worked out on a copy of the spec: how the combining rule names it, and the
/// edited copy with what it grants.
type Worked = (Explicit, Spec, Injection);

/// The combining rule at work: the engine's nodes, the spec's explicit request and
/// `--gpus` are each worked out and must agree; the strongest is applied to `spec`.
fn grant_for(
    spec: &mut Spec,
    asked: Option<Asked>,
    nodes: &[applied::Node],
    c: &Container<'_>,
    cfg: &Config,
) -> Result<Option<Injection>, GpuError> {
    let mut worked: Vec<Worked> = Vec::new();
    // Discovery once per create, whichever requests need it.
    let mut inv = None;
    worked.extend(applied_grant(spec, nodes, c, cfg, &mut inv)?);
    // The image's env asks only where nothing explicit does; beside an explicit grant it
    // is ignored, with a warning.
    let explicit_elsewhere = !worked.is_empty() || c.cli.is_some();
    let (native, env_value) = match asked {
        Some(a) if a.source == RequestSource::Env && explicit_elsewhere => {
            (None, Some(a.env_value().to_string()))
        }
        other => (other, None),
    };
    if let Some(asked) = native {
        match request::decide(asked, spec, cfg)? {
            Parsed::Nothing => {}
            Parsed::Ignored(warning) => {
                return Ok(Some(edits::refuse(spec, warning, cfg.gpus.sharing)));
            }
            Parsed::Request(req) => worked.push(native_grant(spec, &req, c, cfg, &mut inv)?),
        }
    }
    if let Some(cli) = c.cli {
        worked.push(cli_grant(spec, cli, c, cfg, &mut inv)?);
    }
    let explicit: Vec<Explicit> = worked.iter().map(|w| w.0.clone()).collect();
    let warning = combine::combine(&explicit, env_value.as_deref())?;
    let Some((_, mut s, mut inj)) = worked.into_iter().next() else {
        return Ok(None);
    };
    if let Some(w) = warning {
        if inj.grant.source == RequestSource::Applied {
            edits::set_visible_devices(&mut s, &inj.grant.gpus);
        }
        inj.warnings.push(w);
    }
    if c.cli.is_some_and(|x| x.exclusive) {
        inj.grant.sharing = Sharing::Exclusive;
    }
    *spec = s;
    Ok(Some(inj))
}

/// The engine's applied nodes: their rules and groups made sure of in `spec` itself, and,
/// when they name GPUs (and are not a privileged container's copy of the host's `/dev`),
/// the grant they stand for.
fn applied_grant(
    spec: &mut Spec,
    nodes: &[applied::Node],
    c: &Container<'_>,
    cfg: &Config,
    inv: &mut Option<Inventory>,
) -> Result<Option<Worked>, GpuError> {
    if nodes.is_empty() {
        return Ok(None);
    }
    let inv = discovered(inv, cfg)?;
    if applied::is_host_dump(spec, nodes, inv, request::is_privileged(spec)) {
        return Ok(None);
    }
    let mapped = applied::map(nodes, inv)?;
    edits::keep_applied_nodes(spec, &mapped);
    if mapped.gpus.is_empty() {
        return Ok(None);
    }
    let (s, inj) = act_applied(spec, &mapped, c, cfg, inv)?;
    let names: Vec<String> = mapped
        .nodes
        .iter()
        .map(|n| n.path.display().to_string())
        .collect();
    let what = format!(
        "the NVIDIA nodes applied by the engine ({})",
        names.join(", ")
    );
    Ok(Some((explicit(what, &inj), s, inj)))
}

/// CDI annotations, device-plugin mounts, or the image's env where nothing else asks.
fn native_grant(
    spec: &Spec,
    req: &Request,
    c: &Container<'_>,
    cfg: &Config,
    inv: &mut Option<Inventory>,
) -> Result<Worked, GpuError> {
    let (s, inj) = inject(spec, req, c, cfg, inv)?;
    Ok((explicit(combine::describe(req), &inj), s, inj))
}

/// `--gpus`: injected like any request, and the variable then names what it granted.
fn cli_grant(
    spec: &Spec,
    cli: &CliRequest,
    c: &Container<'_>,
    cfg: &Config,
    inv: &mut Option<Inventory>,
) -> Result<Worked, GpuError> {
    let req = request::from_cli(cli, spec, cfg)?;
    let (mut s, inj) = inject(spec, &req, c, cfg, inv)?;
    edits::set_visible_devices(&mut s, &inj.grant.gpus);
    Ok((explicit(format!("--gpus {}", cli.devices), &inj), s, inj))
}

fn explicit(what: String, inj: &Injection) -> Explicit {
    Explicit {
        what,
        gpus: inj.grant.gpus.clone(),
    }
}

/// The engine's grant: its nodes stay, and the container gets its `/proc/driver/nvidia`.
fn act_applied(
    spec: &Spec,
    m: &Mapped<'_>,
    c: &Container<'_>,
    cfg: &Config,
    inv: &Inventory,
) -> Result<(Spec, Injection), GpuError> {
    let gen_dir = cfg.gpus.state_dir.join(PROC_DRIVER_STORE);
    let target = target(c, &gen_dir);
    let sharing = request::sharing(spec, cfg)?;
    let edited = edits::applied_view(spec, m, &target, inv, sharing)?;
    let mut s = edited.spec;
    cover(&mut s, cfg)?;
    Ok((s, edited.injection))
}

/// Where a container's edits come from (its rootfs, only probed) and where its generated
/// `/proc/driver/nvidia` views are kept.
fn target<'t>(c: &'t Container<'_>, gen_dir: &'t Path) -> Target<'t> {
    Target {
        rootfs: c.rootfs,
        container_id: c.id,
        gen_dir,
    }
}

/// The links init makes as root travel in an annotation only gpurun may write: one that
/// comes with the config (an engine passing users' annotations on) is dropped, with a
/// warning, before anything reads it.
fn drop_internal_annotations(spec: &mut Spec) {
    let key = super::nvhooks::SYMLINKS_ANNOTATION;
    let Some(mut a) = spec.annotations().clone() else {
        return;
    };
    if a.remove(key).is_some() {
        crate::log::warn_caller(&format!(
            "annotation {key} ignored: only gpurun writes it (for NVIDIA's create-symlinks hook)"
        ));
        spec.set_annotations(Some(a));
    }
}

/// A container that asks for no GPU does not need the node configuration: a broken file
/// is worth a warning (on stderr without `--log`, where the person at the shell sees it),
/// not a failed create.
fn warn_if_config_broken(slot: &mut Option<Config>) {
    if let Err(e) = loaded(slot) {
        crate::log::warn_caller(&format!(
            "[gpu-config-ignored] {e}; ignored: this container asks for no GPU"
        ));
    }
}

/// The GPU state may not lie below `--root`, where a container id could name it. (The
/// same directory is the old default layout: the id rule keeps its names free.)
fn check_state_dir(cfg: &Config, root: &Path) -> Result<(), GpuError> {
    let dir = &cfg.gpus.state_dir;
    if dir != root && dir.starts_with(root) {
        return Err(GpuError::Unsupported(format!(
            "gpus.state-dir {} lies under --root {}: a container id could name it; \
             choose a directory outside it",
            dir.display(),
            root.display()
        )));
    }
    Ok(())
}

/// Discovery, then the edits applied once to a copy of `spec`. When discovery on the
/// start path left nvidia-smi's facts for later and this request needs them now (a MIG
/// UUID, an undecided REQUIRE term), they are gathered and the edits computed again from
/// the untouched spec.
fn inject(
    spec: &Spec,
    req: &Request,
    c: &Container<'_>,
    cfg: &Config,
    slot: &mut Option<Inventory>,
) -> Result<(Spec, Injection), GpuError> {
    let gen_dir = cfg.gpus.state_dir.join(PROC_DRIVER_STORE);
    let target = target(c, &gen_dir);
    let inv = discovered(slot, cfg)?;
    let pending = inv.enrichment.pending;
    let mut edited = edits::inject(spec, req, &target, cfg, inv);
    if pending {
        let needs_facts = edited.as_ref().map_or(true, |e| e.injection.undecided);
        if needs_facts {
            let inv = slot.insert(cache::rediscover(cfg)?);
            edited = edits::inject(spec, req, &target, cfg, inv);
        } else {
            cache::start_refresh(cfg, spawn_refresh);
        }
    }
    let edited = edited?;
    let mut s = edited.spec;
    cover(&mut s, cfg)?;
    Ok((s, edited.injection))
}

/// The node's inventory, discovered once per create however many requests need it.
fn discovered<'i>(
    slot: &'i mut Option<Inventory>,
    cfg: &Config,
) -> Result<&'i Inventory, GpuError> {
    match slot {
        Some(inv) => Ok(inv),
        None => Ok(slot.insert(cache::discover_for_start(cfg)?)),
    }
}

/// No NVIDIA module in this kernel (a fake driver tree): the container's procfs has no
/// driver/nvidia to mount over.
fn cover(spec: &mut Spec, cfg: &Config) -> Result<(), GpuError> {
    edits::cover_proc_driver_without_module(spec, &cfg.gpus.state_dir.join(PROC_DRIVER_COVER))
}

/// The request's warnings are about the caller's own input (an ignored variable, an
/// undecided requirement): on stderr without `--log`, where the person who ran it sees them.
fn report(inj: &Injection) {
    for w in &inj.warnings {
        crate::log::warn_caller(w);
    }
    for l in &inj.log {
        crate::log::debug(l);
    }
}

/// Starts `gpurun refresh-gpus` (hidden) in the background, detached from the caller's
/// stdio and process group: it enriches the discovery cache with nvidia-smi's answers.
fn spawn_refresh() -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    std::process::Command::new("/proc/self/exe")
        .arg(REFRESH_VERB)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
}

impl GpuGrant {
    /// Refuses now, before anything of the container exists, a grant that a live holder
    /// excludes; writes nothing.
    fn reserve(
        cfg: &Config,
        c: &Container<'_>,
        inj: &Injection,
        mps: bool,
    ) -> Result<GpuGrant, GpuError> {
        let grant = GpuGrant {
            gpus: inj.grant.gpus.clone(),
            sharing: inj.grant.sharing,
            source: inj.grant.source,
            mps,
            state_dir: cfg.gpus.state_dir.clone(),
            journal: cfg.journal.clone(),
            leases: Leases::for_node(cfg),
            container_id: c.id.to_string(),
            root: c.root.to_path_buf(),
            written: false,
        };
        grant
            .leases
            .check(&grant.container_id, &grant.root, &grant.gpus, grant.sharing)?;
        Ok(grant)
    }

    /// The one lease write, in the name of the container's init (`pid`, with the
    /// `start_time` of `/proc/<pid>/stat`), made while init waits for `start`. A holder
    /// that took one of these GPUs since [`prepare`] is refused here.
    pub fn bind(&mut self, pid: i32, start_time: u64) -> Result<(), GpuError> {
        if pid <= 0 {
            return Err(GpuError::Lease(format!(
                "container {}: no init pid to hold the lease (got {pid})",
                self.container_id
            )));
        }
        let holder = Holder {
            container_id: self.container_id.clone(),
            root: self.root.clone(),
            pid,
            start_time,
        };
        let notes = Notes {
            source: Some(self.source.name().to_string()),
            mps: self.mps,
        };
        self.leases
            .acquire_with(&holder, &self.gpus, self.sharing, &notes)?;
        self.written = true;
        Ok(())
    }

    /// The container exists: its `delete` releases the lease from now on.
    pub fn keep(mut self) {
        self.written = false;
    }
}

impl Drop for GpuGrant {
    fn drop(&mut self) {
        if self.written {
            if let Err(e) = self.leases.release(&self.container_id, &self.root) {
                crate::log::warn(&format!("releasing the GPU lease of a failed create: {e}"));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_state_dir_may_not_lie_under_the_root() {
        let mut cfg = Config::default();
        cfg.gpus.state_dir = PathBuf::from("/run/x/gpus");
        let e = check_state_dir(&cfg, Path::new("/run/x")).unwrap_err();
        assert!(e.to_string().contains("/run/x/gpus"), "{e}");
        check_state_dir(&cfg, Path::new("/run/x/gpus")).expect("a state dir outside the root");
        check_state_dir(&cfg, Path::new("/run/gpurun"))
            .expect("the state dir beside the default root");
        check_state_dir(&Config::default(), Path::new("/run/gpurun"))
            .expect("the default state dir");
    }

    fn grant_in(state: &Path, id: &str) -> GpuGrant {
        try_grant_in(state, id).expect("a grant")
    }

    fn try_grant_in(state: &Path, id: &str) -> Result<GpuGrant, GpuError> {
        let mut cfg = Config::default();
        cfg.gpus.state_dir = state.to_path_buf();
        let c = Container {
            id,
            root: Path::new("/run/test-root"),
            rootfs: Path::new("/nonexistent"),
            cli: None,
        };
        let inj = Injection {
            grant: crate::gpu::Grant {
                source: RequestSource::Env,
                gpus: vec!["GPU-0".into()],
                mig_devices: Vec::new(),
                cdi_devices: Vec::new(),
                capabilities: crate::gpu::Capabilities::NONE,
                sharing: Sharing::Exclusive,
            },
            warnings: Vec::new(),
            log: Vec::new(),
            undecided: false,
        };
        GpuGrant::reserve(&cfg, &c, &inj, false)
    }

    fn lease_pids(state: &Path) -> Vec<i64> {
        let mut pids: Vec<i64> = std::fs::read_dir(state.join("leases"))
            .expect("list the lease table")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
            .map(|e| {
                let v: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.path()).expect("read a lease"))
                        .expect("a lease is JSON");
                v["holder"]["pid"].as_i64().expect("a lease names its pid")
            })
            .collect();
        pids.sort_unstable();
        pids
    }

    #[test]
    fn a_grant_writes_its_lease_once_in_inits_name_and_releases_it_unless_kept() {
        let t = tempfile::tempdir().expect("tempdir");
        let me = std::process::id() as i32;
        let start = crate::linux::procstat::live_start_time(me).expect("our own start time");

        let mut g = grant_in(t.path(), "c1");
        assert!(lease_pids(t.path()).is_empty(), "reserving writes nothing");
        let e = g.bind(0, start).unwrap_err().to_string();
        assert!(e.contains("no init pid"), "{e}");
        assert!(lease_pids(t.path()).is_empty(), "no lease in pid 0's name");
        g.bind(me, start).expect("the lease is written");
        assert_eq!(lease_pids(t.path()), [i64::from(me)]);
        let e = try_grant_in(t.path(), "c2").unwrap_err();
        assert!(e.to_string().contains("c1"), "refused before anything: {e}");
        drop(g);
        assert!(lease_pids(t.path()).is_empty(), "a dropped grant releases");

        let mut g = grant_in(t.path(), "c3");
        g.bind(me, start).expect("a later grant's lease is written");
        g.keep();
        assert_eq!(lease_pids(t.path()), [i64::from(me)], "a kept grant stays");
    }

    #[test]
    fn every_name_kept_in_the_state_dir_is_refused_as_a_container_id() {
        for name in [
            PROC_DRIVER_STORE,
            PROC_DRIVER_COVER,
            super::super::nvhooks::STORE,
            "leases",
            super::super::CACHE_FILE,
            "discovery.refreshing",
        ] {
            assert_eq!(
                crate::id::check(name),
                Err(crate::id::Refusal::Reserved),
                "{name}"
            );
        }
    }
}
