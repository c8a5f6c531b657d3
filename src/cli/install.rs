//! `gpurun install containerd|podman`: write the client's drop-in naming this binary.
//! `gpurun doctor` lives in `doctor`.

use std::path::{Path, PathBuf};

use crate::atomic_file::Durability;
use crate::error::{Error, Result};

mod doctor;
pub use doctor::doctor;

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
    crate::atomic_file::write("writing", path, text.as_bytes(), 0o666, Durability::Synced)?;
    Ok(())
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
}
