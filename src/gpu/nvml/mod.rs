//! NVML enrichment: what procfs cannot say — the CUDA driver version, each GPU's compute
//! capability and brand, MIG device UUIDs and indices — asked of NVML through the driver's
//! own NVML client, `nvidia-smi`, run as a short-lived child.
//!
//! Why a child and not `dlopen("libnvidia-ml.so.1")`: gpurun is linked statically against
//! glibc, and a static glibc binary cannot safely load a dynamic library that needs the
//! dynamic libc (two libcs in one process, no working `dlopen` of libc itself). A child
//! also keeps a hung driver from hanging gpurun: it gets a hard timeout, after which its
//! process group is killed and it is reaped; and whatever NVML does to its own process
//! (threads, signal handlers, file descriptors) stays there.
//!
//! The binary is the one discovery found under the configured driver root (never the
//! container image's, never one found through anyone's `$PATH`), run with an explicit
//! minimal environment (see [`Smi::env`]: nothing of the caller's), stdin from `/dev/null`
//! and working directory `/`. Enrichment runs when discovery runs — on a cache miss — and its facts are cached
//! with the inventory, so a container start with a valid cache never runs it.

pub mod child;
pub mod owner;
pub mod parse;
pub mod xml;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::inventory::Inventory;
use parse::{ComputeApp, Listed, Query};

/// How long one nvidia-smi run may take during discovery. NVML initialises every GPU
/// that no persistence daemon keeps initialised, which takes seconds on a large node.
pub const TIMEOUT: Duration = Duration::from_secs(20);
/// How long `gpurun gpus` waits for its live query.
pub const LIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// The XML log of a large node is a few hundred KiB; more than this is not nvidia-smi.
const MAX_OUTPUT: usize = 16 << 20;
const SMI: &str = "nvidia-smi";

pub use super::inventory::Enrichment;

#[derive(Debug, thiserror::Error)]
pub enum SmiError {
    #[error("no {SMI} under the driver root {0}")]
    Absent(PathBuf),
    #[error(transparent)]
    Child(#[from] child::ChildError),
    #[error("{program} {args}: exited with {status}: {output}")]
    Failed {
        program: PathBuf,
        args: String,
        status: std::process::ExitStatus,
        output: String,
    },
    #[error("{program} {args}: unreadable output: {message}")]
    Parse {
        program: PathBuf,
        args: String,
        message: String,
    },
}

impl SmiError {
    fn timed_out(&self) -> bool {
        matches!(self, SmiError::Child(child::ChildError::TimedOut { .. }))
    }
}

/// The driver root's nvidia-smi and how to run it.
#[derive(Clone, Debug)]
pub struct Smi {
    pub program: PathBuf,
    pub env: Vec<(String, OsString)>,
    pub timeout: Duration,
}

impl Smi {
    /// The nvidia-smi discovery found in the driver root.
    pub fn for_inventory(inv: &Inventory, timeout: Duration) -> Result<Smi, SmiError> {
        let program = inv
            .binaries
            .iter()
            .find(|b| b.name == SMI)
            .map(|b| b.host_path.clone())
            .ok_or_else(|| SmiError::Absent(inv.roots.driver.clone()))?;
        Ok(Smi {
            program,
            env: Self::env(inv),
            timeout,
        })
    }

    /// `PATH` (fixed), `LC_ALL=C` (stable number formats), and — only when the driver lives
    /// under another root (a driver container) — `LD_PRELOAD` naming, by absolute path, that
    /// root's own `libnvidia-ml.so.<version>`. nvidia-smi opens `libnvidia-ml.so.1` by name;
    /// the loader hands it the already loaded object with that SONAME, so the binary uses the
    /// library of its own driver while everything else (libc above all) comes from the host,
    /// whose loader runs it. Pointing `LD_LIBRARY_PATH` at the root's library directory
    /// instead would also pull in that root's libc when it is a whole distribution (the GPU
    /// operator's driver container), against the host's loader. Nothing comes from the
    /// caller's environment.
    pub fn env(inv: &Inventory) -> Vec<(String, OsString)> {
        let mut env = vec![
            (
                "PATH".to_string(),
                OsString::from("/usr/sbin:/usr/bin:/sbin:/bin"),
            ),
            ("LC_ALL".to_string(), OsString::from("C")),
        ];
        if inv.roots.driver != Path::new("/") {
            let lib = inv
                .libraries
                .iter()
                .find(|l| l.prefix == "libnvidia-ml.so" && !l.lib32)
                .map(|l| l.host_path.as_os_str())
                // The loader splits LD_PRELOAD at spaces and colons.
                .filter(|p| {
                    !p.as_encoded_bytes()
                        .iter()
                        .any(|b| matches!(b, b' ' | b':'))
                });
            if let Some(lib) = lib {
                env.push(("LD_PRELOAD".to_string(), lib.to_owned()));
            }
        }
        env
    }

    /// Runs `nvidia-smi args…`; a non-zero exit is an error quoting its output.
    pub fn run(&self, args: &[&str]) -> Result<String, SmiError> {
        let out = child::run(&self.program, args, &self.env, self.timeout, MAX_OUTPUT)?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let mut output = format!("{} {}", String::from_utf8_lossy(&out.stderr), stdout);
            output = output.split_whitespace().collect::<Vec<_>>().join(" ");
            if output.len() > 300 {
                let mut cut = 300;
                while !output.is_char_boundary(cut) {
                    cut -= 1;
                }
                output.truncate(cut);
            }
            return Err(SmiError::Failed {
                program: self.program.clone(),
                args: args.join(" "),
                status: out.status,
                output,
            });
        }
        Ok(stdout)
    }

    fn parse_error(&self, args: &[&str], message: String) -> SmiError {
        SmiError::Parse {
            program: self.program.clone(),
            args: args.join(" "),
            message,
        }
    }

    /// `nvidia-smi -q -x`.
    pub fn query(&self) -> Result<Query, SmiError> {
        let args = ["-q", "-x"];
        parse::query_xml(&self.run(&args)?).map_err(|m| self.parse_error(&args, m))
    }

    /// `nvidia-smi -L`.
    pub fn list(&self) -> Result<Vec<Listed>, SmiError> {
        Ok(parse::list(&self.run(&["-L"])?))
    }

    /// `--query-gpu=uuid,compute_cap`; drivers before the field existed refuse the query.
    pub fn compute_caps(&self) -> Result<Vec<(String, Option<String>)>, SmiError> {
        let text = self.run(&["--query-gpu=uuid,compute_cap", "--format=csv,noheader"])?;
        Ok(parse::compute_caps(&text))
    }
}

/// Asks the driver root's nvidia-smi for the facts procfs cannot give and writes them into
/// `inv` (and how it went into `inv.enrichment`). Never fails: what it cannot learn stays
/// `None`, with a note saying why. A run that times out ends the enrichment (a hung driver
/// would hang the next run as well).
pub fn enrich(inv: &mut Inventory, timeout: Duration) {
    let mut e = Enrichment::default();
    match Smi::for_inventory(inv, timeout) {
        Ok(smi) => {
            e.smi = Some(smi.program.clone());
            ask(inv, &smi, &mut e);
        }
        Err(err) => e.notes.push(format!(
            "{err}: CUDA version, compute capability, brand and MIG UUIDs are unknown"
        )),
    }
    inv.enrichment = e;
}

fn ask(inv: &mut Inventory, smi: &Smi, e: &mut Enrichment) {
    match smi.query() {
        Ok(q) => apply_query(inv, &q, e),
        Err(err) => {
            if fail(e, err) {
                return;
            }
        }
    }
    if !inv.mig_devices.is_empty() {
        match smi.list() {
            Ok(l) => apply_list(inv, &l),
            Err(err) => {
                if fail(e, err) {
                    return;
                }
            }
        }
    }
    match smi.compute_caps() {
        Ok(caps) => {
            for (uuid, cc) in caps {
                if let Some(g) = inv
                    .gpus
                    .iter_mut()
                    .find(|g| g.uuid.eq_ignore_ascii_case(&uuid))
                {
                    g.compute_capability = cc;
                }
            }
        }
        Err(SmiError::Failed { output, .. }) if parse::is_unknown_field_error(&output) => {
            e.notes
                .push("this driver's nvidia-smi has no compute_cap field".to_string());
        }
        Err(err) => {
            fail(e, err);
        }
    }
    note_unknowns(inv, e);
}

/// Records a failed run; true when it hung (the rest is not asked).
fn fail(e: &mut Enrichment, err: SmiError) -> bool {
    e.failed = true;
    let hung = err.timed_out();
    e.notes.push(err.to_string());
    hung
}

fn apply_query(inv: &mut Inventory, q: &Query, e: &mut Enrichment) {
    inv.cuda_version = q.cuda_version.clone();
    if let Some(v) = q
        .driver_version
        .as_deref()
        .filter(|v| *v != inv.driver_version)
    {
        e.notes.push(format!(
            "nvidia-smi reports driver {v}, the kernel module {}",
            inv.driver_version
        ));
    }
    for qg in &q.gpus {
        let found = inv.gpus.iter_mut().find(|g| match (&qg.uuid, &qg.bus) {
            (Some(u), _) => g.uuid.eq_ignore_ascii_case(u),
            (None, Some(b)) => g.bus == *b,
            (None, None) => false,
        });
        let Some(g) = found else { continue };
        g.brand = qg.brand.clone();
        let minor = g.minor;
        for qm in &qg.mig {
            let m = inv
                .mig_devices
                .iter_mut()
                .find(|m| (m.parent_minor, m.gi, m.ci) == (minor, qm.gi, qm.ci));
            match m {
                Some(m) => m.index = Some(qm.index),
                None => e.notes.push(format!(
                    "nvidia-smi lists MIG device gi{}/ci{} of GPU minor {minor}, which has no \
                     capability files: it cannot be injected",
                    qm.gi, qm.ci
                )),
            }
        }
    }
}

fn apply_list(inv: &mut Inventory, listed: &[Listed]) {
    for lg in listed {
        let Some(minor) = inv
            .gpus
            .iter()
            .find(|g| g.uuid.eq_ignore_ascii_case(&lg.uuid))
            .map(|g| g.minor)
        else {
            continue;
        };
        for lm in &lg.mig {
            let m = inv.mig_devices.iter_mut().find(|m| {
                m.parent_minor == minor
                    && match lm.legacy_ids {
                        Some(ids) => (m.gi, m.ci) == ids,
                        None => lm.index.is_some() && m.index == lm.index,
                    }
            });
            if let Some(m) = m {
                m.uuid = Some(lm.uuid.clone());
            }
        }
    }
}

fn note_unknowns(inv: &Inventory, e: &mut Enrichment) {
    if inv.cuda_version.is_none() {
        e.notes.push("no CUDA version reported".into());
    }
    let missing = |f: &dyn Fn(&super::inventory::Gpu) -> bool| -> Vec<String> {
        inv.gpus
            .iter()
            .filter(|g| f(g))
            .map(|g| g.uuid.clone())
            .collect()
    };
    for (what, gpus) in [
        (
            "compute capability",
            missing(&|g| g.compute_capability.is_none()),
        ),
        ("brand", missing(&|g| g.brand.is_none())),
    ] {
        if !gpus.is_empty() {
            e.notes
                .push(format!("{what} unknown for {}", gpus.join(", ")));
        }
    }
    let nameless: Vec<String> = inv
        .mig_devices
        .iter()
        .filter(|m| m.uuid.is_none())
        .map(|m| format!("gpu{}/gi{}/ci{}", m.parent_minor, m.gi, m.ci))
        .collect();
    if !nameless.is_empty() {
        e.notes
            .push(format!("no MIG UUID for {}", nameless.join(", ")));
    }
}

/// What `gpurun gpus` shows live: memory per GPU and the processes using GPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Live {
    /// (GPU UUID, used MiB, total MiB).
    pub memory: Vec<(String, Option<u64>, Option<u64>)>,
    pub apps: Vec<ComputeApp>,
}

/// Asks nvidia-smi now (not the cache) for memory use and GPU processes.
pub fn live(inv: &Inventory, timeout: Duration) -> Result<Live, SmiError> {
    let smi = Smi::for_inventory(inv, timeout)?;
    let memory = parse::memory(&smi.run(&[
        "--query-gpu=uuid,memory.used,memory.total",
        "--format=csv,noheader,nounits",
    ])?);
    let apps = parse::compute_apps(&smi.run(&[
        "--query-compute-apps=pid,gpu_uuid,used_memory",
        "--format=csv,noheader,nounits",
    ])?);
    Ok(Live { memory, apps })
}
