//! Security cases on the fake tree (research §5): hostile rootfs symlinks never make the
//! probe or the edits use host paths; destinations are lexical and clean; hostile CDI
//! paths and driver-root symlinks stay confined.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use gpurun::config::Config;
use gpurun::gpu::edits::library_dirs;
use gpurun::gpu::fake::{self, FakeDriver, LIB_DIR, VERSION};
use gpurun::gpu::paths::is_clean_absolute;
use gpurun::gpu::{self, Roots};
use oci_spec::runtime::Spec;

struct Case {
    t: tempfile::TempDir,
    host: PathBuf,
    rootfs: PathBuf,
}

fn case() -> Case {
    let t = tempfile::tempdir().unwrap();
    let host = FakeDriver::two_gpus()
        .build(&t.path().join("host"))
        .unwrap()
        .root;
    let rootfs = t.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("usr/lib")).unwrap();
    Case { t, host, rootfs }
}

fn inject(c: &Case) -> Spec {
    let inv = gpu::discover(&Roots::at(&c.host)).unwrap();
    let mut s = fake::spec(&["NVIDIA_VISIBLE_DEVICES=0"], true, &[]);
    gpu::inject(
        &mut s,
        &c.rootfs,
        "c1",
        &c.t.path().join("gen"),
        &Config::default(),
        &inv,
    )
    .unwrap()
    .unwrap();
    s
}

/// Every destination clean and absolute; every source under the driver root, the proc
/// root or the generated directory (never elsewhere on the host).
fn assert_confined(c: &Case, s: &Spec) {
    for m in s
        .mounts()
        .iter()
        .flatten()
        .filter(|m| m.typ().as_deref() == Some("bind"))
    {
        let d = m.destination();
        assert!(is_clean_absolute(d), "destination {}", d.display());
        let src = m.source().clone().unwrap();
        assert!(
            src.starts_with(&c.host) || src.starts_with(c.t.path().join("gen")),
            "source {} escapes",
            src.display()
        );
    }
}

#[test]
fn lib_dir_symlink_climbing_out_of_the_rootfs_is_resolved_inside_it() {
    let c = case();
    symlink("/../../..", c.rootfs.join(LIB_DIR)).unwrap();
    // Inside the rootfs `/../../..` is `/`, a directory: Debian-like, and the destination
    // stays the lexical /usr/lib/x86_64-linux-gnu (the runtime resolves it in-root).
    assert_eq!(library_dirs(&c.rootfs).lib64, "/usr/lib/x86_64-linux-gnu");
    let s = inject(&c);
    assert_confined(&c, &s);
    assert!(s
        .mounts()
        .iter()
        .flatten()
        .any(|m| m.destination() == Path::new("/usr/lib/x86_64-linux-gnu/libcuda.so.1")));
}

#[test]
fn lib_dir_symlink_to_an_absolute_host_path_does_not_use_the_host() {
    let c = case();
    // A directory that exists on the host but not inside the rootfs.
    let host_dir = c.t.path().join("host-only-libs");
    std::fs::create_dir_all(&host_dir).unwrap();
    symlink(&host_dir, c.rootfs.join(LIB_DIR)).unwrap();
    assert_eq!(
        library_dirs(&c.rootfs).lib64,
        "/usr/lib64",
        "not Debian-like: the target is not in the rootfs"
    );
    let s = inject(&c);
    assert_confined(&c, &s);
    for m in s.mounts().iter().flatten() {
        assert!(
            !m.destination().starts_with(&host_dir),
            "{}",
            m.destination().display()
        );
    }
    assert_eq!(
        std::fs::read_dir(&host_dir).unwrap().count(),
        0,
        "nothing written on the host"
    );
}

#[test]
fn usr_symlink_to_host_root_is_not_followed() {
    let c = case();
    std::fs::remove_dir_all(c.rootfs.join("usr")).unwrap();
    // /usr → / on the host would make /usr/lib/x86_64-linux-gnu the host's own.
    symlink("/", c.rootfs.join("usr")).unwrap();
    let dirs = library_dirs(&c.rootfs);
    assert_eq!(
        dirs.lib64, "/usr/lib64",
        "the rootfs itself has no lib/x86_64-linux-gnu"
    );
    assert_confined(&c, &inject(&c));
}

#[test]
fn probe_never_writes_to_the_rootfs() {
    let c = case();
    let before: Vec<_> = walk(&c.rootfs);
    inject(&c);
    assert_eq!(walk(&c.rootfs), before);
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_path_buf()];
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.file_type().unwrap().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn driver_root_symlinks_escaping_the_root_are_confined() {
    let c = case();
    let lib = c.host.join(LIB_DIR);
    // The SONAME link points far above the driver root; a host /etc copy must not be used.
    std::fs::remove_file(lib.join("libnvidia-ml.so.1")).unwrap();
    symlink(
        format!("/../../../../../etc/libnvidia-ml.so.{VERSION}"),
        lib.join("libnvidia-ml.so.1"),
    )
    .unwrap();
    std::fs::remove_file(lib.join(format!("libnvidia-ml.so.{VERSION}"))).unwrap();
    symlink(
        "/etc/hostname",
        lib.join(format!("libnvidia-ml.so.{VERSION}")),
    )
    .unwrap();
    let inv = gpu::discover(&Roots::at(&c.host)).unwrap();
    for l in &inv.libraries {
        assert!(
            l.host_path.starts_with(&c.host),
            "{}",
            l.host_path.display()
        );
    }
    assert!(!inv.libraries.iter().any(|l| l.prefix == "libnvidia-ml.so"));
}

#[test]
fn hostile_cdi_container_paths_are_refused() {
    let c = case();
    let dir = c.t.path().join("cdi");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("evil.json"),
        r#"{"cdiVersion":"0.3.0","kind":"evil.com/x","devices":[{"name":"a","containerEdits":{"mounts":[{"hostPath":"/etc","containerPath":"/usr/../../../etc","options":["rbind"]}]}}]}"#,
    )
    .unwrap();
    let mut cfg = Config::default();
    cfg.nvidia.cdi_spec_dirs = vec![dir];
    let inv = gpu::discover(&Roots::at(&c.host)).unwrap();
    let mut s = fake::spec(&[], false, &[("cdi.k8s.io/x", "evil.com/x=a")]);
    let e = gpu::inject(&mut s, &c.rootfs, "c1", &c.t.path().join("gen"), &cfg, &inv).unwrap_err();
    assert!(e.to_string().contains("unsafe path"), "{e}");
}

#[test]
fn image_env_does_not_reach_anything_gpurun_would_run() {
    // gpurun runs no helper during injection; a hostile LD_PRELOAD in the image changes
    // nothing in the edits beyond the container's own env.
    let c = case();
    let inv = gpu::discover(&Roots::at(&c.host)).unwrap();
    let mut plain = fake::spec(&["NVIDIA_VISIBLE_DEVICES=0"], true, &[]);
    let mut hostile = fake::spec(
        &[
            "NVIDIA_VISIBLE_DEVICES=0",
            "LD_PRELOAD=/proc/self/cwd/poc.so",
        ],
        true,
        &[],
    );
    let gen = c.t.path().join("gen");
    gpu::inject(&mut plain, &c.rootfs, "c1", &gen, &Config::default(), &inv).unwrap();
    gpu::inject(
        &mut hostile,
        &c.rootfs,
        "c1",
        &gen,
        &Config::default(),
        &inv,
    )
    .unwrap();
    assert_eq!(plain.mounts(), hostile.mounts());
    assert_eq!(plain.hooks(), hostile.hooks());
    assert!(hostile.hooks().is_none());
}
