//! Images built offline from static binaries: a pause image for CRI sandboxes (a tiny
//! static C program) and a busybox image, written as docker-archive tarballs that
//! `ctr images import` and `podman load` both read; and the same busybox tree as a plain
//! directory for `--rootfs`.

use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Debian's busybox-static.
pub const BUSYBOX: &str = "/bin/busybox";
/// Tags of the images [`build_all`] writes.
pub const PAUSE_TAG: &str = "localhost/gpurun-test/pause:1";
pub const BUSYBOX_TAG: &str = "localhost/gpurun-test/busybox:1";

/// The busybox applets the tests call, linked in `/bin`.
const APPLETS: &[&str] = &[
    "sh", "cat", "echo", "sleep", "ls", "id", "grep", "head", "readlink", "tty", "stat", "true",
    "false", "wc", "env", "test", "hostname", "mount", "dd", "stty", "tr", "cut", "unshare",
];

const PAUSE_C: &str = r#"
#include <signal.h>
#include <unistd.h>
static void done(int sig) { (void)sig; _exit(0); }
int main(void) {
    signal(SIGTERM, done);
    signal(SIGINT, done);
    for (;;) pause();
}
"#;

/// Compiles the pause program with `cc -static` into `dir/pause`.
pub fn pause_binary(dir: &Path) -> io::Result<PathBuf> {
    let src = dir.join("pause.c");
    let out = dir.join("pause");
    std::fs::write(&src, PAUSE_C)?;
    let o = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .output()?;
    if !o.status.success() {
        return Err(io::Error::other(format!(
            "cc -static pause.c: {}",
            String::from_utf8_lossy(&o.stderr)
        )));
    }
    Ok(out)
}

/// One image layer, built in memory as an uncompressed tar.
pub struct Layer {
    b: tar::Builder<Vec<u8>>,
}

impl Default for Layer {
    fn default() -> Self {
        Self::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        let mut b = tar::Builder::new(Vec::new());
        b.mode(tar::HeaderMode::Deterministic);
        Layer { b }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h
    }

    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, mode, 0);
        self.b.append_data(&mut h, path, io::empty())
    }

    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, mode, data.len() as u64);
        self.b.append_data(&mut h, path, data)
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.b.append_link(&mut h, path, target)
    }

    pub fn into_bytes(self) -> io::Result<Vec<u8>> {
        self.b.into_inner()
    }
}

/// `(path, mode, content)` of each file and `(link, target)` of each symlink.
type Tree = (Vec<(String, u32, Vec<u8>)>, Vec<(String, String)>);

/// The files of a minimal busybox root.
fn busybox_tree() -> io::Result<Tree> {
    let files = vec![
        ("bin/busybox".to_string(), 0o755, std::fs::read(BUSYBOX)?),
        (
            "etc/passwd".to_string(),
            0o644,
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
        ),
        (
            "etc/group".to_string(),
            0o644,
            b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
        ),
    ];
    let links = APPLETS
        .iter()
        .map(|a| (format!("bin/{a}"), "busybox".to_string()))
        .collect();
    Ok((files, links))
}

const ROOT_DIRS: &[(&str, u32)] = &[
    ("bin", 0o755),
    ("dev", 0o755),
    ("etc", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("tmp", 0o1777),
    ("root", 0o700),
    ("run", 0o755),
    ("usr", 0o755),
    ("usr/lib", 0o755),
    // Debian-like (as CUDA's Ubuntu images are): GPU libraries go to the multiarch dir.
    ("usr/lib/x86_64-linux-gnu", 0o755),
    ("var", 0o755),
];

/// The busybox root as a layer.
pub fn busybox_layer() -> io::Result<Vec<u8>> {
    let mut l = Layer::new();
    for (d, m) in ROOT_DIRS {
        l.dir(d, *m)?;
    }
    let (files, links) = busybox_tree()?;
    for (p, m, data) in &files {
        l.file(p, *m, data)?;
    }
    for (p, t) in &links {
        l.symlink(p, t)?;
    }
    l.into_bytes()
}

/// The pause root: just `/pause`.
pub fn pause_layer(pause: &Path) -> io::Result<Vec<u8>> {
    let mut l = Layer::new();
    for d in ["dev", "proc", "sys", "etc"] {
        l.dir(d, 0o755)?;
    }
    l.file("pause", 0o755, &std::fs::read(pause)?)?;
    l.into_bytes()
}

/// The busybox root as a directory at `dir` (for `--rootfs`).
pub fn busybox_rootfs(dir: &Path) -> io::Result<()> {
    for (d, m) in ROOT_DIRS {
        let p = dir.join(d);
        std::fs::create_dir_all(&p)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*m))?;
    }
    let (files, links) = busybox_tree()?;
    for (p, m, data) in files {
        let p = dir.join(p);
        std::fs::write(&p, data)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m))?;
    }
    for (p, t) in links {
        symlink(t, dir.join(p))?;
    }
    Ok(())
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a docker-archive tarball (`manifest.json`, the config, one layer) to `out`.
pub fn docker_archive(
    out: &Path,
    tag: &str,
    layer: &[u8],
    entrypoint: &[&str],
    cmd: &[&str],
) -> io::Result<()> {
    let diff_id = sha256_hex(layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2026-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Entrypoint": if entrypoint.is_empty() { serde_json::Value::Null } else { entrypoint.into() },
            "Cmd": if cmd.is_empty() { serde_json::Value::Null } else { cmd.into() },
            "WorkingDir": "/",
        },
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{diff_id}")] },
        "history": [{ "created": "2026-01-01T00:00:00Z", "created_by": "gpurun integration harness" }],
    });
    let config = serde_json::to_vec(&config).map_err(io::Error::other)?;
    let config_name = format!("{}.json", sha256_hex(&config));
    let layer_name = format!("{diff_id}/layer.tar");
    let manifest = serde_json::to_vec(&serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": [layer_name],
    }]))
    .map_err(io::Error::other)?;

    let mut l = Layer::new();
    l.dir(&diff_id, 0o755)?;
    l.file(&layer_name, 0o644, layer)?;
    l.file(&config_name, 0o644, &config)?;
    l.file("manifest.json", 0o644, &manifest)?;
    std::fs::write(out, l.into_bytes()?)
}

/// The two test images, written under `dir`: `(pause.tar, busybox.tar)`.
pub fn build_all(dir: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let pause = pause_binary(dir)?;
    let pause_tar = dir.join("pause.tar");
    docker_archive(
        &pause_tar,
        PAUSE_TAG,
        &pause_layer(&pause)?,
        &["/pause"],
        &[],
    )?;
    let busybox_tar = dir.join("busybox.tar");
    docker_archive(&busybox_tar, BUSYBOX_TAG, &busybox_layer()?, &[], &["sh"])?;
    Ok((pause_tar, busybox_tar))
}
