//! The command line, with runc's verbs, flags and argument shapes. `main` parses, runs,
//! reports and returns the exit code.

mod exec;
mod gpu;
mod gpu_cells;
mod gpu_history;
mod gpu_wait;
mod install;
mod output;
mod ps_gpu;
mod resources;
mod run;

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::error::{Error, Result};
use crate::runtime::{self, CreateOpts, Globals};
use crate::state::Root;

#[derive(Parser, Debug)]
#[command(
    name = "gpurun",
    about = "A small, fast OCI container runtime for GPU jobs",
    disable_version_flag = true
)]
pub struct Cli {
    /// Root directory for container state.
    #[arg(long, default_value = "/run/gpurun")]
    pub root: PathBuf,
    /// Write errors and warnings to this file instead of stderr.
    #[arg(long)]
    pub log: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
    /// Log debug messages.
    #[arg(long)]
    pub debug: bool,
    /// Use the systemd cgroup driver (stored in the state at create).
    #[arg(long)]
    pub systemd_cgroup: bool,
    /// true, false or auto (accepted as runc does).
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_parser = ["true", "false", "auto"])]
    pub rootless: Option<String>,
    /// Print the version.
    #[arg(short = 'v', long)]
    pub version: bool,
    #[command(subcommand)]
    pub cmd: Option<Cmd>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CreateArgs {
    /// Bundle directory (default: the current directory).
    #[arg(short = 'b', long)]
    pub bundle: Option<PathBuf>,
    /// AF_UNIX socket to send the pty master to.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// AF_UNIX socket to send a pidfd of init to (not supported).
    #[arg(long)]
    pub pidfd_socket: Option<PathBuf>,
    /// Write init's pid to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Do not use pivot_root (MS_MOVE and chroot instead).
    #[arg(long)]
    pub no_pivot: bool,
    /// Do not create a new session keyring.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many fds after stdio (and LISTEN_FDS) to the container.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Grant these GPUs without editing config.json: indices, UUIDs, PCI addresses, MIG
    /// names (`1:0`, `MIG-…`) or `all`, comma-separated. Replaces the image's
    /// NVIDIA_VISIBLE_DEVICES.
    #[arg(long, value_name = "DEVICES")]
    pub gpus: Option<String>,
    /// With --gpus: hold the GPUs exclusively (refused while another container holds one).
    #[arg(long, requires = "gpus")]
    pub exclusive: bool,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Create a container; its process waits for `start`.
    Create {
        #[command(flatten)]
        c: CreateArgs,
        id: String,
    },
    /// Start a created container.
    Start { id: String },
    /// Create and start a container. `gpurun run ./bundle` takes a bundle path and
    /// derives the id from its directory name.
    Run {
        #[command(flatten)]
        c: CreateArgs,
        /// Detach: return after start.
        #[arg(short = 'd', long)]
        detach: bool,
        /// Keep the container's state after it exits.
        #[arg(long)]
        keep: bool,
        /// Do not become a subreaper.
        #[arg(long)]
        no_subreaper: bool,
        id: String,
    },
    /// Print a container's state as JSON.
    State { id: String },
    /// Send a signal to a container's init (or, with --all, to every process).
    Kill {
        #[arg(short = 'a', long)]
        all: bool,
        id: String,
        #[arg(default_value = "SIGTERM")]
        signal: String,
    },
    /// Delete a container.
    Delete {
        #[arg(short = 'f', long)]
        force: bool,
        id: String,
    },
    /// List containers.
    List {
        #[arg(short = 'f', long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        #[arg(short = 'q', long)]
        quiet: bool,
    },
    /// List a container's processes.
    Ps {
        #[arg(short = 'f', long, default_value = "table", value_parser = ["table", "json"])]
        format: String,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        ps_args: Vec<String>,
    },
    /// Write a default config.json.
    Spec {
        #[arg(short = 'b', long)]
        bundle: Option<PathBuf>,
        /// Write a spec for a rootless container.
        #[arg(long)]
        rootless: bool,
    },
    /// Print the runtime-spec features document.
    Features,
    /// Run a process in a running container.
    Exec(exec::ExecArgs),
    /// Freeze every process of a container.
    Pause { id: String },
    /// Thaw a paused container.
    Resume { id: String },
    /// Change a running container's resource limits (device rules are left as they are).
    Update(resources::UpdateArgs),
    /// Print a container's cgroup statistics (and OOM events) as JSON lines.
    Events {
        /// Print one stats record and exit.
        #[arg(long)]
        stats: bool,
        /// How often to print stats.
        #[arg(long, default_value = "5s")]
        interval: String,
        id: String,
    },
    /// List this node's GPUs and the containers holding each.
    ///
    /// Columns: index, UUID, model, PCI bus id, device minor, and the holders (container
    /// id, init pid, --root, exclusive or not, since when) from the host-wide lease table;
    /// when the driver's nvidia-smi answers (asked live, with a timeout), memory used/total,
    /// whether each holder uses the GPU or since when it has been seen idle, and the GPU's
    /// processes, each mapped to the container it runs in with its pid there. With --wait,
    /// blocks until a GPU has no holder.
    Gpus(gpu::GpusArgs),
    /// Container Device Interface specs for this node's GPUs.
    Cdi(gpu::CdiArgs),
    /// Enrich the GPU discovery cache with nvidia-smi's answers (started in the background
    /// by a create that found no cache; not for people).
    #[command(name = crate::gpu::REFRESH_VERB, hide = true)]
    RefreshGpus,
    /// Write the containerd or podman drop-in that names this gpurun.
    Install(install::InstallArgs),
    /// Check this node: driver, device nodes, cgroups, device filter, client configs.
    Doctor,
    /// Not supported: gpurun has no CRIU integration.
    Checkpoint {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
    /// Not supported: gpurun has no CRIU integration.
    Restore {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        rest: Vec<String>,
    },
}

/// Callers write `--opt v`, `--opt=v` and, for some flags, `-opt` with one dash
/// (containerd's restore: `-no-subreaper`). Turn a single-dash word that names a long
/// option into its double-dash form; leave short flags alone.
pub fn normalize_args(args: Vec<String>) -> Vec<String> {
    normalize_with(args, &Cli::command())
}

/// Whether a word could be a long option written with one dash.
fn single_dash_word(a: &str) -> bool {
    a.len() > 2 && a.starts_with('-') && !a.starts_with("--")
}

/// [`normalize_args`] against an already built command; the command's option names are
/// only collected when some word needs them.
fn normalize_with(args: Vec<String>, cmd: &clap::Command) -> Vec<String> {
    let end = args.iter().position(|a| a == "--").unwrap_or(args.len());
    if !args.iter().take(end).skip(1).any(|a| single_dash_word(a)) {
        return args;
    }
    let mut longs: Vec<String> = Vec::new();
    let mut collect = |c: &clap::Command| {
        for a in c.get_arguments() {
            if let Some(l) = a.get_long() {
                longs.push(l.to_string());
            }
        }
    };
    collect(cmd);
    for sc in cmd.get_subcommands() {
        collect(sc);
    }
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for (i, a) in args.into_iter().enumerate() {
        if i > 0 && !rest && single_dash_word(&a) {
            let name = a[1..].split('=').next().unwrap_or("");
            if name.len() > 1 && longs.iter().any(|l| l == name) {
                out.push(format!("-{a}"));
                continue;
            }
        }
        if a == "--" {
            rest = true;
        }
        out.push(a);
    }
    out
}

/// The verb of a command line, found without building the parser: the first word that
/// is not a global option or its value. Only a hint (see [`main`]).
fn verb_hint(args: &[String]) -> Option<&str> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let Some(opt) = a.strip_prefix('-') else {
            return Some(a);
        };
        let opt = opt.strip_prefix('-').unwrap_or(opt);
        if opt.contains('=') {
            continue;
        }
        match opt {
            "root" | "log" | "log-format" => {
                it.next();
            }
            "rootless" => {
                let mut peek = it.clone();
                if matches!(
                    peek.next().map(String::as_str),
                    Some("true" | "false" | "auto")
                ) {
                    it.next();
                }
            }
            _ => {}
        }
    }
    None
}

pub fn main() -> i32 {
    let args: Vec<String> = std::env::args().collect();
    // The verbs that enter a container re-execute from a protected copy of the binary
    // first; doing it before the command line is parsed saves parsing it twice. The
    // dispatch below ensures it again, so a wrong hint costs time, never protection.
    if matches!(verb_hint(&args), Some("create" | "run" | "exec")) {
        let _ = crate::process::sealed::ensure();
    }
    let cmd = Cli::command();
    let args = normalize_with(args, &cmd);
    let cli = match cmd
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let json = cli.log_format == "json";
    if let Err(e) = crate::log::init(cli.log.as_deref(), json, cli.debug) {
        eprintln!("gpurun: opening log file: {e}");
        return 1;
    }
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            crate::log::error(&e.to_string());
            1
        }
    }
}

fn globals(cli: &Cli) -> Result<Globals> {
    Ok(Globals {
        root: Root::new(&cli.root)?,
        systemd_cgroup: cli.systemd_cgroup,
        rootless: cli.rootless.as_deref() == Some("true"),
    })
}

fn create_opts(c: &CreateArgs, id: String, foreground: bool) -> Result<CreateOpts> {
    if c.pidfd_socket.is_some() {
        return Err(Error::Config(
            "--pidfd-socket is not supported by gpurun".into(),
        ));
    }
    Ok(CreateOpts {
        foreground,
        id,
        bundle: c.bundle.clone().unwrap_or_else(|| PathBuf::from(".")),
        pid_file: c.pid_file.clone(),
        console_socket: c.console_socket.clone(),
        no_pivot: c.no_pivot,
        no_new_keyring: c.no_new_keyring,
        preserve_fds: c.preserve_fds,
        gpus: c
            .gpus
            .clone()
            .map(|devices| crate::gpu::request::CliRequest {
                devices,
                exclusive: c.exclusive,
            }),
    })
}

fn dispatch(cli: Cli) -> Result<i32> {
    if cli.version {
        print!("{}", output::version());
        return Ok(0);
    }
    let g = globals(&cli)?;
    let Some(cmd) = cli.cmd else {
        let _ = Cli::command().print_help();
        return Ok(1);
    };
    match cmd {
        Cmd::Create { c, id } => {
            crate::process::sealed::ensure()?;
            let opts = create_opts(&c, id, false)?;
            runtime::create(&g, &opts)?;
            Ok(0)
        }
        Cmd::Start { id } => runtime::start(&g, &id).map(|()| 0),
        Cmd::Run {
            c,
            detach,
            keep,
            no_subreaper,
            id,
        } => {
            crate::process::sealed::ensure()?;
            let (id, bundle) = run::resolve_target(&id, c.bundle.clone())?;
            let mut c = c;
            c.bundle = Some(bundle);
            let opts = create_opts(&c, id, !detach)?;
            let run = runtime::RunOpts {
                detach,
                keep,
                no_subreaper,
            };
            runtime::run(&g, &opts, &run)
        }
        Cmd::State { id } => {
            let st = runtime::load_public(&g, &id)?;
            println!(
                "{}",
                serde_json::to_string_pretty(&st).map_err(Error::json("encoding the state"))?
            );
            Ok(0)
        }
        Cmd::Kill { all, id, signal } => {
            let sig = runtime::parse_signal(&signal)?;
            runtime::kill(&g, &id, sig, all).map(|()| 0)
        }
        Cmd::Delete { force, id } => runtime::delete(&g, &id, force).map(|()| 0),
        Cmd::List { format, quiet } => output::list(&g, &format, quiet).map(|()| 0),
        Cmd::Ps {
            format,
            id,
            ps_args,
        } => output::ps(&g, &id, &format, &ps_args).map(|()| 0),
        Cmd::Spec { bundle, rootless } => output::spec(bundle, rootless).map(|()| 0),
        Cmd::Features => {
            println!("{}", crate::features::json());
            Ok(0)
        }
        Cmd::Exec(a) => {
            crate::process::sealed::ensure()?;
            // runc's contract (conmon relies on it): a failure of exec itself is 255.
            match exec::exec(&g, &a) {
                Ok(code) => Ok(code),
                Err(e) => {
                    crate::log::error(&e.to_string());
                    Ok(255)
                }
            }
        }
        Cmd::Pause { id } => runtime::pause(&g, &id).map(|()| 0),
        Cmd::Resume { id } => runtime::resume(&g, &id).map(|()| 0),
        Cmd::Update(a) => resources::update(&g, &a).map(|()| 0),
        Cmd::Events {
            stats,
            interval,
            id,
        } => resources::events(&g, &id, stats, &interval).map(|()| 0),
        Cmd::Gpus(a) => gpu::gpus(&a).map(|()| 0),
        Cmd::RefreshGpus => gpu::refresh_in_background().map(|()| 0),
        Cmd::Cdi(a) => gpu::cdi(&a).map(|()| 0),
        Cmd::Install(a) => install::install(&a),
        Cmd::Doctor => install::doctor(),
        Cmd::Checkpoint { .. } | Cmd::Restore { .. } => Err(Error::Other(
            "checkpoint/restore is not supported by gpurun (no CRIU integration)".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Cli {
        let args = normalize_args(v.iter().map(|s| s.to_string()).collect());
        Cli::try_parse_from(args).expect("parse")
    }

    #[test]
    fn containerd_create_argv_parses() {
        let cli = parse(&[
            "gpurun",
            "--root",
            "/run/containerd/runc/k8s.io",
            "--log",
            "/b/log.json",
            "--log-format",
            "json",
            "create",
            "--bundle",
            "/b",
            "--pid-file",
            "/b/init.pid",
            "abc",
        ]);
        assert_eq!(cli.log_format, "json");
        match cli.cmd {
            Some(Cmd::Create { c, id }) => {
                assert_eq!(id, "abc");
                assert_eq!(c.bundle.as_deref(), Some(std::path::Path::new("/b")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn equals_and_single_dash_long_options_are_accepted() {
        let cli = parse(&[
            "gpurun",
            "--log-format=json",
            "--rootless=true",
            "list",
            "--format=json",
        ]);
        assert_eq!(cli.rootless.as_deref(), Some("true"));
        assert!(matches!(cli.cmd, Some(Cmd::List { ref format, .. }) if format == "json"));
        let cli = parse(&["gpurun", "run", "-no-subreaper", "-d", "x"]);
        assert!(matches!(
            cli.cmd,
            Some(Cmd::Run {
                no_subreaper: true,
                detach: true,
                ..
            })
        ));
    }

    #[test]
    fn kill_and_ps_shapes() {
        let cli = parse(&["gpurun", "kill", "--all", "c1", "9"]);
        assert!(matches!(cli.cmd, Some(Cmd::Kill { all: true, ref signal, .. }) if signal == "9"));
        let cli = parse(&["gpurun", "ps", "c1", "-ef"]);
        assert!(matches!(cli.cmd, Some(Cmd::Ps { ref ps_args, .. }) if ps_args == &["-ef"]));
    }

    #[test]
    fn the_verb_hint_skips_global_options_and_their_values() {
        let v = |a: &[&str]| {
            let args: Vec<String> = a.iter().map(|s| s.to_string()).collect();
            verb_hint(&args).map(str::to_string)
        };
        assert_eq!(
            v(&[
                "gpurun",
                "--root",
                "/r",
                "--log",
                "/l",
                "--log-format",
                "json",
                "create",
                "x"
            ]),
            Some("create".into())
        );
        assert_eq!(
            v(&["gpurun", "--root=/r", "--debug", "run", "x"]),
            Some("run".into())
        );
        assert_eq!(
            v(&["gpurun", "-root", "/r", "exec", "x"]),
            Some("exec".into())
        );
        assert_eq!(
            v(&["gpurun", "--rootless", "true", "run"]),
            Some("run".into())
        );
        assert_eq!(
            v(&["gpurun", "--rootless", "state", "x"]),
            Some("state".into())
        );
        assert_eq!(v(&["gpurun", "--version"]), None);
    }

    #[test]
    fn words_after_a_double_dash_are_not_normalized() {
        let args: Vec<String> = ["gpurun", "exec", "c1", "--", "ps", "-ef"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(normalize_args(args.clone()), args);
        let args: Vec<String> = ["gpurun", "-root", "/r", "list"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(normalize_args(args)[1], "--root");
    }
}
