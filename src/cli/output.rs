//! What the informational verbs print: version, list, ps, spec.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::runtime::{self, Globals};

pub fn version() -> String {
    format!(
        "gpurun version {}\ncommit: {}\nspec: {}\n",
        env!("CARGO_PKG_VERSION"),
        option_env!("GPURUN_COMMIT").unwrap_or("unknown"),
        crate::features::OCI_VERSION_MAX
    )
}

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(Error::json("encoding the output as JSON"))
}

pub fn list(g: &Globals, format: &str, quiet: bool) -> Result<()> {
    let mut rows = Vec::new();
    for id in g.root.ids()? {
        match runtime::load_public(g, &id) {
            Ok(st) => rows.push(st),
            Err(e) => crate::log::warn(&format!("listing {id}: {e}")),
        }
    }
    if quiet {
        for r in &rows {
            println!("{}", r.id);
        }
        return Ok(());
    }
    if format == "json" {
        println!("{}", json(&rows)?);
        return Ok(());
    }
    let table: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.pid.to_string(),
                r.status.clone(),
                r.bundle.display().to_string(),
                r.created.clone(),
                r.owner.clone(),
                gpus_cell(g, &r.id),
            ]
        })
        .collect();
    print_table(
        &["ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER", "GPUS"],
        &table,
    );
    Ok(())
}

/// The GPUs a container was granted, from its full state (the runc-shaped public state
/// has no such field, and `list --format json` keeps runc's shape).
fn gpus_cell(g: &Globals, id: &str) -> String {
    let path = g.root.dir(id).join(crate::state::STATE_FILE);
    match crate::state::load_file(&path) {
        Ok(st) if !st.gpus.is_empty() => st.gpus.join(","),
        _ => "-".into(),
    }
}

pub(super) fn print_table<const N: usize>(head: &[&str; N], rows: &[[String; N]]) {
    let mut w = [0usize; N];
    for (i, h) in head.iter().enumerate() {
        w[i] = h.len();
    }
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        println!("{}", s.join("   ").trim_end());
    };
    line(head.to_vec());
    for r in rows {
        line(r.iter().map(|s| s.as_str()).collect());
    }
}

pub fn ps(g: &Globals, id: &str, format: &str, args: &[String]) -> Result<()> {
    let pids = runtime::pids(g, id)?;
    if format == "json" {
        println!("{}", json(&pids)?);
        return Ok(());
    }
    let args: Vec<String> = if args.is_empty() {
        vec!["-ef".into()]
    } else {
        args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| Error::io("running", "ps", e))?;
    if !out.status.success() {
        return Err(Error::Other(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let head = lines.next().unwrap_or("");
    let pid_col = head
        .split_whitespace()
        .position(|c| c == "PID")
        .ok_or_else(|| Error::Other("ps output has no PID column".into()))?;
    let rows: Vec<(Option<i32>, &str)> = lines
        .map(|l| {
            let pid = l
                .split_whitespace()
                .nth(pid_col)
                .and_then(|p| p.parse::<i32>().ok());
            (pid, l)
        })
        .filter(|(pid, _)| pid.is_some_and(|p| pids.contains(&p)))
        .collect();
    let marks = super::ps_gpu::marks(g, id);
    super::ps_gpu::print(head, &rows, marks.as_ref());
    Ok(())
}

pub fn spec(bundle: Option<PathBuf>, rootless: bool) -> Result<()> {
    let dir = bundle.unwrap_or_else(|| PathBuf::from("."));
    let path = dir.join("config.json");
    if path.exists() {
        return Err(Error::Other(format!(
            "File {} exists. Remove it first",
            path.display()
        )));
    }
    let v = crate::features::default_spec(rootless);
    let text =
        serde_json::to_string_pretty(&v).map_err(Error::json("encoding the default spec"))?;
    std::fs::write(&path, text + "\n").map_err(|e| Error::io("writing", &path, e))
}
