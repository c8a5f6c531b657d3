//! What init execs: the executable looked up in the container's PATH, and the env with
//! runc's defaults.

use std::path::{Path, PathBuf};

use crate::plan::Plan;
use crate::process::error::{Error, Result};

/// runc fills in HOME from the container's /etc/passwd when the spec leaves it out.
pub(super) fn env_with_defaults(plan: &Plan) -> Vec<String> {
    let mut env = plan.env.clone();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let home = home_of(plan.uid).unwrap_or_else(|| "/".into());
        env.push(format!("HOME={home}"));
    }
    env
}

fn home_of(uid: u32) -> Option<String> {
    let pw = std::fs::read_to_string("/etc/passwd").ok()?;
    pw.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
    })
}

/// `exec: "x": executable file not found in $PATH` is what runc says and what podman
/// maps to exit code 127.
pub fn lookup_executable(arg0: &str, env: &[String], cwd: &Path) -> Result<PathBuf> {
    let is_exec = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if arg0.contains('/') {
        let p = if Path::new(arg0).is_absolute() {
            PathBuf::from(arg0)
        } else {
            cwd.join(arg0)
        };
        if is_exec(&p) {
            return Ok(p);
        }
        return Err(Error::NotExecutable { arg0: arg0.into() });
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let p = Path::new(dir).join(arg0);
        if is_exec(&p) {
            return Ok(p);
        }
    }
    Err(Error::NotInPath { arg0: arg0.into() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_finds_executables_on_path_and_reports_missing_ones() {
        let env = vec!["PATH=/nonexistent:/bin:/usr/bin".to_string()];
        let p = lookup_executable("sh", &env, Path::new("/")).expect("sh");
        assert!(p.ends_with("sh"));
        let err =
            lookup_executable("no-such-binary-xyz", &env, Path::new("/")).expect_err("missing");
        assert!(err
            .to_string()
            .contains("executable file not found in $PATH"));
        let err = lookup_executable("/etc/passwd", &env, Path::new("/")).expect_err("not exec");
        assert!(err.to_string().contains("not an executable"));
    }
}
