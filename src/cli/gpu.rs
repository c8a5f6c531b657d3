//! gpurun's own GPU verbs: `gpus` (the node's GPUs and who holds each) and `cdi generate`
//! (a CDI spec for this node). Both read the node configuration (`GPURUN_CONFIG` or
//! `/etc/gpurun/config.toml`) for the driver roots and the host-wide state directory.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde::Serialize;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::gpu::lease::{Lease, Leases};
use crate::gpu::{Capabilities, Inventory};

#[derive(Args, Debug)]
pub struct GpusArgs {
    /// Output format: table or json.
    #[arg(short = 'f', long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,
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
    },
}

fn config() -> Result<Config> {
    Config::load().map_err(|e| Error::Config(e.to_string()))
}

fn inventory(cfg: &Config) -> Result<Inventory> {
    crate::gpu::discover_cached(cfg).map_err(|e| Error::Other(e.to_string()))
}

/// A container holding a GPU, as `gpus` prints it.
#[derive(Debug, Serialize)]
struct HolderView {
    id: String,
    root: PathBuf,
    pid: i32,
    sharing: crate::config::Sharing,
}

/// One GPU, as `gpus` prints it.
#[derive(Debug, Serialize)]
struct GpuView {
    index: u32,
    uuid: String,
    model: String,
    bus_id: String,
    minor: u32,
    holders: Vec<HolderView>,
}

fn views(inv: &Inventory, leases: &[Lease]) -> Vec<GpuView> {
    inv.gpus
        .iter()
        .map(|g| GpuView {
            index: g.index,
            uuid: g.uuid.clone(),
            model: g.model.clone(),
            bus_id: g.bus.to_string(),
            minor: g.minor,
            holders: leases
                .iter()
                .filter(|l| l.gpus.contains(&g.uuid))
                .map(|l| HolderView {
                    id: l.holder.container_id.clone(),
                    root: l.holder.root.clone(),
                    pid: l.holder.pid,
                    sharing: l.sharing,
                })
                .collect(),
        })
        .collect()
}

fn holders_cell(h: &[HolderView]) -> String {
    if h.is_empty() {
        return "-".into();
    }
    h.iter()
        .map(|h| {
            let excl = match h.sharing {
                crate::config::Sharing::Exclusive => ", exclusive",
                crate::config::Sharing::Shared => "",
            };
            format!("{} (pid {}, root {}{excl})", h.id, h.pid, h.root.display())
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `gpurun gpus`: the discovered GPUs with the live leases on each.
pub fn gpus(a: &GpusArgs) -> Result<()> {
    let cfg = config()?;
    let inv = inventory(&cfg)?;
    let leases = Leases::new(&cfg.gpus.state_dir)
        .list()
        .map_err(|e| Error::Other(e.to_string()))?;
    let rows = views(&inv, &leases);
    if a.format == "json" {
        let text = serde_json::to_string(&rows).map_err(|e| Error::Other(e.to_string()))?;
        println!("{text}");
        return Ok(());
    }
    let table: Vec<[String; 6]> = rows
        .iter()
        .map(|r| {
            [
                r.index.to_string(),
                r.uuid.clone(),
                r.model.clone(),
                r.bus_id.clone(),
                r.minor.to_string(),
                holders_cell(&r.holders),
            ]
        })
        .collect();
    super::output::print_table(
        &["INDEX", "UUID", "MODEL", "BUS-ID", "MINOR", "HOLDERS"],
        &table,
    );
    Ok(())
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
        (Some(f), Some(e), Some(p)) if f != e => Err(Error::Other(format!(
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
        } => generate(
            output.as_deref(),
            format.as_deref(),
            capabilities.as_deref(),
        ),
    }
}

fn generate(output: Option<&Path>, format: Option<&str>, caps: Option<&str>) -> Result<()> {
    let format = cdi_format(format, output)?;
    let cfg = config()?;
    let caps = caps.unwrap_or(&cfg.nvidia.default_capabilities);
    let caps =
        Capabilities::parse(caps).map_err(|e| Error::Other(format!("--capabilities: {e}")))?;
    let inv = inventory(&cfg)?;
    let spec = crate::gpu::cdi::generate(&inv, caps);
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
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| Error::Other(format!("--output {} names no file", path.display())))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()
    };
    if let Err(e) = write() {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io("writing the CDI spec", &tmp, e));
    }
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io("renaming the CDI spec into place", path, e)
    })
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
