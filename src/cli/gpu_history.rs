//! `gpurun gpus --history [GPU|ID] [--since …] [--format json]`: the GPU journal, one line
//! a record, oldest first; a release line says how the job ended as far as gpurun saw it.

use std::time::SystemTime;

use crate::error::{Error, Result};
use crate::gpu::config::Config;
use crate::gpu::journal::query::{self, Filter, Target};
use crate::gpu::journal::{Event, History, Journal, Record};

pub fn print(target: &str, since: Option<&str>, format: &str) -> Result<()> {
    let cfg = Config::load().map_err(|e| Error::Config(e.to_string()))?;
    let journal = Journal::new(&cfg.journal);
    if !journal.enabled() {
        return Err(Error::Other(
            "the GPU journal is off (journal.enabled = false in the node configuration)".into(),
        ));
    }
    let filter = Filter {
        target: resolve(target, &cfg)?,
        since_ms: since
            .map(|s| query::parse_since(s, SystemTime::now()))
            .transpose()
            .map_err(Error::Usage)?,
    };
    let history = journal
        .read()
        .map_err(|e| Error::Other(format!("reading the GPU journal: {e}")))?;
    if history.skipped > 0 {
        crate::log::warn_caller(&format!(
            "{} damaged or unknown line(s) of the GPU journal in {} skipped",
            history.skipped,
            journal.dir().display()
        ));
    }
    let shown: Vec<usize> = (0..history.records.len())
        .filter(|&i| filter.matches(&history.records[i]))
        .collect();
    if format == "json" {
        return print_json(&history, &shown);
    }
    print_table(&history, &shown);
    Ok(())
}

/// A GPU as `--gpus` and `--wait` name one (a UUID as it is, since the journal may name
/// GPUs this node no longer has; an index, PCI address or MIG device through discovery),
/// else a container id; empty selects everything.
fn resolve(target: &str, cfg: &Config) -> Result<Option<Target>> {
    use crate::gpu::request::{self, DeviceId};
    if target.is_empty() {
        return Ok(None);
    }
    let id = match DeviceId::parse(target) {
        Ok(DeviceId::GpuUuid(u)) => return Ok(Some(Target::Gpu(u))),
        Ok(
            id @ (DeviceId::Index(_)
            | DeviceId::Bus(_)
            | DeviceId::MigUuid(_)
            | DeviceId::MigIndex(..)),
        ) => id,
        _ => return Ok(Some(Target::Container(target.to_string()))),
    };
    let inv = crate::gpu::discover_cached(cfg)?;
    let sel = request::resolve(std::slice::from_ref(&id), &inv)
        .map_err(|e| Error::Usage(format!("--history {target}: {e}")))?;
    match sel.gpus.as_slice() {
        [g] => Ok(Some(Target::Gpu(g.uuid.clone()))),
        _ => Err(Error::Usage(format!(
            "--history {target}: this node has no such GPU"
        ))),
    }
}

/// The records as a JSON array; a release also carries `ended`, the summary of how the
/// job ended.
fn print_json(h: &History, shown: &[usize]) -> Result<()> {
    let mut out = Vec::with_capacity(shown.len());
    for &i in shown {
        let mut v = serde_json::to_value(&h.records[i])
            .map_err(Error::json("encoding a GPU journal record"))?;
        if let (Event::Release(_), Some(obj)) = (&h.records[i].event, v.as_object_mut()) {
            obj.insert("ended".into(), query::ending(&h.records, i).into());
        }
        out.push(v);
    }
    let text = serde_json::to_string(&out).map_err(Error::json("encoding the GPU journal"))?;
    println!("{text}");
    Ok(())
}

fn print_table(h: &History, shown: &[usize]) {
    let rows: Vec<[String; 5]> = shown
        .iter()
        .map(|&i| {
            let r = &h.records[i];
            [
                super::gpu_cells::to_the_second(&r.time),
                crate::gpu::journal::event_name(&r.event).to_string(),
                r.container.clone(),
                r.gpus.join(","),
                detail(&h.records, i),
            ]
        })
        .collect();
    super::output::print_table(&["TIME", "EVENT", "CONTAINER", "GPUS", "DETAIL"], &rows);
}

fn detail(records: &[Record], i: usize) -> String {
    let r = &records[i];
    match &r.event {
        Event::Grant(g) => {
            let mut parts = vec![format!("init pid {}", g.pid)];
            parts.push(format!("{:?}", g.sharing).to_lowercase());
            if let Some(img) = g
                .image
                .get("io.kubernetes.cri.image-name")
                .or_else(|| g.image.get("org.opencontainers.image.ref.name"))
            {
                parts.push(format!("image {img}"));
            }
            if let Some(p) = &g.pod {
                let ns = p.namespace.as_deref().unwrap_or("?");
                parts.push(format!("pod {ns}/{}", p.name.as_deref().unwrap_or("?")));
            }
            if let Some(d) = &g.config_sha256 {
                parts.push(format!("config.json {d}"));
            }
            parts.push(format!("bundle {}", g.bundle.display()));
            parts.join(", ")
        }
        Event::Kill(k) => {
            let all = if k.all { " to every process" } else { "" };
            format!("{}{all} sent by {}", k.signal, query::who(&k.caller))
        }
        Event::Exit { status } => format!("init exited, status {status}"),
        Event::Release(_) => query::ending(records, i),
    }
}
