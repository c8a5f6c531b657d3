//! `gpurun install containerd|podman`: write the client's drop-in naming this binary.
//! `gpurun doctor`: check a node (driver, device nodes, cgroups, the device filter, the
//! clients' configuration), one line per check with what to do about a problem.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The first line of every file `gpurun install` writes; a file without it is not ours.
pub const HEADER: &str =
    "# Written by `gpurun install`; it may replace this file. Delete this line to keep your edits.";
pub const CONTAINERD_DROPIN: &str = "/etc/containerd/conf.d/99-gpurun.toml";
pub const PODMAN_DROPIN: &str = "/etc/containers/containers.conf.d/50-gpurun.conf";
/// podman's default `runtime_supports_json`, plus gpurun (a drop-in replaces the list).
const PODMAN_JSON_RUNTIMES: &str =
    r#"["crun", "runc", "kata", "runsc", "youki", "krun", "gpurun"]"#;

#[derive(clap::Args, Debug)]
pub struct InstallArgs {
    /// The client to configure.
    #[arg(value_parser = ["containerd", "podman"])]
    pub client: String,
    /// Print the file instead of writing it.
    #[arg(long)]
    pub dry_run: bool,
    /// Where to write (default: the client's drop-in directory).
    #[arg(long)]
    pub path: Option<PathBuf>,
    /// containerd config version: 2 (containerd 1.6, 1.7), 3 (2.x), or auto.
    #[arg(long, default_value = "auto", value_parser = ["auto", "2", "3"])]
    pub config_version: String,
    /// containerd's main config, whose effective CRI section the drop-in carries.
    #[arg(long, default_value = "/etc/containerd/config.toml")]
    pub containerd_config: PathBuf,
}

fn quoted(p: &Path) -> String {
    serde_json::to_string(&p.to_string_lossy()).unwrap_or_default()
}

/// The containerd drop-in for config `version` 2 or 3 naming `binary` as handler `gpurun`.
pub fn containerd_dropin(binary: &Path, version: u8) -> String {
    let plugin = if version >= 3 {
        "'io.containerd.cri.v1.runtime'"
    } else {
        "\"io.containerd.grpc.v1.cri\""
    };
    let table = format!("[plugins.{plugin}.containerd.runtimes.gpurun]");
    let which = if version >= 3 {
        "containerd 2.x"
    } else {
        "containerd 1.6 and 1.7"
    };
    format!(
        r#"{HEADER}
# gpurun as containerd's runtime handler "gpurun" (config version {version}: {which}).
# containerd reads it when /etc/containerd/config.toml has
#   imports = ["/etc/containerd/conf.d/*.toml"]
# containerd 1.x merges imports section by section: this file's CRI section then replaces
# the main file's. `gpurun install containerd` writes the section in force plus gpurun.
# Pods choose it with a RuntimeClass whose handler is "gpurun".
version = {version}

{table}
  runtime_type = "io.containerd.runc.v2"
  # The device plugin's CDI requests reach gpurun as annotations.
  container_annotations = ["cdi.k8s.io/*"]

{options}
  BinaryName = {bin}
  # gpurun's systemd cgroup driver is not implemented yet: use this handler on nodes
  # whose kubelet has cgroupDriver: cgroupfs.
  SystemdCgroup = false
"#,
        table = table,
        options = table.replace(".gpurun]", ".gpurun.options]"),
        bin = quoted(binary),
    )
}

/// The podman containers.conf drop-in naming `binary` as runtime `gpurun`.
pub fn podman_dropin(binary: &Path) -> String {
    format!(
        r#"{HEADER}
# gpurun as a podman runtime: podman --runtime gpurun run ...
# (or runtime = "gpurun" under [engine] to make it the default).
[engine]
# gpurun writes its errors as JSON lines, so podman reports one clean message.
runtime_supports_json = {PODMAN_JSON_RUNTIMES}

[engine.runtimes]
gpurun = [{bin}]
"#,
        bin = quoted(binary),
    )
}

/// Writes `text` to `path` unless a file there was not written by `gpurun install`.
pub fn write_owned(path: &Path, text: &str) -> Result<()> {
    match std::fs::read_to_string(path) {
        Ok(old) if !old.starts_with(HEADER) => {
            return Err(Error::Other(format!(
                "refusing to overwrite {}: gpurun install did not write it (its first line is \
                 not gpurun's header); move it away or add the gpurun runtime to it by hand",
                path.display()
            )))
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io("reading", path, e)),
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = dir.join(format!(".{name}.gpurun-install"));
    std::fs::write(&tmp, text).map_err(|e| Error::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming into place", path, e))
}

/// containerd's config version: 3 for containerd 2.x, 2 for 1.x or when it is unknown.
fn containerd_config_version() -> u8 {
    let out = std::process::Command::new("containerd")
        .arg("--version")
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    version_from_containerd(&text)
}

/// `containerd --config <main> config dump`: the effective configuration, imports and
/// defaults included (None when containerd is not installed or fails).
fn containerd_dump(main: &Path) -> Option<String> {
    let o = std::process::Command::new("containerd")
        .arg("--config")
        .arg(main)
        .args(["config", "dump"])
        .output()
        .ok()?;
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
}

/// The drop-in built from containerd's effective configuration `dump`: its whole CRI
/// runtime section plus handler `gpurun` (a copy of the runc handler naming `binary`).
/// containerd merges imported files section by section, not key by key, so a drop-in
/// holding only the new handler would replace the main file's CRI settings.
pub fn containerd_dropin_merged(dump: &str, binary: &Path) -> std::result::Result<String, String> {
    use toml::{Table, Value};
    let mut doc: Table = dump
        .parse()
        .map_err(|e| format!("parsing containerd's config: {e}"))?;
    let version = doc.get("version").and_then(Value::as_integer).unwrap_or(1);
    let id = match version {
        2 => "io.containerd.grpc.v1.cri",
        3 => "io.containerd.cri.v1.runtime",
        v => {
            return Err(format!(
                "containerd config version {v} is not supported (run `containerd config migrate`)"
            ))
        }
    };
    let mut cri = doc
        .get_mut("plugins")
        .and_then(|p| p.as_table_mut())
        .and_then(|p| p.remove(id))
        .and_then(|c| match c {
            Value::Table(t) => Some(t),
            _ => None,
        })
        .unwrap_or_default();
    let ctrd = cri
        .entry("containerd")
        .or_insert_with(|| Value::Table(Table::new()));
    let runtimes = ctrd
        .as_table_mut()
        .ok_or("containerd section is not a table")?
        .entry("runtimes")
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .ok_or("runtimes section is not a table")?;
    let mut rt = match runtimes.get("runc") {
        Some(Value::Table(t))
            if t.get("runtime_type").and_then(Value::as_str) == Some("io.containerd.runc.v2") =>
        {
            t.clone()
        }
        _ => Table::new(),
    };
    rt.insert("runtime_type".into(), "io.containerd.runc.v2".into());
    rt.insert(
        "container_annotations".into(),
        Value::Array(vec!["cdi.k8s.io/*".into()]),
    );
    let opts = rt
        .entry("options")
        .or_insert_with(|| Value::Table(Table::new()))
        .as_table_mut()
        .ok_or("runtime options are not a table")?;
    opts.insert(
        "BinaryName".into(),
        binary.to_string_lossy().as_ref().into(),
    );
    opts.insert("SystemdCgroup".into(), false.into());
    runtimes.insert("gpurun".into(), Value::Table(rt));
    let mut plugins = Table::new();
    plugins.insert(id.into(), Value::Table(cri));
    let mut out = Table::new();
    out.insert("version".into(), version.into());
    out.insert("plugins".into(), Value::Table(plugins));
    let body = toml::to_string(&out).map_err(|e| e.to_string())?;
    Ok(format!(
        "{HEADER}\n# containerd's CRI section as it was in force when `gpurun install` ran, plus the\n\
         # runtime handler \"gpurun\" (a copy of runc's naming {}). containerd merges imports\n\
         # section by section, so this whole section is here. Its systemd cgroup driver is not\n\
         # implemented yet: SystemdCgroup = false.\n{body}",
        binary.display()
    ))
}

/// `containerd github.com/containerd/containerd 1.6.20~ds1 …` → 2; `… v2.1.5 …` → 3.
pub fn version_from_containerd(text: &str) -> u8 {
    let major = text
        .split_whitespace()
        .nth(2)
        .map(|v| v.trim_start_matches('v'))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse::<u32>().ok());
    match major {
        Some(m) if m >= 2 => 3,
        _ => 2,
    }
}

/// The file `install` writes for the binary `exe`, and where. For containerd with
/// `--config-version auto` the drop-in carries the effective CRI section (see
/// [`containerd_dropin_merged`]); without a usable `containerd config dump`, or with an
/// explicit version, it is the shipped template.
pub fn install_text(a: &InstallArgs, exe: &Path) -> Result<(String, PathBuf)> {
    let (text, default) = match a.client.as_str() {
        "containerd" => {
            let text = match a.config_version.as_str() {
                "3" => containerd_dropin(exe, 3),
                "2" => containerd_dropin(exe, 2),
                _ => match containerd_dump(&a.containerd_config) {
                    Some(dump) => containerd_dropin_merged(&dump, exe).map_err(Error::Config)?,
                    None => {
                        eprintln!(
                            "gpurun install: `containerd config dump` failed; writing the template. \
                             containerd 1.x replaces the main file's CRI section with an imported \
                             one: merge it into {} by hand",
                            a.containerd_config.display()
                        );
                        containerd_dropin(exe, containerd_config_version())
                    }
                },
            };
            (text, CONTAINERD_DROPIN)
        }
        _ => (podman_dropin(exe), PODMAN_DROPIN),
    };
    Ok((
        text,
        a.path.clone().unwrap_or_else(|| PathBuf::from(default)),
    ))
}

pub fn install(a: &InstallArgs) -> Result<i32> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding", "/proc/self/exe", e))?;
    let (text, path) = install_text(a, &exe)?;
    if a.dry_run {
        eprintln!("gpurun install: dry run; would write {}", path.display());
        print!("{text}");
        return Ok(0);
    }
    write_owned(&path, &text)?;
    println!("wrote {}", path.display());
    if a.client == "containerd" {
        println!(
            "containerd reads it when /etc/containerd/config.toml has imports = [\"{}/*.toml\"]; \
             then restart containerd",
            path.parent().unwrap_or(Path::new("/")).display()
        );
    }
    Ok(0)
}

/// The outcome of one doctor check.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Ok,
    Problem,
    Skip,
}

#[derive(Clone, Debug)]
pub struct Check {
    pub status: Status,
    pub name: &'static str,
    pub detail: String,
    pub fix: Option<String>,
}

fn check(status: Status, name: &'static str, detail: String, fix: Option<&str>) -> Check {
    Check {
        status,
        name,
        detail,
        fix: fix.map(str::to_string),
    }
}

/// Where the node's files are: `/` on a real node, a directory in tests.
pub struct Node {
    pub etc_root: PathBuf,
    pub config: Result<crate::config::Config>,
}

pub fn doctor() -> Result<i32> {
    let node = Node {
        etc_root: PathBuf::from("/"),
        config: crate::config::Config::load().map_err(|e| Error::Config(e.to_string())),
    };
    let checks = run_checks(&node);
    for c in &checks {
        let s = match c.status {
            Status::Ok => "ok",
            Status::Problem => "problem",
            Status::Skip => "skip",
        };
        println!("{s:<8} {}: {}", c.name, c.detail);
        if let Some(f) = &c.fix {
            println!("{:<8} fix: {f}", "");
        }
    }
    Ok(i32::from(
        checks.iter().any(|c| c.status == Status::Problem),
    ))
}

pub fn run_checks(node: &Node) -> Vec<Check> {
    let mut out = Vec::new();
    let cfg = match &node.config {
        Ok(c) => {
            out.push(check(Status::Ok, "configuration", "loaded".into(), None));
            Some(c)
        }
        Err(e) => {
            out.push(check(
                Status::Problem,
                "configuration",
                e.to_string(),
                Some("correct /etc/gpurun/config.toml (or the file GPURUN_CONFIG names)"),
            ));
            None
        }
    };
    if let Some(cfg) = cfg {
        match crate::gpu::discover(&cfg.roots()) {
            Ok(inv) => {
                let gpus: Vec<String> = inv.gpus.iter().map(|g| g.uuid.clone()).collect();
                out.push(check(
                    Status::Ok,
                    "driver",
                    format!(
                        "NVIDIA {} with {} GPU(s): {}",
                        inv.driver_version,
                        gpus.len(),
                        gpus.join(", ")
                    ),
                    None,
                ));
                out.push(check_nodes(&inv));
            }
            Err(e) => out.push(check(
                Status::Problem,
                "driver",
                e.to_string(),
                Some("install and load the NVIDIA driver, or set nvidia.driver-root, dev-root and proc-root in /etc/gpurun/config.toml"),
            )),
        }
    }
    let root = crate::linux::cgroups::CgroupRoot::system();
    match &root {
        Ok(r) => out.push(check(
            Status::Ok,
            "cgroups",
            format!("{:?} layout at {}", r.layout(), r.mount().display()),
            None,
        )),
        Err(e) => out.push(check(
            Status::Problem,
            "cgroups",
            e.to_string(),
            Some("mount cgroup2 at /sys/fs/cgroup (or the v1 controllers below it)"),
        )),
    }
    if let Ok(r) = &root {
        out.push(check_device_filter(r));
    }
    out.extend(check_clients(&node.etc_root));
    out
}

fn check_nodes(inv: &crate::gpu::Inventory) -> Check {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut nodes = vec![&inv.nvidiactl];
    nodes.extend([&inv.uvm, &inv.uvm_tools].into_iter().flatten());
    nodes.extend(inv.gpus.iter().map(|g| &g.node));
    let mut bad = Vec::new();
    for n in &nodes {
        let host = inv
            .roots
            .dev
            .join(n.path.strip_prefix("/").unwrap_or(&n.path));
        match std::fs::metadata(&host) {
            Ok(m) if m.file_type().is_char_device() => {
                let (maj, min) = (
                    nix::sys::stat::major(m.rdev()),
                    nix::sys::stat::minor(m.rdev()),
                );
                if (maj, min) != (u64::from(n.major), u64::from(n.minor)) {
                    bad.push(format!(
                        "{} is {maj}:{min}, not {}:{}",
                        host.display(),
                        n.major,
                        n.minor
                    ));
                }
            }
            Ok(_) => bad.push(format!("{} is not a character device", host.display())),
            Err(e) => bad.push(format!("{}: {e}", host.display())),
        }
    }
    if bad.is_empty() {
        check(
            Status::Ok,
            "device nodes",
            format!("{} present", nodes.len()),
            None,
        )
    } else {
        check(
            Status::Problem,
            "device nodes",
            bad.join("; "),
            Some("create them with nvidia-modprobe (-u -c=0 for nvidia-uvm) or `nvidia-ctk system create-device-nodes`"),
        )
    }
}

/// A throwaway cgroup2 directory with gpurun's device program denying `/dev/zero` and
/// allowing `/dev/null`; a shell moves itself in and opens both.
fn check_device_filter(root: &crate::linux::cgroups::CgroupRoot) -> Check {
    const NAME: &str = "device filter";
    if !nix::unistd::geteuid().is_root() {
        return check(Status::Skip, NAME, "the self-test needs root".into(), None);
    }
    let Some(u) = root.unified() else {
        let v1 = root
            .v1_hierarchies()
            .iter()
            .any(|h| h.controllers.iter().any(|c| c == "devices"));
        return if v1 {
            check(
                Status::Ok,
                NAME,
                "v1 devices controller mounted".into(),
                None,
            )
        } else {
            check(
                Status::Problem,
                NAME,
                "no devices controller and no cgroup2".into(),
                Some("mount the v1 devices controller or cgroup2"),
            )
        };
    };
    let dir = u
        .mountpoint
        .join(format!("gpurun-doctor-{}", std::process::id()));
    let result = device_filter_self_test(&dir);
    let _ = std::fs::remove_dir(&dir);
    match result {
        Ok(()) => check(Status::Ok, NAME, format!("eBPF device program denies and allows on {}", u.mountpoint.display()), None),
        Err(e) => check(Status::Problem, NAME, e,
            Some("gpurun needs bpf(2) with BPF_PROG_TYPE_CGROUP_DEVICE (kernel 4.15+, CONFIG_CGROUP_BPF) and root")),
    }
}

fn device_filter_self_test(dir: &Path) -> std::result::Result<(), String> {
    use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType};
    std::fs::create_dir(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let rule = |allow: bool, typ, major, minor| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access("rwm");
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let (Some(a), Some(i)) = (major, minor) {
            b = b.major(a).minor(i);
        }
        b.build().map_err(|e| e.to_string())
    };
    let rules = vec![
        rule(false, None, None, None)?,
        rule(true, Some(LinuxDeviceType::C), Some(1), Some(3))?,
    ];
    crate::linux::cgroups::apply_device_filter_v2(dir, &rules).map_err(|e| e.to_string())?;
    let procs = dir.join("cgroup.procs");
    let script = format!(
        "echo $$ > '{}' || exit 9; head -c1 /dev/null || exit 10; head -c1 /dev/zero >/dev/null 2>&1 && exit 11; exit 0",
        procs.display()
    );
    let st = std::process::Command::new("/bin/sh")
        .args(["-c", &script])
        .status()
        .map_err(|e| format!("running /bin/sh: {e}"))?;
    match st.code() {
        Some(0) => Ok(()),
        Some(9) => Err(format!("could not join {}", dir.display())),
        Some(10) => Err("the program denied /dev/null, which it allows".into()),
        Some(11) => Err("the program allowed /dev/zero, which it denies".into()),
        _ => Err(format!("the self-test shell ended with {st}")),
    }
}

/// Whether `bin` is on `PATH` (or in an sbin directory root's PATH may lack).
fn in_path(bin: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .any(|d| d.join(bin).is_file())
}

/// Files of `dir` whose name ends with `suffix`, sorted.
fn drop_ins(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.retain(|p| p.to_string_lossy().ends_with(suffix));
    v.sort();
    v
}

/// `(file, gpurun path)` for each file that configures a gpurun binary with `key`.
fn naming_gpurun(files: &[PathBuf], key: &str) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            if k.trim() != key {
                continue;
            }
            let v = v
                .trim()
                .trim_matches(|c| matches!(c, '[' | ']' | '"' | '\'' | ' '));
            if Path::new(v)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("gpurun"))
            {
                out.push((f.clone(), v.to_string()));
            }
        }
    }
    out
}

fn client_check(
    name: &'static str,
    found: Vec<(PathBuf, String)>,
    installed: bool,
    fix: &str,
) -> Check {
    if let Some((file, bin)) = found.first() {
        if !Path::new(bin).is_file() {
            return check(
                Status::Problem,
                name,
                format!("{} names {bin}, which does not exist", file.display()),
                Some(fix),
            );
        }
        return check(
            Status::Ok,
            name,
            format!("{} runs {bin}", file.display()),
            None,
        );
    }
    if !installed {
        return check(Status::Skip, name, "not installed".into(), None);
    }
    check(
        Status::Problem,
        name,
        "no configuration names gpurun".into(),
        Some(fix),
    )
}

fn check_clients(etc: &Path) -> Vec<Check> {
    let has = |bin: &str| in_path(bin);
    let e = |p: &str| etc.join(p);
    let mut ctr = vec![e("etc/containerd/config.toml")];
    ctr.extend(drop_ins(&e("etc/containerd/conf.d"), ".toml"));
    let mut found = naming_gpurun(&ctr, "BinaryName");
    let mut checks = Vec::new();
    let main = std::fs::read_to_string(e("etc/containerd/config.toml")).unwrap_or_default();
    if let Some((f, _)) = found.first() {
        if f.starts_with(e("etc/containerd/conf.d")) && !main.contains("conf.d") {
            checks.push(check(Status::Problem, "containerd",
                format!("{} names gpurun but /etc/containerd/config.toml does not import it", f.display()),
                Some("add imports = [\"/etc/containerd/conf.d/*.toml\"] to /etc/containerd/config.toml and restart containerd")));
            found.clear();
        }
    }
    if checks.is_empty() {
        checks.push(client_check(
            "containerd",
            found,
            has("containerd"),
            "gpurun install containerd, then restart containerd",
        ));
    }
    let mut pod = vec![
        e("usr/share/containers/containers.conf"),
        e("etc/containers/containers.conf"),
    ];
    pod.extend(drop_ins(&e("etc/containers/containers.conf.d"), ".conf"));
    checks.push(client_check(
        "podman",
        naming_gpurun(&pod, "gpurun"),
        has("podman"),
        "gpurun install podman",
    ));
    let mut crio = vec![e("etc/crio/crio.conf")];
    crio.extend(drop_ins(&e("etc/crio/crio.conf.d"), ".conf"));
    checks.push(client_check(
        "cri-o",
        naming_gpurun(&crio, "runtime_path"),
        has("crio"),
        "copy configs/crio/99-gpurun.conf to /etc/crio/crio.conf.d/ and restart crio",
    ));
    checks
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const BIN: &str = "/usr/local/bin/gpurun";

    /// The shipped files are what `gpurun install` writes for the installed binary
    /// (containerd 2.x's v3 drop-in can only be checked this way here: no containerd 2.x).
    #[test]
    fn shipped_configs_are_what_install_writes() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("configs");
        let read = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
        assert_eq!(
            containerd_dropin(Path::new(BIN), 3),
            read("containerd/99-gpurun.v3.toml")
        );
        assert_eq!(
            containerd_dropin(Path::new(BIN), 2),
            read("containerd/99-gpurun.v2.toml")
        );
        assert_eq!(podman_dropin(Path::new(BIN)), read("podman/50-gpurun.conf"));
    }

    #[test]
    fn v3_drop_in_uses_the_new_plugin_id_and_parses() {
        let text = containerd_dropin(Path::new(BIN), 3);
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["version"].as_integer(), Some(3));
        let rt = &v["plugins"]["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]["gpurun"];
        assert_eq!(rt["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
        assert_eq!(rt["options"]["BinaryName"].as_str(), Some(BIN));
        assert_eq!(
            rt["container_annotations"][0].as_str(),
            Some("cdi.k8s.io/*")
        );
        let v2: toml::Value = toml::from_str(&containerd_dropin(Path::new(BIN), 2)).unwrap();
        let rt = &v2["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["gpurun"];
        assert_eq!(rt["options"]["BinaryName"].as_str(), Some(BIN));
    }

    #[test]
    fn merged_drop_in_keeps_the_cri_section_and_copies_runc() {
        let dump = r#"
version = 2
root = "/var/lib/containerd"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "registry.k8s.io/pause:3.6"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = true
        NoNewKeyring = true
[plugins."io.containerd.gc.v1.scheduler"]
  pause_threshold = 0.02
"#;
        let text = containerd_dropin_merged(dump, Path::new(BIN)).unwrap();
        assert!(text.starts_with(HEADER));
        let v: toml::Value = toml::from_str(&text).unwrap();
        assert_eq!(v["version"].as_integer(), Some(2));
        let cri = &v["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("registry.k8s.io/pause:3.6")
        );
        let rts = &cri["containerd"]["runtimes"];
        assert_eq!(
            rts["runc"]["options"]["SystemdCgroup"].as_bool(),
            Some(true)
        );
        let g = &rts["gpurun"];
        assert_eq!(g["options"]["BinaryName"].as_str(), Some(BIN));
        assert_eq!(g["options"]["SystemdCgroup"].as_bool(), Some(false));
        assert_eq!(g["options"]["NoNewKeyring"].as_bool(), Some(true));
        assert_eq!(g["container_annotations"][0].as_str(), Some("cdi.k8s.io/*"));
        // Only the CRI section: other plugins and top-level keys stay the main file's.
        assert!(v.get("root").is_none());
        assert!(v["plugins"].get("io.containerd.gc.v1.scheduler").is_none());
        let err = containerd_dropin_merged("root = \"/x\"\n", Path::new(BIN)).unwrap_err();
        assert!(err.contains("version 1"), "{err}");
    }

    #[test]
    fn containerd_version_picks_the_config_version() {
        assert_eq!(
            version_from_containerd(
                "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1"
            ),
            2
        );
        assert_eq!(
            version_from_containerd("containerd github.com/containerd/containerd/v2 v2.1.5 fcd4"),
            3
        );
        assert_eq!(version_from_containerd(""), 2);
    }

    #[test]
    fn install_writes_its_own_files_and_refuses_others() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("conf.d/99-gpurun.toml");
        write_owned(&p, &containerd_dropin(Path::new(BIN), 2)).unwrap();
        assert!(std::fs::read_to_string(&p).unwrap().starts_with(HEADER));
        // Ours: replaced.
        write_owned(&p, &containerd_dropin(Path::new("/opt/gpurun"), 2)).unwrap();
        assert!(std::fs::read_to_string(&p)
            .unwrap()
            .contains("\"/opt/gpurun\""));
        // Someone else's: left alone, and the error says why.
        let other = t.path().join("containers.conf");
        std::fs::write(&other, "[engine]\n").unwrap();
        let err = write_owned(&other, &podman_dropin(Path::new(BIN)))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refusing to overwrite") && err.contains("containers.conf"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&other).unwrap(), "[engine]\n");
    }

    #[test]
    fn install_dry_run_writes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("50-gpurun.conf");
        let a = InstallArgs {
            client: "podman".into(),
            dry_run: true,
            path: Some(p.clone()),
            config_version: "auto".into(),
            containerd_config: PathBuf::from("/nonexistent"),
        };
        assert_eq!(install(&a).unwrap(), 0);
        assert!(!p.exists());
        let (text, path) = install_text(&a, Path::new("/opt/bin/gpurun")).unwrap();
        assert_eq!(path, p);
        assert!(text.starts_with(HEADER), "{text}");
        assert!(text.contains("gpurun = [\"/opt/bin/gpurun\"]"), "{text}");
        let a = InstallArgs {
            client: "containerd".into(),
            path: None,
            config_version: "3".into(),
            ..a
        };
        let (text, path) = install_text(&a, Path::new("/opt/bin/gpurun")).unwrap();
        assert_eq!(path, Path::new(CONTAINERD_DROPIN));
        assert!(text.contains("io.containerd.cri.v1.runtime"), "{text}");
    }

    #[test]
    fn doctor_reports_driver_nodes_and_clients() {
        let t = tempfile::tempdir().unwrap();
        let fake = crate::gpu::fake::FakeDriver::two_gpus()
            .nodes(crate::gpu::fake::Nodes::Placeholder)
            .build(&t.path().join("host"))
            .unwrap();
        let mut cfg = crate::config::Config::default();
        cfg.nvidia.driver_root = fake.root.clone();
        cfg.nvidia.dev_root = fake.root.clone();
        cfg.nvidia.proc_root = fake.root.clone();
        let etc = t.path().join("etc-root");
        let dropin = etc.join("etc/containerd/conf.d/99-gpurun.toml");
        write_owned(&dropin, &containerd_dropin(Path::new("/no/such/gpurun"), 2)).unwrap();
        let checks = run_checks(&Node {
            etc_root: etc.clone(),
            config: Ok(cfg),
        });
        let by = |n: &str| checks.iter().find(|c| c.name == n).unwrap().clone();
        let d = by("driver");
        assert_eq!(d.status, Status::Ok, "{d:?}");
        assert!(
            d.detail
                .contains("GPU-00000000-0000-0000-0000-000000000000"),
            "{d:?}"
        );
        // Placeholder files are not device nodes: a problem with a fix.
        let n = by("device nodes");
        assert_eq!(n.status, Status::Problem, "{n:?}");
        assert!(n.detail.contains("nvidiactl") && n.fix.is_some(), "{n:?}");
        // The drop-in is not imported by a (missing) main config.
        let c = by("containerd");
        assert_eq!(c.status, Status::Problem, "{c:?}");
        assert!(c.fix.unwrap().contains("imports"));
        std::fs::write(
            etc.join("etc/containerd/config.toml"),
            "imports = [\"/etc/containerd/conf.d/*.toml\"]\n",
        )
        .unwrap();
        let checks = run_checks(&Node {
            etc_root: etc,
            config: Ok(crate::config::Config::default()),
        });
        let c = checks.iter().find(|c| c.name == "containerd").unwrap();
        assert_eq!(c.status, Status::Problem, "{c:?}");
        assert!(c.detail.contains("/no/such/gpurun"), "{c:?}");
        let d = checks.iter().find(|c| c.name == "driver").unwrap();
        assert!(
            d.status == Status::Problem || std::path::Path::new("/proc/driver/nvidia").exists()
        );
    }
}
