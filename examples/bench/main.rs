//! `make bench`: gpurun beside runc and crun on one busybox bundle, interleaved.
//!
//! Cases: (a) `run` of /bin/true end to end; (b) `create`, `start`, the wait for the
//! container to exit, and `delete`, as separate invocations; (c) (a) with a GPU granted from
//! a fake driver tree as large as a real driver's (gpurun alone, interleaved with the same
//! run without a grant: the cost of injection); (d) N containers started at once with
//! `run -d`, then deleted at once: time, failures and leftovers.
//!
//! Every measurement runs in a probe process (see `probe.rs`) that reports wall time,
//! user+system CPU and peak RSS of the runtime processes. Needs root. Everything it makes
//! lives in one temporary directory, one `--root` per runtime, and cgroups named
//! `gpurun-bench-<pid>-…`; all of it is removed at the end, on failure and on SIGINT,
//! SIGTERM or SIGHUP too.
//!
//! Usage: bench [--iters N] [--warmup N] [--rounds N] [--concurrency N] [--cases a,b,c,d]
//!              [--runtimes gpurun,runc,crun] [--gpurun PATH] [--out FILE] [--timeout S]
//!        bench --prepare DIR
//! `--prepare DIR` only builds the rootfs, the bundles and the fake GPU node in DIR, prints
//! how to run them, and leaves them there: for counting system calls (`strace -f -c`) or
//! `perf stat` on one bundle without the bench around it.
//! Each flag has an environment variable: BENCH_ITERS, BENCH_WARMUP, BENCH_ROUNDS,
//! BENCH_CONCURRENCY, BENCH_CASES, BENCH_RUNTIMES, GPURUN, BENCH_OUT, BENCH_TIMEOUT.

mod cases;
mod probe;
mod report;
mod setup;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::json;

use setup::{Layout, Runtime, World};

const USAGE: &str = "usage: bench [--iters N] [--warmup N] [--rounds N] [--concurrency N] \
[--cases a,b,c,d] [--runtimes gpurun,runc,crun] [--gpurun PATH] [--out FILE] [--timeout S]
       bench --prepare DIR";

/// Set when SIGINT, SIGTERM or SIGHUP arrives: the bench stops after the measurement in
/// progress and cleans up.
pub static STOP: AtomicBool = AtomicBool::new(false);

pub fn stopped() -> bool {
    STOP.load(Ordering::Relaxed)
}

pub struct Opts {
    pub iters: usize,
    pub warmup: usize,
    pub rounds: usize,
    pub concurrency: usize,
    pub cases: Vec<String>,
    pub runtimes: Vec<String>,
    pub gpurun: PathBuf,
    pub out: PathBuf,
    pub timeout: Duration,
    /// Build the bundles here, print how to use them, and stop.
    pub prepare: Option<PathBuf>,
}

impl Opts {
    fn parse(args: &[String]) -> Result<Opts, String> {
        let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_string());
        let mut o = Opts {
            iters: number(&env("BENCH_ITERS", "50"), "BENCH_ITERS")?,
            warmup: number(&env("BENCH_WARMUP", "3"), "BENCH_WARMUP")?,
            rounds: number(&env("BENCH_ROUNDS", "5"), "BENCH_ROUNDS")?,
            concurrency: number(&env("BENCH_CONCURRENCY", "50"), "BENCH_CONCURRENCY")?,
            cases: list(&env("BENCH_CASES", "a,b,c,d")),
            runtimes: list(&env("BENCH_RUNTIMES", "gpurun,runc,crun")),
            gpurun: std::env::var_os("GPURUN")
                .map(PathBuf::from)
                .unwrap_or_else(beside_bench),
            out: PathBuf::from(env("BENCH_OUT", "target/bench/results.json")),
            timeout: Duration::from_secs(number(&env("BENCH_TIMEOUT", "120"), "BENCH_TIMEOUT")?),
            prepare: None,
        };
        let mut it = args.iter();
        while let Some(flag) = it.next() {
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (flag.as_str(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| it.next().cloned())
                    .ok_or_else(|| format!("{name} needs a value"))
            };
            match name {
                "--iters" => o.iters = number(&value()?, name)?,
                "--warmup" => o.warmup = number(&value()?, name)?,
                "--rounds" => o.rounds = number(&value()?, name)?,
                "--concurrency" => o.concurrency = number(&value()?, name)?,
                "--cases" => o.cases = list(&value()?),
                "--runtimes" => o.runtimes = list(&value()?),
                "--gpurun" => o.gpurun = PathBuf::from(value()?),
                "--out" => o.out = PathBuf::from(value()?),
                "--timeout" => o.timeout = Duration::from_secs(number(&value()?, name)?),
                "--prepare" => o.prepare = Some(PathBuf::from(value()?)),
                _ => return Err(format!("unknown argument {flag}")),
            }
        }
        if let Some(c) = o
            .cases
            .iter()
            .find(|c| !["a", "b", "c", "d"].contains(&c.as_str()))
        {
            return Err(format!("unknown case {c} (cases are a, b, c, d)"));
        }
        if let Some(r) = o
            .runtimes
            .iter()
            .find(|r| !["gpurun", "runc", "crun"].contains(&r.as_str()))
        {
            return Err(format!("unknown runtime {r} (gpurun, runc, crun)"));
        }
        if !o.runtimes.iter().any(|r| r == "gpurun") {
            o.runtimes.insert(0, "gpurun".to_string());
        }
        Ok(o)
    }

    pub fn has_case(&self, c: &str) -> bool {
        self.cases.iter().any(|x| x == c)
    }
}

fn number<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, String> {
    s.trim()
        .parse()
        .map_err(|_| format!("{what}: not a number: {s}"))
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(|x| x.trim().to_string())
        .filter(|x| !x.is_empty())
        .collect()
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--probe") {
        return probe::main(args.get(1).map_or("", String::as_str));
    }
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let opts = match Opts::parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!(
            "bench: needs root: the runtimes create namespaces, cgroups and mounts, and the \
             fake GPU tree needs mknod. Run `make bench` as root."
        );
        return ExitCode::from(2);
    }
    if let Some(dir) = &opts.prepare {
        return match prepare(&opts, dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("bench: {e}");
                ExitCode::FAILURE
            }
        };
    }
    // Before any thread exists: unshare(CLONE_NEWNS) refuses a multithreaded process.
    let host_layout = setup::cgroup_layout();
    if host_layout == Layout::Hybrid {
        if let Err(e) = setup::enter_private_v1_layout() {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        eprintln!("bench: prctl(PR_SET_CHILD_SUBREAPER): {e}");
        return ExitCode::FAILURE;
    }
    let signals = probe::stop_signals();
    if let Err(e) = signals.thread_block() {
        eprintln!("bench: sigprocmask: {e}");
        return ExitCode::FAILURE;
    }
    std::thread::spawn(move || {
        if let Ok(sig) = signals.wait() {
            eprintln!("bench: {sig}: stopping after this measurement and cleaning up");
            STOP.store(true, Ordering::Relaxed);
        }
    });
    match run(&opts, host_layout) {
        Ok(()) if stopped() => ExitCode::from(130),
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The gpurun that `cargo build --release` put beside this program: the bench lives in
/// `<profile>/examples/`, gpurun in `<profile>/`.
fn beside_bench() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("gpurun")))
        .unwrap_or_else(|| PathBuf::from("target/release/gpurun"))
}

fn run(o: &Opts, host_layout: Layout) -> Result<(), String> {
    let gpurun = std::fs::canonicalize(&o.gpurun).map_err(|e| {
        format!(
            "no gpurun binary at {} ({e}): run `cargo build --release` or set GPURUN",
            o.gpurun.display()
        )
    })?;
    if !Path::new(setup::BUSYBOX).exists() {
        return Err(format!(
            "{} is missing: install Debian's busybox-static",
            setup::BUSYBOX
        ));
    }
    let dir = tempfile::Builder::new()
        .prefix("gpurun-bench-")
        .tempdir()
        .map_err(|e| format!("creating a temporary directory: {e}"))?
        .keep();
    // From here on `world`'s drop removes whatever was made.
    let mut world = World {
        dir,
        prefix: format!("gpurun-bench-{}", std::process::id()),
        runtimes: Vec::new(),
    };
    let dir = world.dir.clone();
    println!("bench: preparing in {}", dir.display());

    let rootfs = dir.join("rootfs");
    setup::make_rootfs(&rootfs)?;
    let config = setup::base_config(&gpurun, &dir.join("spec"), &rootfs)?;
    let gpu_dir = dir.join("gpu");
    let gpurun_config = if o.has_case("c") {
        setup::gpu_node(&gpu_dir)?
    } else {
        // No GPU case: still keep gpurun away from the host's /etc/gpurun/config.toml.
        let p = dir.join("config.toml");
        let state = dir.join("gpu-state");
        std::fs::write(
            &p,
            format!("[gpus]\nstate-dir = {:?}\n", state.display().to_string()),
        )
        .map_err(|e| format!("writing {}: {e}", p.display()))?;
        p
    };
    for d in ["logs", "pids"] {
        std::fs::create_dir_all(dir.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }

    let mut notes = Vec::new();
    for name in &o.runtimes {
        let (bin, version, package) = if name == "gpurun" {
            let v = setup::version_of(&gpurun, "gpurun");
            (gpurun.clone(), v, None)
        } else {
            let Some(bin) = setup::find_program(name) else {
                notes.push(format!("{name}: not installed, left out"));
                continue;
            };
            let v = setup::version_of(&bin, name);
            (bin, v, setup::package_version(name))
        };
        let root = dir.join(format!("root-{name}"));
        std::fs::create_dir_all(&root).map_err(|e| format!("mkdir {}: {e}", root.display()))?;
        let env = if name == "gpurun" {
            vec![(
                "GPURUN_CONFIG".to_string(),
                gpurun_config.display().to_string(),
            )]
        } else {
            Vec::new()
        };
        world.runtimes.push(Runtime {
            name: name.clone(),
            bin,
            version,
            package,
            root,
            env,
        });
    }

    let mut bundles = cases::Bundles::write(&dir, &config)?;
    if o.has_case("c") {
        bundles.add_applied(&dir, &config, &gpu_dir.join("host"))?;
    }
    cases::preflight(&mut world, &bundles, &mut notes)?;
    let injected = if o.has_case("c") {
        Some(cases::check_injection(&world, &bundles)?)
    } else {
        None
    };

    let peers: Vec<String> = world
        .runtimes
        .iter()
        .filter(|r| r.name != "gpurun")
        .map(|r| {
            let short = r.label().replace('-', " ");
            match &r.package {
                Some(p) => format!("{}'s {short} (package {p})", os_short()),
                None => format!("{short} ({})", r.bin.display()),
            }
        })
        .collect();
    let load_start = load_average();
    let machine = setup_machine(host_layout);
    let header_text = format!(
        "gpurun {} beside {}\nmachine: {}\n{} iterations per case after {} warm-up, interleaved; \
         (d): {} rounds of {} containers",
        world
            .runtimes
            .first()
            .map(|r| r.version.as_str())
            .unwrap_or(""),
        if peers.is_empty() {
            "no peer runtime".to_string()
        } else {
            peers.join(" and ")
        },
        machine["summary"].as_str().unwrap_or(""),
        o.iters,
        o.warmup,
        o.rounds,
        o.concurrency,
    );
    println!("{header_text}");
    for n in &notes {
        println!("note: {n}");
    }

    let mut results = Vec::new();
    for case in ["a", "b", "c", "d"] {
        if !o.has_case(case) || stopped() {
            continue;
        }
        let start = std::time::Instant::now();
        let series = match case {
            "a" => cases::run_case(&world, o, &bundles)?,
            "b" => cases::lifecycle_case(&world, o, &bundles)?,
            "c" => cases::gpu_case(&world, o, &bundles, &gpu_dir)?,
            _ => cases::concurrent_case(&world, o, &bundles)?,
        };
        println!(
            "case {case} done in {:.1} s{}",
            start.elapsed().as_secs_f64(),
            if stopped() { " (interrupted)" } else { "" }
        );
        results.extend(series);
    }

    let load_end = load_average();
    println!();
    println!("{header_text}");
    println!("load average (1 min) at start {load_start}, at end {load_end}: other work on the machine shows up as noise");
    if let Some(n) = &injected {
        println!("(c) injects {n}");
    }
    println!();
    print!("{}", report::tables(&results));
    print!("{}", report::notes(&results));
    println!(
        "wall: median/min/max ms per iteration; cpu_ms: median user+sys of the runtime \
         processes and what they reaped; maxrss_kb: median peak RSS of the largest of them; \
         ratios: median over the peer's median in the same case."
    );
    let runtimes: Vec<_> = world
        .runtimes
        .iter()
        .map(|r| {
            json!({"name": r.name, "label": r.label(), "path": r.bin, "version": r.version,
                   "debian_package": r.package})
        })
        .collect();
    let header = json!({
        "machine": machine,
        "runtimes": runtimes,
        "settings": {
            "iterations": o.iters, "warmup": o.warmup, "rounds": o.rounds,
            "concurrency": o.concurrency, "cases": o.cases,
        },
        "injection": injected,
        "load_average_1min": {"start": load_start, "end": load_end},
        "notes": notes,
        "interrupted": stopped(),
    });
    report::write_json(&o.out, &report::json(header, &results))?;
    println!("results: {}", o.out.display());
    drop(world);
    Ok(())
}

/// `--prepare DIR`: the rootfs, the bundles and the fake GPU node the cases use, left in
/// `dir` for measuring one runtime call by hand.
fn prepare(o: &Opts, dir: &Path) -> Result<(), String> {
    let gpurun = std::fs::canonicalize(&o.gpurun)
        .map_err(|e| format!("no gpurun binary at {} ({e})", o.gpurun.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let dir = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let rootfs = dir.join("rootfs");
    if rootfs.exists() {
        return Err(format!(
            "{} exists: give an empty directory",
            rootfs.display()
        ));
    }
    setup::make_rootfs(&rootfs)?;
    let config = setup::base_config(&gpurun, &dir.join("spec"), &rootfs)?;
    let gpu_config = setup::gpu_node(&dir.join("gpu"))?;
    let b = cases::Bundles::write(&dir, &config)?;
    let s = |p: &Path| p.display().to_string();
    println!(
        "bundles: {} (plain), {} (GPU 0 granted), {} (checks the injection)\n\
         gpurun's config (the fake driver): GPURUN_CONFIG={}\n\
         for example, as the bench sees cgroups on a hybrid host:\n  \
         unshare -m --propagation private sh -c 'mount -t tmpfs -o size=16m tmpfs \
         /sys/fs/cgroup/unified && GPURUN_CONFIG={} strace -f -c {} --root {} run -b {} c1'",
        s(&b.plain),
        s(&b.gpu),
        s(&b.gpu_check),
        s(&gpu_config),
        s(&gpu_config),
        s(&gpurun),
        s(&dir.join("root")),
        s(&b.gpu),
    );
    Ok(())
}

/// The 1-minute load average.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split(' ')
        .next()
        .unwrap_or("?")
        .to_string()
}

/// "Debian 12", from os-release's ID and VERSION_ID.
fn os_short() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    let id = field("ID=");
    let mut chars = id.chars();
    let id = chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect::<String>())
        .unwrap_or_default();
    format!("{id} {}", field("VERSION_ID=")).trim().to_string()
}

fn setup_machine(host_layout: Layout) -> serde_json::Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let os = read("/etc/os-release")
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|s| s.trim_matches('"').to_string())
        .unwrap_or_default();
    let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|s| s.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let used = setup::cgroup_layout();
    let layout = if host_layout == Layout::Hybrid && used == Layout::V1 {
        "hybrid host; measured in a private mount namespace with an empty tmpfs over \
         /sys/fs/cgroup/unified (pure v1 for every runtime)"
            .to_string()
    } else {
        format!("{} (as the host has it)", used.name())
    };
    json!({
        "summary": format!("{cpus} CPUs ({cpu}), {os}, kernel {kernel}, cgroups: {layout}"),
        "cpus": cpus, "cpu": cpu, "os": os, "kernel": kernel,
        "host_cgroups": host_layout.name(), "measured_cgroups": used.name(),
    })
}
