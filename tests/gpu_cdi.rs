//! CDI: strict parsing (JSON and YAML), the registry, applying devices through
//! annotations, NVIDIA hooks, and `generate` round trips.

#![allow(clippy::unwrap_used)]

mod gpu_support;

use std::path::{Path, PathBuf};

use gpurun::config::Config;
use gpurun::gpu::cdi::{self, CdiSpec, Format, Registry};
use gpurun::gpu::fake::{self, FakeDriver, VERSION};
use gpurun::gpu::{self, Capabilities, Inventory, RequestSource, Roots};
use oci_spec::runtime::Spec;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/gpu/cdi")
        .join(name)
}

fn mount_src(s: &Spec, dest: &str) -> Option<PathBuf> {
    s.mounts()
        .iter()
        .flatten()
        .find(|m| m.destination() == Path::new(dest))
        .and_then(|m| m.source().clone())
}

fn devices(s: &Spec) -> Vec<String> {
    gpu_support::device_paths(s)
}

#[test]
fn parses_yaml_and_json_fixtures() {
    let y = CdiSpec::parse(
        &std::fs::read_to_string(fixture("acme.yaml")).unwrap(),
        Format::Yaml,
    )
    .unwrap();
    assert_eq!(y.kind, "acme.example.com/fpga");
    assert_eq!(
        y.devices[0].container_edits.device_nodes[0].major,
        Some(240)
    );
    assert_eq!(y.container_edits.as_ref().unwrap().additional_gids, [44]);
    let j = CdiSpec::parse(
        &std::fs::read_to_string(fixture("nvidia.json")).unwrap(),
        Format::Json,
    )
    .unwrap();
    assert_eq!(j.devices.len(), 2);
    assert_eq!(j.container_edits.as_ref().unwrap().hooks.len(), 3);
}

#[test]
fn strict_errors() {
    let base = r#"{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu","devices":[{"name":"0","containerEdits":{"env":["A=1"]}}]}"#;
    assert!(CdiSpec::parse(base, Format::Json).is_ok());
    let cases: &[(&str, &str)] = &[
        (
            r#""devices":[{"name":"0","containerEdits":{"env":["A=1"]}}], "extra": 1"#,
            "extra",
        ),
        (
            r#""devices":[{"name":"0","containerEdits":{"env":["A=1"],"bogus":[]}}]"#,
            "bogus",
        ),
        (
            r#""devices":[{"name":"0","containerEdits":{"env":["A=1"]}}], "cdiVersion2":"x""#,
            "cdiVersion2",
        ),
    ];
    for (tail, needle) in cases {
        let text = format!(r#"{{"cdiVersion":"0.5.0","kind":"nvidia.com/gpu",{tail}}}"#);
        let e = CdiSpec::parse(&text, Format::Json).unwrap_err();
        assert!(e.contains(needle), "{needle}: {e}");
    }
    let bad =
        |from: &str, to: &str| CdiSpec::parse(&base.replace(from, to), Format::Json).unwrap_err();
    assert!(bad("0.5.0", "0.2.0").contains("cdiVersion"));
    assert!(bad("0.5.0", "9.9.9").contains("cdiVersion"));
    // A device name starting with a digit needs 0.5.0.
    assert!(bad("0.5.0", "0.4.0").contains("0.5.0"));
    assert!(bad("nvidia.com/gpu", "nvidia.com").contains("kind"));
    assert!(bad("nvidia.com/gpu", "nvidia.com/-gpu").contains("class"));
    assert!(bad(r#""name":"0""#, r#""name":"a b""#).contains("device name"));
    assert!(bad(r#"{"env":["A=1"]}"#, "{}").contains("no container edits"));
    assert!(bad(r#""env":["A=1"]"#, r#""env":["A"]"#).contains("KEY=VALUE"));
    assert!(bad(r#""env":["A=1"]"#, r#""deviceNodes":[{"path":"dev/x"}]"#).contains("absolute"));
    assert!(bad(
        r#""env":["A=1"]"#,
        r#""deviceNodes":[{"path":"/dev/x","permissions":"rwx"}]"#
    )
    .contains("permissions"));
    assert!(bad(
        r#""env":["A=1"]"#,
        r#""hooks":[{"hookName":"prestart","path":"/bin/true"}]"#
    )
    .contains("hookName"));
    assert!(bad(
        r#""env":["A=1"]"#,
        r#""mounts":[{"hostPath":"/a","containerPath":"b"}]"#
    )
    .contains("containerPath"));
    assert!(bad(r#""env":["A=1"]"#, r#""additionalGids":[5]"#).contains("0.7.0"));
    let yaml_err = CdiSpec::parse(
        "cdiVersion: 0.5.0\nkind: a.com/b\ndevices: []\nsurprise: 1\n",
        Format::Yaml,
    )
    .unwrap_err();
    assert!(yaml_err.contains("surprise"), "{yaml_err}");
}

#[test]
fn registry_priority_conflicts_and_load_errors() {
    let t = tempfile::tempdir().unwrap();
    let (etc, run) = (t.path().join("etc"), t.path().join("run"));
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&run).unwrap();
    let spec = |env: &str| {
        format!(
            r#"{{"cdiVersion":"0.3.0","kind":"vendor.com/dev","devices":[{{"name":"a","containerEdits":{{"env":["{env}"]}}}}]}}"#
        )
    };
    std::fs::write(etc.join("v.json"), spec("FROM=etc")).unwrap();
    std::fs::write(run.join("v.json"), spec("FROM=run")).unwrap();
    std::fs::write(run.join("broken.yaml"), "cdiVersion: [").unwrap();
    std::fs::write(run.join("ignored.txt"), "not a spec").unwrap();
    let r = Registry::load(&[etc.clone(), run.clone()]);
    let (s, d) = r.lookup("vendor.com/dev=a").unwrap();
    assert_eq!(
        r.specs[s].1.devices[d].container_edits.env,
        ["FROM=run"],
        "the later directory wins"
    );
    assert_eq!(r.errors.len(), 1);
    let e = r.lookup("vendor.com/dev=b").unwrap_err();
    assert!(
        e.contains("vendor.com/dev=b") && e.contains("broken.yaml"),
        "{e}"
    );
    // Same directory twice: a conflict.
    std::fs::write(etc.join("w.json"), spec("FROM=etc2")).unwrap();
    let r = Registry::load(&[etc]);
    assert!(r.lookup("vendor.com/dev=a").unwrap_err().contains("both"));
}

struct Env {
    _t: tempfile::TempDir,
    rootfs: PathBuf,
    gen: PathBuf,
    cfg: Config,
    inv: Inventory,
}

fn env() -> Env {
    let t = tempfile::tempdir().unwrap();
    let f = FakeDriver::two_gpus()
        .build(&t.path().join("host"))
        .unwrap();
    let cdi_dir = t.path().join("cdi");
    std::fs::create_dir_all(&cdi_dir).unwrap();
    for f in ["acme.yaml", "nvidia.json"] {
        std::fs::copy(fixture(f), cdi_dir.join(f)).unwrap();
    }
    let mut cfg = Config::default();
    cfg.nvidia.cdi_spec_dirs = vec![cdi_dir];
    Env {
        rootfs: fake::rootfs(t.path(), true).unwrap(),
        gen: t.path().join("gen"),
        inv: gpu::discover(&Roots::at(&f.root)).unwrap(),
        cfg,
        _t: t,
    }
}

#[test]
fn annotation_devices_are_applied_with_spec_edits_and_foreign_hooks() {
    let e = env();
    let mut s = fake::spec(
        &["NVIDIA_VISIBLE_DEVICES=all"],
        true,
        &[("cdi.k8s.io/acme_x", "acme.example.com/fpga=fpga0")],
    );
    let inj = gpu::inject(&mut s, &e.rootfs, "c1", &e.gen, &e.cfg, &e.inv)
        .unwrap()
        .unwrap();
    assert_eq!(
        inj.grant.source,
        RequestSource::CdiAnnotations,
        "annotations beat env"
    );
    assert_eq!(inj.grant.cdi_devices, ["acme.example.com/fpga=fpga0"]);
    assert!(inj.grant.gpus.is_empty());
    assert_eq!(devices(&s), ["/dev/acme-fpga0"]);
    let rules: Vec<String> = s
        .linux()
        .as_ref()
        .unwrap()
        .resources()
        .as_ref()
        .unwrap()
        .devices()
        .clone()
        .unwrap()
        .iter()
        .map(|r| r.to_string())
        .collect();
    assert_eq!(rules, ["c 240:0 rw"]);
    assert_eq!(
        mount_src(&s, "/usr/lib/acme/libacme.so.1"),
        Some(PathBuf::from("/opt/acme/lib/libacme.so.1"))
    );
    let env = gpu::request::env_map(&s);
    assert_eq!(env.get("ACME_FPGA").map(String::as_str), Some("0"));
    assert_eq!(env.get("ACME_RUNTIME").map(String::as_str), Some("1"));
    let hooks = s
        .hooks()
        .as_ref()
        .unwrap()
        .create_container()
        .clone()
        .unwrap();
    assert_eq!(hooks[0].path(), Path::new("/opt/acme/bin/acme-hook"));
    assert_eq!(
        hooks[0].env().as_deref(),
        Some(&[][..]),
        "explicit empty env, never inherited"
    );
    let gids = s
        .process()
        .as_ref()
        .unwrap()
        .user()
        .additional_gids()
        .clone()
        .unwrap();
    assert_eq!(gids, [44]);
    // No NVIDIA files for a non-NVIDIA device.
    assert_eq!(mount_src(&s, "/proc/driver/nvidia"), None);
}

#[test]
fn nvidia_spec_hooks_are_skipped_and_their_work_done_natively() {
    let e = env();
    let mut s = fake::spec(
        &[],
        false,
        &[("cdi.k8s.io/nvidia-device-plugin_1234", "nvidia.com/gpu=1")],
    );
    let inj = gpu::inject(&mut s, &e.rootfs, "c1", &e.gen, &e.cfg, &e.inv)
        .unwrap()
        .unwrap();
    assert_eq!(devices(&s), ["/dev/nvidia1", "/dev/nvidiactl"]);
    // The GPU is identified from its node, for the lease.
    assert_eq!(inj.grant.gpus, ["GPU-11111111-1111-1111-1111-111111111111"]);
    // The spec's NVIDIA hooks join the spec as given, then leave it with their work done.
    let mut cfg = e.cfg.clone();
    cfg.gpus.state_dir = e.gen.parent().unwrap().to_path_buf();
    let t = gpu::nvhooks::Target {
        rootfs: &e.rootfs,
        cover: "proc-driver-cover",
    };
    let work = gpu::nvhooks::handle(&mut s, &t, &cfg).unwrap();
    let left: usize = s
        .hooks()
        .iter()
        .flat_map(|h| h.create_container().clone())
        .flatten()
        .count();
    assert_eq!(left, 0, "no NVIDIA hook is left to run");
    let native = work
        .log
        .iter()
        .filter(|l| l.contains("[nvidia-hook-native]"));
    assert_eq!(native.count(), 3, "{:?}", work.log);
    // create-symlinks: links made inside the root by init, listed for it in the spec.
    let links = gpu::nvhooks::read_links(&s);
    let lib = "/usr/lib/x86_64-linux-gnu";
    for (target, link) in [
        (
            format!("libcuda.so.{VERSION}"),
            format!("{lib}/libcuda.so.1"),
        ),
        ("libcuda.so.1".to_string(), format!("{lib}/libcuda.so")),
        (
            "/nonexistent/libfoo.so".to_string(),
            format!("{lib}/libfoo.so"),
        ),
    ] {
        assert!(links.contains(&(target, link.clone())), "{link}: {links:?}");
    }
    // update-ldcache: a generated cache over the image's (the fixture's host library
    // does not exist here, so the cache holds no entry for it).
    let cache = mount_src(&s, "/etc/ld.so.cache").expect("the generated cache is mounted");
    gpu::ldcache::read(&cache)
        .unwrap()
        .expect("a cache glibc's format");
    // disable-device-node-modification: the generated params file.
    let gen = mount_src(&s, "/proc/driver/nvidia").unwrap();
    assert_eq!(gen.parent(), Some(e.gen.as_path()));
    assert!(std::fs::read_to_string(gen.join("params"))
        .unwrap()
        .contains("ModifyDeviceFiles: 0"));
    assert_eq!(
        mount_src(&s, "/proc/driver/nvidia/params"),
        None,
        "the view has it"
    );
    assert!(mount_src(&s, "/proc/driver/nvidia/gpus/0000:86:00.0").is_some());
    assert!(mount_src(&s, "/proc/driver/nvidia/gpus/0000:3b:00.0").is_none());
    assert_eq!(
        gpu::request::env_map(&s)
            .get("NVIDIA_VISIBLE_DEVICES")
            .map(String::as_str),
        Some("void")
    );
}

#[test]
fn unknown_cdi_device_is_an_error_naming_it() {
    let e = env();
    let mut s = fake::spec(&[], false, &[("cdi.k8s.io/x", "nvidia.com/gpu=7")]);
    let msg = gpu::inject(&mut s, &e.rootfs, "c1", &e.gen, &e.cfg, &e.inv)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nvidia.com/gpu=7"), "{msg}");
}

#[test]
fn annotation_values_must_be_qualified_cdi_names() {
    let e = env();
    let mut s = fake::spec(&[], false, &[("cdi.k8s.io/x", "0")]);
    let msg = gpu::inject(&mut s, &e.rootfs, "c1", &e.gen, &e.cfg, &e.inv)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("vendor/class=name"), "{msg}");
}

#[test]
fn a_refused_requirement_leaves_the_spec_untouched_even_after_cdi_edits() {
    let e = env();
    let mut s = fake::spec(
        &["NVIDIA_REQUIRE_DRIVER=driver>=1000"],
        false,
        &[("cdi.k8s.io/x", "nvidia.com/gpu=0")],
    );
    let before = s.clone();
    let msg = gpu::inject(&mut s, &e.rootfs, "c1", &e.gen, &e.cfg, &e.inv)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("driver>=1000"), "{msg}");
    assert_eq!(s, before);
}

#[test]
fn containerd_applied_cdi_edits_are_not_doubled() {
    let e = env();
    let mut s = fake::spec(&[], false, &[("cdi.k8s.io/x", "nvidia.com/gpu=0")]);
    gpu::inject(&mut s, &e.rootfs, "c1", &e.gen, &e.cfg, &e.inv).unwrap();
    let before = s.clone();
    gpu::inject(&mut s, &e.rootfs, "c1", &e.gen, &e.cfg, &e.inv).unwrap();
    assert_eq!(s.mounts(), before.mounts());
    assert_eq!(devices(&s), devices(&before));
}

#[test]
fn generated_spec_round_trips_through_yaml_json_and_apply() {
    let e = env();
    let spec = cdi::generate(&e.inv, Capabilities::parse("utility,compute").unwrap());
    assert_eq!(spec.kind, cdi::CDI_KIND);
    let names: Vec<&str> = spec.devices.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "0",
            "GPU-00000000-0000-0000-0000-000000000000",
            "1",
            "GPU-11111111-1111-1111-1111-111111111111",
            "all"
        ]
    );
    spec.validate().unwrap();
    let yaml = spec.to_yaml().unwrap();
    let json = spec.to_json().unwrap();
    assert_eq!(CdiSpec::parse(&yaml, Format::Yaml).unwrap(), spec);
    assert_eq!(CdiSpec::parse(&json, Format::Json).unwrap(), spec);
    assert!(!yaml.contains("hooks"), "a generated spec needs no hook");

    // Written where the registry looks and requested by UUID: a working GPU container.
    let dir = e._t.path().join("generated");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("nvidia.yaml"), yaml).unwrap();
    let mut cfg = e.cfg.clone();
    cfg.nvidia.cdi_spec_dirs = vec![dir];
    let mut s = fake::spec(
        &[],
        false,
        &[(
            "cdi.k8s.io/x",
            "nvidia.com/gpu=GPU-00000000-0000-0000-0000-000000000000",
        )],
    );
    let inj = gpu::inject(&mut s, &e.rootfs, "c1", &e.gen, &cfg, &e.inv)
        .unwrap()
        .unwrap();
    assert_eq!(inj.grant.gpus, ["GPU-00000000-0000-0000-0000-000000000000"]);
    assert_eq!(
        devices(&s),
        [
            "/dev/nvidia-uvm",
            "/dev/nvidia-uvm-tools",
            "/dev/nvidia-modeset",
            "/dev/nvidia0",
            "/dev/nvidiactl"
        ]
        .map(String::from)
        .into_iter()
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect::<Vec<_>>()
    );
    let root = &e.inv.roots.driver;
    let real = root.join(format!("usr/lib/x86_64-linux-gnu/libcuda.so.{VERSION}"));
    assert_eq!(
        mount_src(&s, "/usr/lib/x86_64-linux-gnu/libcuda.so.1"),
        Some(real.clone())
    );
    assert_eq!(
        mount_src(&s, "/usr/lib/x86_64-linux-gnu/libcuda.so"),
        Some(real)
    );
}
