//! gpurun's own GPU verbs: `gpus` (the node's GPUs, who holds each, and — when the
//! driver's nvidia-smi answers — memory use and the processes on each) and `cdi generate`
//! (a CDI spec for this node). Both read the node configuration (`GPURUN_CONFIG` or
//! `/etc/gpurun/config.toml`) for the driver roots and the host-wide state directory.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::atomic_file::Durability;
use crate::error::{Error, Result};
use crate::gpu::config::Config;
use crate::gpu::lease::{Lease, Leases};
use crate::gpu::nvml::parse::ComputeApp;
use crate::gpu::nvml::{self, Live};
use crate::gpu::observe::{self, Activity, Sighting};
use crate::gpu::{Capabilities, Inventory};

use super::gpu_cells as cells;

#[derive(Args, Debug)]
pub struct GpusArgs {
    /// Output format: table or json.
    #[arg(short = 'f', long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
    /// Rediscover (running the driver's nvidia-smi) and rewrite the discovery cache, e.g.
    /// after MIG devices were recreated with other profiles.
    #[arg(long)]
    pub refresh: bool,
    /// Wait until this GPU has no holder, so that an exclusive request would be granted,
    /// then exit 0. The GPU is named as NVIDIA_VISIBLE_DEVICES names it: index, UUID, PCI
    /// address, or a MIG device (which waits for its GPU).
    #[arg(long, value_name = "GPU")]
    pub wait: Option<String>,
    /// With --wait: give up after this long (30s, 5m, 1h), exiting non-zero with the
    /// holder's name.
    #[arg(long, value_name = "DURATION", requires = "wait", value_parser = crate::log::parse_duration)]
    pub timeout: Option<Duration>,
    /// Print the GPU journal instead: every grant and release, how each job ended, who
    /// killed it; optionally of one GPU (index or UUID) or one container id.
    #[arg(long, value_name = "GPU|ID", num_args = 0..=1, default_missing_value = "")]
    pub history: Option<String>,
    /// With --history: records since this RFC 3339 time or this long ago (90s, 30m, 1h, 2d).
    #[arg(long, requires = "history")]
    pub since: Option<String>,
}

#[derive(Args, Debug)]
pub struct CdiArgs {
    #[command(subcommand)]
    pub cmd: CdiCmd,
}

#[derive(Subcommand, Debug)]
pub enum CdiCmd {
    /// Write a CDI spec (kind nvidia.com/gpu) for every GPU of this node: devices by index,
    /// by UUID and `all`, and the control nodes and driver files every device needs.
    Generate {
        /// Write the spec to this file (atomically) instead of stdout.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// yaml or json; default: from the --output extension (.json), else yaml.
        #[arg(long, value_parser = ["yaml", "json"])]
        format: Option<String>,
        /// Driver capabilities whose files the spec mounts (comma list or `all`);
        /// default: the configuration's default-capabilities.
        #[arg(long)]
        capabilities: Option<String>,
        /// The highest CDI version the spec may use. 0.5.0 is what Podman 4.x reads:
        /// `additionalGids` (0.7.0) is left out, and gpurun adds the nodes' groups itself
        /// when it receives the applied nodes.
        #[arg(long, value_parser = ["0.5.0", "0.7.0"])]
        cdi_version: Option<String>,
    },
}

fn config() -> Result<Config> {
    Config::load().map_err(|e| Error::Config(e.to_string()))
}

fn inventory(cfg: &Config) -> Result<Inventory> {
    Ok(crate::gpu::discover_cached(cfg)?)
}

/// A container holding a GPU, as `gpus` prints it.
#[derive(Debug, Serialize)]
struct HolderView {
    id: String,
    root: PathBuf,
    pid: i32,
    sharing: crate::gpu::config::Sharing,
    /// How the grant was asked for (`env`, `cli`, `applied`, `cdi-annotations`, …);
    /// `null` for a lease written before gpurun recorded it.
    source: Option<String>,
    /// Shares the GPU through MPS.
    mps: bool,
    /// When the lease was taken (seconds since the Unix epoch); `null` for a lease
    /// written before gpurun recorded it.
    acquired: Option<u64>,
    /// Whether a process of the holder uses this GPU now, and since when it has not.
    activity: Activity,
    /// Its lease's index in the lease table.
    #[serde(skip)]
    lease: usize,
}

/// A process using a GPU, from nvidia-smi.
#[derive(Debug, Serialize)]
struct ProcessView {
    /// The host's pid, as nvidia-smi reports it.
    pid: i32,
    /// The pid inside the container (its innermost pid namespace), for a container's
    /// process.
    container_pid: Option<i32>,
    used_memory_mib: Option<u64>,
    /// The holder it runs in (its init, its pid namespace, or its cgroups), if any.
    container: Option<String>,
    #[serde(skip)]
    lease: Option<usize>,
}

#[derive(Debug, Serialize)]
struct MigView {
    gi: u32,
    ci: u32,
    index: Option<u32>,
    uuid: Option<String>,
}

/// One GPU, as `gpus` prints it.
#[derive(Debug, Serialize)]
struct GpuView {
    index: u32,
    uuid: String,
    model: String,
    bus_id: String,
    minor: u32,
    compute_capability: Option<String>,
    brand: Option<String>,
    mig_devices: Vec<MigView>,
    holders: Vec<HolderView>,
    /// Live from nvidia-smi; `null` when it did not answer.
    memory_used_mib: Option<u64>,
    memory_total_mib: Option<u64>,
    processes: Option<Vec<ProcessView>>,
}

fn holder_views(leases: &[Lease], uuid: &str) -> Vec<HolderView> {
    leases
        .iter()
        .enumerate()
        .filter(|(_, l)| l.gpus.iter().any(|g| g == uuid))
        .map(|(i, l)| HolderView {
            id: l.holder.container_id.clone(),
            root: l.holder.root.clone(),
            pid: l.holder.pid,
            sharing: l.sharing,
            source: l.source.clone(),
            mps: l.mps,
            acquired: l.acquired,
            activity: Activity::Unknown,
            lease: i,
        })
        .collect()
}

fn process_view(app: &ComputeApp, leases: &[Lease], holder_pids: &[i32]) -> ProcessView {
    let proc = Path::new("/proc");
    let lease = nvml::owner::container_of(proc, app.pid, holder_pids);
    ProcessView {
        pid: app.pid,
        container_pid: lease.and_then(|_| observe::innermost_pid(proc, app.pid)),
        used_memory_mib: app.used_mib,
        container: lease.map(|i| leases[i].holder.container_id.clone()),
        lease,
    }
}

fn views(inv: &Inventory, leases: &[Lease], live: Option<&Live>) -> Vec<GpuView> {
    let holder_pids: Vec<i32> = leases.iter().map(|l| l.holder.pid).collect();
    inv.gpus
        .iter()
        .map(|g| {
            let migs = inv.mig_devices.iter().filter(|m| m.parent_minor == g.minor);
            let on_this_gpu = |uuid: &str| {
                g.uuid.eq_ignore_ascii_case(uuid)
                    || migs.clone().any(|m| {
                        m.uuid
                            .as_deref()
                            .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
                    })
            };
            let memory = live.and_then(|l| {
                l.memory
                    .iter()
                    .find(|(u, ..)| g.uuid.eq_ignore_ascii_case(u))
            });
            GpuView {
                index: g.index,
                uuid: g.uuid.clone(),
                model: g.model.clone(),
                bus_id: g.bus.to_string(),
                minor: g.minor,
                compute_capability: g.compute_capability.clone(),
                brand: g.brand.clone(),
                mig_devices: migs
                    .clone()
                    .map(|m| MigView {
                        gi: m.gi,
                        ci: m.ci,
                        index: m.index,
                        uuid: m.uuid.clone(),
                    })
                    .collect(),
                holders: holder_views(leases, &g.uuid),
                memory_used_mib: memory.and_then(|m| m.1),
                memory_total_mib: memory.and_then(|m| m.2),
                processes: live.map(|l| {
                    l.apps
                        .iter()
                        .filter(|a| on_this_gpu(&a.gpu_uuid))
                        .map(|a| process_view(a, leases, &holder_pids))
                        .collect()
                }),
            }
        })
        .collect()
}

/// Sets each holder's activity from this run's processes and the earlier runs' record,
/// and records what this run saw. Only a run whose nvidia-smi answered observes.
fn observe_activity(state_dir: &Path, leases: &[Lease], rows: &mut [GpuView]) {
    let now = crate::log::unix_secs(SystemTime::now());
    let activity = {
        let sightings: Vec<Sighting> = rows
            .iter()
            .flat_map(|r| {
                r.holders.iter().map(move |h| Sighting {
                    holder: &leases[h.lease].holder,
                    gpu: &r.uuid,
                    busy: r
                        .processes
                        .iter()
                        .flatten()
                        .any(|p| p.lease == Some(h.lease)),
                })
            })
            .collect();
        let (record, activity) = observe::observe(&observe::load(state_dir), now, &sightings);
        if let Err(e) = observe::save(state_dir, &record) {
            crate::log::warn_caller(&format!(
                "not recorded, so a later run cannot tell since when a holder is idle: {e}"
            ));
        }
        activity
    };
    let holders = rows.iter_mut().flat_map(|r| r.holders.iter_mut());
    for (h, a) in holders.zip(activity) {
        h.activity = a;
    }
}

/// `gpurun gpus`: the discovered GPUs with the live leases on each, and what nvidia-smi
/// says about them now. A cache whose enrichment had failed (or is still pending) is refreshed: this command
/// runs nvidia-smi anyway.
pub fn gpus(a: &GpusArgs) -> Result<()> {
    if let Some(target) = &a.history {
        return super::gpu_history::print(target, a.since.as_deref(), &a.format);
    }
    let cfg = config()?;
    let mut inv = inventory(&cfg)?;
    if a.refresh || inv.enrichment.failed || inv.enrichment.pending {
        inv = crate::gpu::rediscover(&cfg)?;
    }
    if let Some(gpu) = &a.wait {
        return super::gpu_wait::wait(&cfg, &inv, gpu, a.timeout);
    }
    let leases = Leases::for_node(&cfg).list()?;
    let live = match nvml::live(&inv, nvml::LIVE_TIMEOUT) {
        Ok(l) => Some(l),
        Err(e) => {
            crate::log::warn(&format!("GPU memory and processes not shown: {e}"));
            None
        }
    };
    let mut rows = views(&inv, &leases, live.as_ref());
    if live.is_some() {
        observe_activity(&cfg.gpus.state_dir, &leases, &mut rows);
    }
    if a.format == "json" {
        let text = serde_json::to_string(&rows).map_err(Error::json("encoding the GPU list"))?;
        println!("{text}");
        return Ok(());
    }
    print_gpus(&rows, live.is_some());
    Ok(())
}

fn print_gpus(rows: &[GpuView], live: bool) {
    let base = |r: &GpuView| {
        [
            r.index.to_string(),
            r.uuid.clone(),
            r.model.clone(),
            r.bus_id.clone(),
            r.minor.to_string(),
        ]
    };
    let now = crate::log::unix_secs(SystemTime::now());
    let holders = |r: &GpuView| {
        let cells: Vec<String> = r
            .holders
            .iter()
            .map(|h| cells::holder(&h.into(), now))
            .collect();
        cells::joined(cells)
    };
    if !live {
        let table: Vec<[String; 6]> = rows
            .iter()
            .map(|r| {
                let [a, b, c, d, e] = base(r);
                [a, b, c, d, e, holders(r)]
            })
            .collect();
        super::output::print_table(
            &["INDEX", "UUID", "MODEL", "BUS-ID", "MINOR", "HOLDERS"],
            &table,
        );
        return;
    }
    let table: Vec<[String; 8]> = rows
        .iter()
        .map(|r| {
            let [a, b, c, d, e] = base(r);
            let procs: Vec<String> = r
                .processes
                .iter()
                .flatten()
                .map(|p| {
                    cells::process(
                        p.pid,
                        p.container.as_deref(),
                        p.container_pid,
                        p.used_memory_mib,
                    )
                })
                .collect();
            let memory = cells::memory(r.memory_used_mib, r.memory_total_mib);
            [a, b, c, d, e, memory, holders(r), cells::joined(procs)]
        })
        .collect();
    super::output::print_table(
        &[
            "INDEX",
            "UUID",
            "MODEL",
            "BUS-ID",
            "MINOR",
            "MEMORY",
            "HOLDERS",
            "PROCESSES",
        ],
        &table,
    );
    if rows
        .iter()
        .flat_map(|r| &r.holders)
        .any(|h| matches!(h.activity, Activity::Idle { .. }))
    {
        println!("{}", cells::IDLE_NOTE);
    }
}

impl<'a> From<&'a HolderView> for cells::Holder<'a> {
    fn from(h: &'a HolderView) -> Self {
        cells::Holder {
            id: &h.id,
            root: &h.root,
            pid: h.pid,
            exclusive: h.sharing == crate::gpu::config::Sharing::Exclusive,
            mps: h.mps,
            acquired: h.acquired,
            activity: &h.activity,
        }
    }
}

/// Which serialisation `cdi generate` writes: the flag, else the file's extension.
fn cdi_format(flag: Option<&str>, output: Option<&Path>) -> Result<&'static str> {
    let by_ext = output
        .and_then(|p| p.extension())
        .and_then(|e| e.to_str())
        .and_then(|e| match e {
            "json" => Some("json"),
            "yaml" | "yml" => Some("yaml"),
            _ => None,
        });
    match (flag, by_ext, output) {
        (Some(f), Some(e), Some(p)) if f != e => Err(Error::Usage(format!(
            "--format {f} does not match {}: CDI readers choose the parser by extension \
             (.json, .yaml, .yml)",
            p.display()
        ))),
        (Some("json"), ..) => Ok("json"),
        (Some(_), ..) => Ok("yaml"),
        (None, Some(e), _) => Ok(e),
        (None, None, _) => Ok("yaml"),
    }
}

/// `gpurun cdi ...`
pub fn cdi(a: &CdiArgs) -> Result<()> {
    match &a.cmd {
        CdiCmd::Generate {
            output,
            format,
            capabilities,
            cdi_version,
        } => generate(
            output.as_deref(),
            format.as_deref(),
            capabilities.as_deref(),
            cdi_version.as_deref(),
        ),
    }
}

fn generate(
    output: Option<&Path>,
    format: Option<&str>,
    caps: Option<&str>,
    cdi_version: Option<&str>,
) -> Result<()> {
    let format = cdi_format(format, output)?;
    let cfg = config()?;
    let caps = caps.unwrap_or(&cfg.nvidia.default_capabilities);
    let caps =
        Capabilities::parse(caps).map_err(|e| Error::Usage(format!("--capabilities: {e}")))?;
    let inv = inventory(&cfg)?;
    let mut spec = crate::gpu::cdi::generate(&inv, caps);
    if cdi_version == Some("0.5.0") {
        crate::gpu::cdi::without_additional_gids(&mut spec);
    }
    let mut text = match format {
        "json" => spec.to_json(),
        _ => spec.to_yaml(),
    }
    .map_err(|e| Error::Other(format!("serialising the CDI spec: {e}")))?;
    if !text.ends_with('\n') {
        text.push('\n');
    }
    match output {
        None => {
            print!("{text}");
            Ok(())
        }
        Some(p) => write_atomically(p, text.as_bytes()),
    }
}

/// A temp file beside `path`, then a rename: a CDI registry reading the directory never
/// sees half a spec.
fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    if path.file_name().is_none() {
        return Err(Error::Usage(format!(
            "--output {} names no file",
            path.display()
        )));
    }
    crate::atomic_file::write(
        "writing the CDI spec",
        path,
        data,
        0o644,
        Durability::Synced,
    )?;
    Ok(())
}

/// `gpurun refresh-gpus`: started by a create that found no discovery cache. It keeps no
/// descriptor the creating runtime inherited (a container's preserved fds, a caller's
/// pipes), rediscovers with nvidia-smi, writes the cache, and releases the refresh marker.
pub fn refresh_in_background() -> Result<()> {
    let _ = crate::linux::sys::proc::close_range_from(3, false);
    let cfg = config()?;
    Ok(crate::gpu::refresh(&cfg)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdi_format_follows_the_flag_then_the_extension() {
        let p = |s: &'static str| Some(Path::new(s));
        assert_eq!(cdi_format(None, None).ok(), Some("yaml"));
        assert_eq!(cdi_format(Some("json"), None).ok(), Some("json"));
        assert_eq!(
            cdi_format(None, p("/etc/cdi/nvidia.json")).ok(),
            Some("json")
        );
        assert_eq!(
            cdi_format(None, p("/etc/cdi/nvidia.yml")).ok(),
            Some("yaml")
        );
        assert_eq!(
            cdi_format(Some("yaml"), p("/etc/cdi/nvidia.yaml")).ok(),
            Some("yaml")
        );
        let err = cdi_format(Some("yaml"), p("/etc/cdi/nvidia.json"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("/etc/cdi/nvidia.json"), "{err}");
    }
}
