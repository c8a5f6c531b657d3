//! GPU injection at create: plain spec edits, and the host-wide lease.

use std::path::Path;

use super::{CreateOpts, Creating, Globals};
use crate::error::{Error, Result};
use crate::{spec, state};

pub(super) fn lease_holder(
    g: &Globals,
    id: &str,
    pid: i32,
    start_time: u64,
) -> crate::gpu::lease::Holder {
    crate::gpu::lease::Holder {
        container_id: id.to_string(),
        root: g.root.path.clone(),
        pid,
        start_time,
    }
}

pub(super) type GrantedGpus = Option<(Vec<String>, crate::config::Sharing)>;

/// GPU injection: plain spec edits before the plan is built, and a lease taken (first
/// in the name of this gpurun process, so an exclusive holder is refused before anything
/// starts). Returns the granted GPU UUIDs.
pub(super) fn inject_gpus(
    g: &Globals,
    o: &CreateOpts,
    bundle: &mut spec::Bundle,
    cfg: &crate::config::Config,
    guard: &mut Creating,
) -> Result<GrantedGpus> {
    let gpu_err = |e: crate::gpu::GpuError| Error::Other(e.to_string());
    if !crate::gpu::wants_gpus(&bundle.spec, cfg) {
        let refused = crate::gpu::request::policy_warnings(&bundle.spec, cfg);
        if !refused.is_empty() {
            // Neutralised as `gpu::inject` does: nothing in the container reads a refused
            // request as a grant.
            crate::gpu::edits::Editor::new(&mut bundle.spec)
                .set_env("NVIDIA_VISIBLE_DEVICES", "void");
        }
        for w in refused {
            crate::log::warn(&w);
        }
        return Ok(None);
    }
    let inv = crate::gpu::discover_for_start(cfg).map_err(gpu_err)?;
    // Shared by every container whose generated /proc/driver/nvidia is the same.
    let gen_dir = cfg.gpus.state_dir.join("proc-driver-nvidia");
    let unenriched = inv.enrichment.pending.then(|| bundle.spec.clone());
    let mut injected =
        crate::gpu::inject(&mut bundle.spec, &bundle.rootfs, &o.id, &gen_dir, cfg, &inv);
    if let Some(spec) = unenriched {
        let needs_facts = match &injected {
            Err(_) => true,
            Ok(Some(inj)) => inj.undecided,
            Ok(None) => false,
        };
        if needs_facts {
            // This request names a MIG UUID or a REQUIRE term: the facts nvidia-smi gives
            // are needed now, not from the background refresh.
            let inv = crate::gpu::rediscover(cfg).map_err(gpu_err)?;
            bundle.spec = spec;
            injected =
                crate::gpu::inject(&mut bundle.spec, &bundle.rootfs, &o.id, &gen_dir, cfg, &inv);
        } else {
            crate::gpu::start_refresh(cfg, spawn_refresh);
        }
    }
    let Some(inj) = injected.map_err(gpu_err)? else {
        return Ok(None);
    };
    if !spec::has_namespace(&bundle.spec, oci_spec::runtime::LinuxNamespaceType::Mount) {
        return Err(Error::Config(
            "a GPU grant needs a mount namespace: the driver files, device nodes and \
             /proc/driver/nvidia are mounted into the container, and without \"mount\" in \
             linux.namespaces it shares the host's mount table, which gpurun never changes"
                .into(),
        ));
    }
    // No NVIDIA module in this kernel (a fake driver tree): the container's procfs has
    // no driver/nvidia to mount over.
    if !Path::new("/proc/driver/nvidia").is_dir() {
        let cover = cfg.gpus.state_dir.join("proc-driver-cover");
        crate::gpu::edits::cover_proc_driver(&mut bundle.spec, &cover).map_err(gpu_err)?;
    }
    for w in &inj.warnings {
        crate::log::warn(w);
    }
    for l in &inj.log {
        crate::log::debug(l);
    }
    if inj.grant.gpus.is_empty() {
        return Ok(None);
    }
    let me = std::process::id() as i32;
    let start = state::process_start_time(me).unwrap_or(0);
    let leases = crate::gpu::lease::Leases::new(&cfg.gpus.state_dir);
    leases
        .acquire(
            &lease_holder(g, &o.id, me, start),
            &inj.grant.gpus,
            inj.grant.sharing,
        )
        .map_err(gpu_err)?;
    guard.lease = Some((leases, o.id.clone(), g.root.path.clone()));
    Ok(Some((inj.grant.gpus.clone(), inj.grant.sharing)))
}

/// Starts `gpurun refresh-gpus` (hidden) in the background, detached from the caller's
/// stdio and process group: it enriches the discovery cache with nvidia-smi's answers.
fn spawn_refresh() -> std::io::Result<()> {
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    std::process::Command::new("/proc/self/exe")
        .arg(crate::runtime::REFRESH_GPUS)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map(drop)
}
