//! `/etc/gpurun/config.toml` (or `$GPURUN_CONFIG`): the node's GPU policy and host layout.
//!
//! No file means defaults. Every key is checked: an unknown key is an error that names it,
//! so a typo (`acept-env-when-unprivileged = true`) never silently leaves the default policy
//! in force.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the configuration lives unless `GPURUN_CONFIG` names another file.
pub const DEFAULT_PATH: &str = "/etc/gpurun/config.toml";
/// Where host-wide GPU state lives unless `[gpus] state-dir` says otherwise: runtime
/// state on /run (gone at reboot, as the containers holding it are), beside the default
/// `--root` (`/run/gpurun`), never under it.
pub const DEFAULT_STATE_DIR: &str = "/run/gpurun-gpus";
/// The environment variable that overrides [`DEFAULT_PATH`].
pub const PATH_ENV: &str = "GPURUN_CONFIG";
/// The smallest `[journal] max-size`: below it a single record would rotate every file.
pub const MIN_JOURNAL_SIZE: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading configuration {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing configuration {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("configuration {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct Config {
    pub nvidia: NvidiaConfig,
    pub gpus: GpusConfig,
    pub journal: JournalConfig,
}

/// `[nvidia]`: where the driver lives on this host and what the env contract may do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct NvidiaConfig {
    /// Root of the driver's libraries and binaries (`/run/nvidia/driver` for a driver container).
    pub driver_root: PathBuf,
    /// Parent of the host's `/dev` holding the NVIDIA nodes.
    pub dev_root: PathBuf,
    /// Parent of the host's `/proc`.
    pub proc_root: PathBuf,
    /// Honour `NVIDIA_VISIBLE_DEVICES` from containers without CAP_SYS_ADMIN. Off by
    /// default: otherwise any pod could grant itself every GPU with one variable.
    pub accept_env_when_unprivileged: bool,
    /// Capabilities used when `NVIDIA_DRIVER_CAPABILITIES` is unset or empty.
    pub default_capabilities: String,
    /// Host ldconfig (not run yet; kept so the key is reserved and validated).
    pub ldconfig: PathBuf,
    /// CDI spec directories, lowest priority first: a later directory wins on a conflict.
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// What becomes of NVIDIA's own hooks (`nvidia-cdi-hook`, `nvidia-ctk hook`) in a
    /// spec: done by gpurun itself, or run as given.
    pub hooks: NvidiaHooks,
}

/// `[nvidia] hooks`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NvidiaHooks {
    /// gpurun does their work inside the root and never executes them.
    #[default]
    Native,
    /// They run as the spec gives them, like any other hook.
    Run,
}

impl Default for NvidiaConfig {
    fn default() -> Self {
        Self {
            driver_root: PathBuf::from("/"),
            dev_root: PathBuf::from("/"),
            proc_root: PathBuf::from("/"),
            accept_env_when_unprivileged: false,
            default_capabilities: "utility,compute".to_string(),
            ldconfig: PathBuf::from("/sbin/ldconfig"),
            cdi_spec_dirs: vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
            hooks: NvidiaHooks::Native,
        }
    }
}

/// `[gpus]`: how GPUs are shared between containers and where host-wide state lives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct GpusConfig {
    pub sharing: Sharing,
    /// Host-wide state: leases, the discovery cache and the generated procfs views. Never
    /// under `--root`, where a container id could name it.
    pub state_dir: PathBuf,
}

impl Default for GpusConfig {
    fn default() -> Self {
        Self {
            sharing: Sharing::Shared,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
        }
    }
}

/// Where the GPU journal is kept unless `[journal] dir` says otherwise: persistent
/// storage, since the journal answers questions about jobs that ended before a reboot.
pub const DEFAULT_JOURNAL_DIR: &str = "/var/lib/gpurun";

/// `[journal]`: the record of every GPU grant and release (`gpurun gpus --history`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct JournalConfig {
    /// Off: nothing is recorded (the history command then says so).
    pub enabled: bool,
    pub dir: PathBuf,
    /// Bytes the current file may reach before it is rotated.
    pub max_size: u64,
    /// Rotated files kept beside the current one; older ones are removed.
    pub keep: u32,
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: PathBuf::from(DEFAULT_JOURNAL_DIR),
            max_size: 8 << 20,
            keep: 4,
        }
    }
}

/// Whether a GPU may be held by more than one live container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    #[default]
    Shared,
    Exclusive,
}

impl Sharing {
    pub fn parse(s: &str) -> Option<Sharing> {
        match s {
            "shared" => Some(Sharing::Shared),
            "exclusive" => Some(Sharing::Exclusive),
            _ => None,
        }
    }
}

impl Config {
    /// Loads `$GPURUN_CONFIG` or `/etc/gpurun/config.toml`; a missing file means defaults.
    pub fn load() -> Result<Config, ConfigError> {
        let path = std::env::var_os(PATH_ENV)
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PATH));
        Self::load_from(&path)
    }

    /// Loads one file; a missing file means defaults.
    pub fn load_from(path: &Path) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Config::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let n = &self.nvidia;
        for (key, p) in [
            ("nvidia.driver-root", &n.driver_root),
            ("nvidia.dev-root", &n.dev_root),
            ("nvidia.proc-root", &n.proc_root),
            ("nvidia.ldconfig", &n.ldconfig),
            ("gpus.state-dir", &self.gpus.state_dir),
            ("journal.dir", &self.journal.dir),
        ] {
            if !p.is_absolute() {
                return Err(format!(
                    "{key} must be an absolute path, got {}",
                    p.display()
                ));
            }
        }
        for p in &n.cdi_spec_dirs {
            if !p.is_absolute() {
                return Err(format!(
                    "nvidia.cdi-spec-dirs entries must be absolute paths, got {}",
                    p.display()
                ));
            }
        }
        super::Capabilities::parse(&n.default_capabilities)
            .map_err(|e| format!("nvidia.default-capabilities: {e}"))?;
        if self.journal.max_size < MIN_JOURNAL_SIZE {
            return Err(format!(
                "journal.max-size must be at least {MIN_JOURNAL_SIZE} bytes (one record), got {}",
                self.journal.max_size
            ));
        }
        Ok(())
    }

    /// The host roots discovery reads through.
    pub fn roots(&self) -> super::Roots {
        super::Roots {
            driver: self.nvidia.driver_root.clone(),
            dev: self.nvidia.dev_root.clone(),
            proc: self.nvidia.proc_root.clone(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn from_toml_str(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("<string>"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        let cfg = from_toml_str("").expect("the empty configuration parses");
        assert_eq!(cfg, Config::default());
        assert_eq!(cfg.nvidia.driver_root, PathBuf::from("/"));
        assert_eq!(cfg.nvidia.default_capabilities, "utility,compute");
        assert!(!cfg.nvidia.accept_env_when_unprivileged);
        assert_eq!(cfg.gpus.sharing, Sharing::Shared);
        assert_eq!(cfg.nvidia.hooks, NvidiaHooks::Native);
        assert_eq!(cfg.gpus.state_dir, PathBuf::from("/run/gpurun-gpus"));
        assert_eq!(
            cfg.nvidia.cdi_spec_dirs,
            vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")]
        );
    }

    #[test]
    fn every_key_parses() {
        let cfg = from_toml_str(
            r#"
            [nvidia]
            driver-root = "/run/nvidia/driver"
            dev-root = "/host"
            proc-root = "/hostproc"
            accept-env-when-unprivileged = true
            default-capabilities = "all"
            ldconfig = "/usr/sbin/ldconfig"
            cdi-spec-dirs = ["/etc/cdi"]
            hooks = "run"
            [gpus]
            sharing = "exclusive"
            state-dir = "/var/lib/gpurun"
            [journal]
            enabled = false
            dir = "/srv/gpu-journal"
            max-size = 65536
            keep = 2
            "#,
        )
        .expect("the full configuration parses");
        assert_eq!(cfg.nvidia.driver_root, PathBuf::from("/run/nvidia/driver"));
        assert_eq!(cfg.nvidia.dev_root, PathBuf::from("/host"));
        assert_eq!(cfg.nvidia.proc_root, PathBuf::from("/hostproc"));
        assert!(cfg.nvidia.accept_env_when_unprivileged);
        assert_eq!(cfg.nvidia.hooks, NvidiaHooks::Run);
        assert_eq!(cfg.gpus.sharing, Sharing::Exclusive);
        assert_eq!(cfg.gpus.state_dir, PathBuf::from("/var/lib/gpurun"));
        assert!(!cfg.journal.enabled);
        assert_eq!(cfg.journal.dir, PathBuf::from("/srv/gpu-journal"));
        assert_eq!(cfg.journal.max_size, 65536);
        assert_eq!(cfg.journal.keep, 2);
    }

    #[test]
    fn journal_defaults_and_limits() {
        let cfg = from_toml_str("").expect("the empty configuration parses");
        assert!(cfg.journal.enabled);
        assert_eq!(cfg.journal.dir, PathBuf::from("/var/lib/gpurun"));
        let err = from_toml_str("[journal]\nmax-size = 100\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("journal.max-size"), "{err}");
        let err = from_toml_str("[journal]\ndir = \"rel\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("journal.dir"), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_it() {
        let err = from_toml_str("[nvidia]\nacept-env-when-unprivileged = true\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("acept-env-when-unprivileged"), "{err}");
        let err = from_toml_str("[gpu]\n").unwrap_err().to_string();
        assert!(err.contains("gpu"), "{err}");
    }

    #[test]
    fn bad_values_are_errors() {
        let err = from_toml_str("[gpus]\nsharing = \"sometimes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("sometimes"), "{err}");
        let err = from_toml_str("[nvidia]\nhooks = \"never\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("never"), "{err}");
        let err = from_toml_str("[nvidia]\ndriver-root = \"relative\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("nvidia.driver-root"), "{err}");
        let err = from_toml_str("[nvidia]\ndefault-capabilities = \"compute,gaming\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("gaming"), "{err}");
    }

    #[test]
    fn missing_file_gives_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = Config::load_from(&dir.path().join("absent.toml"))
            .expect("a missing file means the defaults");
        assert_eq!(cfg, Config::default());
    }

    #[test]
    fn unreadable_path_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = Config::load_from(dir.path()).unwrap_err().to_string();
        assert!(err.contains(&dir.path().display().to_string()), "{err}");
    }
}
