//! The four cases. Iterations are interleaved across runtimes (gpurun, runc, crun,
//! gpurun, …) so that drift on the machine touches every runtime alike.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::probe::{measure, Step};
use crate::report::Series;
use crate::setup::{self, Runtime, World};
use crate::{stopped, Opts};

/// The bundles, all on one rootfs and differing only where a case needs it.
pub struct Bundles {
    /// `gpurun spec` with args `/bin/true`: every runtime runs this same config.json.
    pub plain: PathBuf,
    /// The same plus `NVIDIA_VISIBLE_DEVICES=0`.
    pub gpu: PathBuf,
    /// The GPU bundle running a shell that checks what was injected.
    pub gpu_check: PathBuf,
    /// The plain bundle with GPU 0 applied before gpurun sees it, as containerd 2.x or
    /// Podman apply `nvidia.com/gpu=0` from an `nvidia-ctk cdi generate` spec (hooks
    /// included); written by [`Bundles::add_applied`].
    pub applied: Option<PathBuf>,
}

impl Bundles {
    pub fn write(dir: &Path, config: &Value) -> Result<Bundles, String> {
        let b = Bundles {
            plain: dir.join("bundle"),
            gpu: dir.join("bundle-gpu"),
            gpu_check: dir.join("bundle-gpu-check"),
            applied: None,
        };
        setup::write_bundle(&b.plain, config)?;
        let mut gpu = config.clone();
        match gpu["process"]["env"].as_array_mut() {
            Some(env) => env.push("NVIDIA_VISIBLE_DEVICES=0".into()),
            None => gpu["process"]["env"] = json!(["NVIDIA_VISIBLE_DEVICES=0"]),
        }
        setup::write_bundle(&b.gpu, &gpu)?;
        let lib = gpurun::gpu::fake::LIB_DIR;
        gpu["process"]["args"] = json!([
            "/bin/sh",
            "-c",
            format!(
                "test -c /dev/nvidia0 && test -c /dev/nvidiactl && test -c /dev/nvidia-uvm \
                 && test ! -e /dev/nvidia1 && test -e /{lib}/libcuda.so.1 \
                 && test -e /{lib}/libnvidia-ml.so.1 || exit 3; \
                 echo \"$(ls /dev/nvidia* | wc -l) device nodes, \
                 $(ls /{lib} | grep -cE 'nvidia|cuda') library files, \
                 $(grep -c nvidia /proc/self/mountinfo) mounts naming nvidia\""
            )
        ]);
        setup::write_bundle(&b.gpu_check, &gpu)?;
        Ok(b)
    }

    /// The engine-applied bundle for the fake tree at `host`.
    pub fn add_applied(&mut self, dir: &Path, config: &Value, host: &Path) -> Result<(), String> {
        use gpurun::gpu::fake::{engine_cdi, nvidia_cdi};
        let inv = gpurun::gpu::discover(&gpurun::gpu::Roots::at(host))
            .map_err(|e| format!("discovering the fake tree: {e}"))?;
        let uuids: Vec<&str> = inv.gpus.iter().map(|g| g.uuid.as_str()).collect();
        let spec = nvidia_cdi::ctk_generate(host, Path::new("/usr/bin/nvidia-cdi-hook"), &uuids);
        let mut applied = config.clone();
        engine_cdi::inject(&mut applied, &[spec], &["nvidia.com/gpu=0"])?;
        let path = dir.join("bundle-applied");
        setup::write_bundle(&path, &applied)?;
        self.applied = Some(path);
        Ok(())
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

/// The last line or so of a runtime's stderr.
fn tail(files: &[PathBuf]) -> String {
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        let text = text.trim();
        if !text.is_empty() {
            let start = text.len().saturating_sub(300);
            let start = (start..text.len())
                .find(|&i| text.is_char_boundary(i))
                .unwrap_or(0);
            return text[start..].replace('\n', " | ");
        }
    }
    "failed with nothing on stderr".to_string()
}

/// One `run` per runtime, unmeasured; a peer that cannot run the bundle is left out, and
/// gpurun failing stops the bench.
pub fn preflight(world: &mut World, b: &Bundles, notes: &mut Vec<String>) -> Result<(), String> {
    let mut keep = Vec::new();
    for rt in std::mem::take(&mut world.runtimes) {
        let id = format!("{}-pre-{}", world.prefix, rt.name);
        let out = rt
            .direct(&["run", "-b", &path(&b.plain), &id])
            .map_err(|e| format!("starting {}: {e}", rt.bin.display()))?;
        if rt.state_entries().contains(&id) {
            let _ = rt.direct(&["delete", "--force", &id]);
        }
        if out.status.success() {
            keep.push(rt);
            continue;
        }
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if rt.name == "gpurun" {
            world.runtimes = keep;
            return Err(format!("gpurun cannot run the bench bundle: {err}"));
        }
        notes.push(format!(
            "{}: cannot run the bundle, left out: {err}",
            rt.name
        ));
    }
    world.runtimes = keep;
    setup::sweep_zombies();
    Ok(())
}

/// Runs the GPU check bundle once; returns what the container saw.
pub fn check_injection(world: &World, b: &Bundles) -> Result<String, String> {
    let rt = gpurun_of(world)?;
    let id = format!("{}-gpucheck", world.prefix);
    let out = rt
        .direct(&["run", "-b", &path(&b.gpu_check), &id])
        .map_err(|e| format!("starting gpurun: {e}"))?;
    if rt.state_entries().contains(&id) {
        let _ = rt.direct(&["delete", "--force", &id]);
    }
    if !out.status.success() {
        return Err(format!(
            "gpurun did not inject GPU 0 of the fake tree (exit {:?}): {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(format!(
        "GPU 0 of the fake driver tree (FakeDriver::full(), compute+utility): the container \
         sees {}",
        String::from_utf8_lossy(&out.stdout).trim()
    ))
}

fn gpurun_of(world: &World) -> Result<&Runtime, String> {
    world
        .runtimes
        .iter()
        .find(|r| r.name == "gpurun")
        .ok_or_else(|| "gpurun is not among the runtimes".to_string())
}

/// One line of a case: a runtime and a bundle, its ids tagged `<prefix>-<tag>-<n>`.
struct Variant<'a> {
    case: &'static str,
    rt: &'a Runtime,
    bundle: &'a Path,
    tag: String,
}

/// A case's plan for one iteration.
type Plan<'p> = dyn Fn(&Variant, &str, &Path, &Path) -> Vec<Step> + 'p;

/// The interleaved loop shared by (a), (b) and (c).
fn interleave(
    world: &World,
    o: &Opts,
    variants: &[Variant],
    plan: &Plan,
    timed: Range<usize>,
    names: &[&str],
    gpu_dir: Option<&Path>,
) -> Vec<Series> {
    let mut series: Vec<Series> = variants
        .iter()
        .map(|v| Series::new(v.case, &v.rt.name, &v.rt.label()))
        .collect();
    let total = o.warmup + o.iters;
    for it in 0..total {
        if stopped() {
            break;
        }
        for (v, s) in variants.iter().zip(series.iter_mut()) {
            let id = format!("{}-{}-{it}", world.prefix, v.tag);
            let err = world.dir.join("logs").join(format!("{}.err", v.tag));
            let pid = world.dir.join("pids").join(format!("{}.pid", v.tag));
            let _ = std::fs::remove_file(&pid);
            let m = measure(&plan(v, &id, &err, &pid), o.timeout);
            let keep = it >= o.warmup;
            s.record(m, keep, timed.clone(), names, || {
                tail(std::slice::from_ref(&err))
            });
            after_iteration(world, v.rt, &id, s, keep, gpu_dir);
        }
    }
    for (v, s) in variants.iter().zip(series.iter_mut()) {
        let prefix = format!("{}-{}-", world.prefix, v.tag);
        s.leftovers.cgroups += world.remove_cgroups(&prefix).len();
    }
    series
}

/// Counts, then removes, what one iteration left behind: its state, mounts in the bench's
/// namespace, GPU leases.
fn after_iteration(
    world: &World,
    rt: &Runtime,
    id: &str,
    s: &mut Series,
    keep: bool,
    gpu_dir: Option<&Path>,
) {
    setup::sweep_zombies();
    let add = |n: &mut usize, k: usize| {
        if keep {
            *n += k;
        }
    };
    if rt.root.join(id).exists() {
        add(&mut s.leftovers.state, 1);
        let _ = rt.direct(&["delete", "--force", id]);
        setup::sweep_zombies();
    }
    let mounts = setup::mounts_matching(&world.dir, &world.prefix);
    if !mounts.is_empty() {
        add(&mut s.leftovers.mounts, mounts.len());
        for m in mounts.iter().rev() {
            let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    if let Some(g) = gpu_dir {
        let n = setup::leases(g);
        if n > 0 {
            add(&mut s.leftovers.leases, n);
            let _ = std::fs::remove_dir_all(g.join("state/leases"));
        }
    }
}

/// (a) `run` of /bin/true, end to end, on every runtime.
pub fn run_case(world: &World, o: &Opts, b: &Bundles) -> Result<Vec<Series>, String> {
    let variants: Vec<Variant> = world
        .runtimes
        .iter()
        .map(|rt| Variant {
            case: "a:run",
            rt,
            bundle: &b.plain,
            tag: format!("a-{}", rt.name),
        })
        .collect();
    Ok(interleave(world, o, &variants, &run_plan, 0..1, &[], None))
}

fn run_plan(v: &Variant, id: &str, err: &Path, _pid: &Path) -> Vec<Step> {
    vec![Step::Run(vec![v.rt.cmd(
        &["run", "-b", &path(v.bundle), id],
        err.to_path_buf(),
    )])]
}

/// (b) `create`, `start`, the wait until the container's init has exited (reaped by the
/// probe), and `delete`: the wall time is the sum of the four.
pub fn lifecycle_case(world: &World, o: &Opts, b: &Bundles) -> Result<Vec<Series>, String> {
    let variants: Vec<Variant> = world
        .runtimes
        .iter()
        .map(|rt| Variant {
            case: "b:lifecycle",
            rt,
            bundle: &b.plain,
            tag: format!("b-{}", rt.name),
        })
        .collect();
    let plan = |v: &Variant, id: &str, err: &Path, pid: &Path| {
        let e = err.to_path_buf();
        vec![
            Step::Run(vec![v.rt.cmd(
                &[
                    "create",
                    "--pid-file",
                    &path(pid),
                    "-b",
                    &path(v.bundle),
                    id,
                ],
                e.clone(),
            )]),
            Step::Run(vec![v
                .rt
                .cmd(&["start", id], e.with_extension("start.err"))]),
            Step::Reap(vec![pid.to_path_buf()]),
            Step::Run(vec![v
                .rt
                .cmd(&["delete", id], e.with_extension("delete.err"))]),
        ]
    };
    Ok(interleave(
        world,
        o,
        &variants,
        &plan,
        0..4,
        &["create", "start", "wait", "delete"],
        None,
    ))
}

/// (c) gpurun alone: `run` with GPU 0 of the fake tree granted, interleaved with the same
/// `run` without a grant and, where written, with GPU 0 applied by the engine.
pub fn gpu_case(
    world: &World,
    o: &Opts,
    b: &Bundles,
    gpu_dir: &Path,
) -> Result<Vec<Series>, String> {
    let rt = gpurun_of(world)?;
    let mut variants = vec![
        Variant {
            case: "c:gpu",
            rt,
            bundle: &b.gpu,
            tag: "c-gpu".to_string(),
        },
        Variant {
            case: "c:none",
            rt,
            bundle: &b.plain,
            tag: "c-none".to_string(),
        },
    ];
    if let Some(applied) = &b.applied {
        variants.push(Variant {
            case: "c:applied",
            rt,
            bundle: applied,
            tag: "c-applied".to_string(),
        });
    }
    Ok(interleave(
        world,
        o,
        &variants,
        &run_plan,
        0..1,
        &[],
        Some(gpu_dir),
    ))
}

/// (d) `concurrency` containers started at once with `run -d` (the wall time is until the
/// last `run -d` returned), their inits reaped, then deleted at once; `rounds` rounds per
/// runtime, interleaved.
pub fn concurrent_case(world: &World, o: &Opts, b: &Bundles) -> Result<Vec<Series>, String> {
    let n = o.concurrency;
    let (start_case, delete_case) = (format!("d:start{n}"), format!("d:delete{n}"));
    let mut series: Vec<(Series, Series)> = world
        .runtimes
        .iter()
        .map(|rt| {
            (
                Series::new(&start_case, &rt.name, &rt.label()),
                Series::new(&delete_case, &rt.name, &rt.label()),
            )
        })
        .collect();
    for round in 0..o.rounds {
        if stopped() {
            break;
        }
        for (rt, (start, delete)) in world.runtimes.iter().zip(series.iter_mut()) {
            if stopped() {
                break;
            }
            concurrent_round(world, o, b, rt, round, start, delete);
        }
    }
    Ok(series.into_iter().flat_map(|(s, d)| [s, d]).collect())
}

fn concurrent_round(
    world: &World,
    o: &Opts,
    b: &Bundles,
    rt: &Runtime,
    round: usize,
    start: &mut Series,
    delete: &mut Series,
) {
    let tag = format!("d-{}-{round}", rt.name);
    let ids: Vec<String> = (0..o.concurrency)
        .map(|j| format!("{}-{tag}-{j}", world.prefix))
        .collect();
    let logs = world.dir.join("logs");
    let err: Vec<PathBuf> = (0..ids.len())
        .map(|j| logs.join(format!("{tag}-{j}.err")))
        .collect();
    let pids: Vec<PathBuf> = (0..ids.len())
        .map(|j| world.dir.join("pids").join(format!("{tag}-{j}.pid")))
        .collect();
    let runs = ids
        .iter()
        .zip(&err)
        .zip(&pids)
        .map(|((id, e), p)| {
            rt.cmd(
                &[
                    "run",
                    "-d",
                    "--pid-file",
                    &path(p),
                    "-b",
                    &path(&b.plain),
                    id,
                ],
                e.clone(),
            )
        })
        .collect();
    let m = measure(&[Step::Run(runs), Step::Reap(pids.clone())], o.timeout);
    let started: Vec<&String> = match &m {
        Ok(out) => out
            .steps
            .first()
            .map(|s| {
                ids.iter()
                    .zip(&s.codes)
                    .filter(|(_, &c)| c == 0)
                    .map(|(id, _)| id)
                    .collect()
            })
            .unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    start.record(m, true, 0..1, &[], || tail(&err));
    setup::sweep_zombies();

    let derr: Vec<PathBuf> = (0..started.len())
        .map(|j| logs.join(format!("{tag}-{j}.delete.err")))
        .collect();
    let deletes = started
        .iter()
        .zip(&derr)
        .map(|(id, e)| rt.cmd(&["delete", id], e.clone()))
        .collect();
    if !started.is_empty() {
        let m = measure(&[Step::Run(deletes)], o.timeout);
        delete.record(m, true, 0..1, &[], || tail(&derr));
        setup::sweep_zombies();
    }

    let l = &mut delete.leftovers;
    let prefix = format!("{}-{tag}-", world.prefix);
    let left: Vec<String> = rt
        .state_entries()
        .into_iter()
        .filter(|e| e.starts_with(&prefix))
        .collect();
    l.state += left.len();
    l.procs += pids
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|s| s.trim().parse::<i32>().ok())
        .filter(|&pid| setup::alive(pid))
        .count();
    l.mounts += setup::mounts_matching(&world.dir, &world.prefix).len();
    for id in &left {
        let _ = rt.direct(&["delete", "--force", id]);
    }
    setup::sweep_zombies();
    l.cgroups += world.remove_cgroups(&prefix).len();
}
