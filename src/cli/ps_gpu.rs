//! `gpurun ps ID`'s table marks the container's processes that hold GPU memory, so a
//! user can match the host's `nvidia-smi` with `ps` inside the job. A leading `GPU`
//! column holds `<gpu>=<MiB>` for each device the process uses (`0=300MiB`, a MIG device
//! as `1:0=13MiB`) and `-` for the others; one word a cell, so a script that finds the
//! columns by their heads still finds them. A container granted no GPU gets runc's table
//! unchanged, and nvidia-smi is only asked for one that was granted some; when it cannot
//! be asked, the table is printed unmarked with a warning.

use std::collections::BTreeMap;

use crate::gpu::nvml::parse::ComputeApp;
use crate::gpu::Inventory;
use crate::runtime::Globals;

/// For each host pid nvidia-smi lists, its cell; `None` when the table stays unmarked.
pub fn marks(g: &Globals, id: &str) -> Option<BTreeMap<i32, String>> {
    let path = g.root.dir(id).join(crate::state::STATE_FILE);
    let granted = crate::state::load_file(&path).ok()?.gpus;
    if granted.is_empty() {
        return None;
    }
    match ask() {
        Ok(m) => Some(m),
        Err(e) => {
            crate::log::warn_caller(&format!("processes holding GPU memory not marked: {e}"));
            None
        }
    }
}

fn ask() -> Result<BTreeMap<i32, String>, String> {
    let cfg = crate::gpu::config::Config::load().map_err(|e| e.to_string())?;
    let inv = crate::gpu::discover_cached(&cfg).map_err(|e| e.to_string())?;
    let live =
        crate::gpu::nvml::live(&inv, crate::gpu::nvml::LIVE_TIMEOUT).map_err(|e| e.to_string())?;
    let mut out: BTreeMap<i32, String> = BTreeMap::new();
    for app in &live.apps {
        let cell = cell(&inv, app);
        out.entry(app.pid)
            .and_modify(|c| {
                c.push(',');
                c.push_str(&cell);
            })
            .or_insert(cell);
    }
    Ok(out)
}

/// `0=300MiB`: the device as `NVIDIA_VISIBLE_DEVICES` names it (index, `gpu:mig` for a
/// MIG device, else its UUID) and the memory nvidia-smi reports.
fn cell(inv: &Inventory, app: &ComputeApp) -> String {
    let gpu = inv
        .gpus
        .iter()
        .find(|g| g.uuid.eq_ignore_ascii_case(&app.gpu_uuid))
        .map(|g| g.index.to_string());
    let mig = || {
        let m = inv.mig_devices.iter().find(|m| {
            m.uuid
                .as_deref()
                .is_some_and(|u| u.eq_ignore_ascii_case(&app.gpu_uuid))
        })?;
        let parent = inv.gpu_by_minor(m.parent_minor)?;
        Some(match m.index {
            Some(i) => format!("{}:{i}", parent.index),
            None => parent.index.to_string(),
        })
    };
    let name = gpu.or_else(mig).unwrap_or_else(|| app.gpu_uuid.clone());
    match app.used_mib {
        Some(m) => format!("{name}={m}MiB"),
        None => name,
    }
}

/// Prints `ps`'s head and the container's rows, with the `GPU` column first when marked.
pub fn print(head: &str, rows: &[(Option<i32>, &str)], marks: Option<&BTreeMap<i32, String>>) {
    let Some(marks) = marks else {
        println!("{head}");
        rows.iter().for_each(|(_, l)| println!("{l}"));
        return;
    };
    let cells: Vec<&str> = rows
        .iter()
        .map(|(pid, _)| pid.and_then(|p| marks.get(&p)).map_or("-", String::as_str))
        .collect();
    let width = cells.iter().map(|c| c.len()).max().unwrap_or(0).max(3);
    println!("{:<width$}  {head}", "GPU");
    for ((_, line), cell) in rows.iter().zip(cells) {
        println!("{cell:<width$}  {line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::fake::{FakeDriver, Nodes};

    #[test]
    fn a_cell_names_the_device_as_a_request_does_and_its_memory() {
        let t = tempfile::tempdir().expect("tempdir");
        let f = FakeDriver::two_gpus()
            .nodes(Nodes::Placeholder)
            .build(&t.path().join("host"))
            .expect("fake tree");
        let inv = crate::gpu::discover(&crate::gpu::Roots::at(&f.root)).expect("discovery");
        let app = |uuid: &str, used_mib| ComputeApp {
            pid: 7,
            gpu_uuid: uuid.into(),
            used_mib,
        };
        let second = inv.gpus[1].uuid.to_ascii_uppercase();
        assert_eq!(cell(&inv, &app(&second, Some(300))), "1=300MiB");
        assert_eq!(cell(&inv, &app("GPU-x", Some(5))), "GPU-x=5MiB");
        assert_eq!(cell(&inv, &app("GPU-x", None)), "GPU-x");
    }
}
