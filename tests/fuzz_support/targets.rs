//! The fuzz targets: one function per parser, taking raw bytes. Each asserts what must hold
//! for every input — no panic, every error an `Err` with a message (naming the file where
//! there is one), and what a successful parse promises (round trips, invariants).
//!
//! Shared by the stable harnesses (`tests/fuzz_*.rs`) and the libFuzzer targets in
//! `fuzz/fuzz_targets/`, which include this file by path. It uses only gpurun and the
//! crates gpurun itself depends on.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use gpurun::config::Config;
use gpurun::gpu::cdi::{self, CdiSpec, Format};
use gpurun::gpu::procfs::{self, PciAddr};
use gpurun::gpu::request::{self, DeviceId, Parsed};
use gpurun::gpu::require::{self, Facts};
use gpurun::gpu::{ldcache, Capabilities, Inventory, Roots};
use oci_spec::runtime::{LinuxSeccomp, Spec};

/// Separates the parts of a multi-file input (`discover`).
pub const PART_SEPARATOR: u8 = 0x1e;

fn message(what: &str, e: &dyn std::fmt::Display) -> String {
    let m = e.to_string();
    assert!(!m.trim().is_empty(), "{what}: an error without a message");
    m
}

/// config.json: parse, validate, GPU request parsing, plan building.
pub fn spec(data: &[u8]) {
    let spec: Spec = match serde_json::from_slice(data) {
        Ok(s) => s,
        Err(e) => {
            message("parsing config.json", &e);
            return;
        }
    };
    let cfg = hermetic_config();
    if let Err(e) = request::parse(&spec, &cfg) {
        message("parsing GPU requests", &e);
    }
    if let Err(e) = gpurun::spec::validate(&spec) {
        let m = message("validating config.json", &e);
        assert!(m.starts_with("invalid configuration: "), "{m}");
        return;
    }
    let bundle = gpurun::spec::Bundle {
        dir: PathBuf::from("/nonexistent/gpurun-fuzz-bundle"),
        rootfs: PathBuf::from("/nonexistent/gpurun-fuzz-bundle/rootfs"),
        spec: without_namespace_paths(spec),
    };
    let opts = gpurun::plan::Options {
        no_pivot: false,
        preserve_fds: 0,
        no_new_keyring: false,
    };
    match gpurun::plan::build("fuzz", &bundle, &opts) {
        Ok(plan) => {
            assert!(!plan.args.is_empty(), "a plan without argv");
            assert!(plan.cwd.is_absolute(), "a plan with a relative cwd");
            assert_eq!(
                gpurun::plan::cstrings(&plan.args).len(),
                plan.args.len(),
                "an argument with a NUL reached the plan"
            );
            assert_eq!(gpurun::plan::cstrings(&plan.env).len(), plan.env.len());
            if let Some(s) = &plan.seccomp {
                assert!((1..=4096).contains(&s.instruction_count()));
            }
        }
        Err(e) => {
            message("building the plan", &e);
        }
    }
}

/// Namespace paths would be opened by the plan; point them at our own namespaces so a
/// generated path never opens a device or a fifo on the host.
fn without_namespace_paths(mut spec: Spec) -> Spec {
    if let Some(linux) = spec.linux_mut() {
        if let Some(nss) = linux.namespaces_mut() {
            for ns in nss.iter_mut() {
                if ns.path().is_some() {
                    let name = gpurun::linux::namespaces::proc_name(ns.typ());
                    ns.set_path(Some(PathBuf::from(format!("/proc/self/ns/{name}"))));
                }
            }
        }
    }
    spec
}

/// `linux.seccomp`: parse and compile for this architecture.
pub fn seccomp(data: &[u8]) {
    let profile: LinuxSeccomp = match serde_json::from_slice(data) {
        Ok(p) => p,
        Err(e) => {
            message("parsing linux.seccomp", &e);
            return;
        }
    };
    match gpurun::linux::seccomp::compile(&profile) {
        Ok(c) => {
            assert!(
                (1..=4096).contains(&c.instruction_count()),
                "{} instructions",
                c.instruction_count()
            );
            let mut skipped = c.skipped_syscalls().to_vec();
            skipped.sort();
            let n = skipped.len();
            skipped.dedup();
            assert_eq!(n, skipped.len(), "a skipped name listed twice");
        }
        Err(e) => {
            let m = message("compiling linux.seccomp", &e);
            assert!(m.contains("seccomp"), "{m}");
        }
    }
}

/// A CDI spec, as JSON and as YAML; what parses must survive its own serialisation.
pub fn cdi(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for format in [Format::Json, Format::Yaml] {
        match CdiSpec::parse(&text, format) {
            Ok(spec) => {
                let json = spec
                    .to_json()
                    .expect("a parsed CDI spec serialises to JSON");
                let again = CdiSpec::parse(&json, Format::Json)
                    .unwrap_or_else(|e| panic!("JSON round trip fails: {e}\n{json}"));
                assert_eq!(
                    without_opaque(again),
                    without_opaque(spec.clone()),
                    "JSON round trip changed the spec"
                );
                let yaml = spec
                    .to_yaml()
                    .expect("a parsed CDI spec serialises to YAML");
                let again = CdiSpec::parse(&yaml, Format::Yaml)
                    .unwrap_or_else(|e| panic!("YAML round trip fails: {e}\n{yaml}"));
                assert_eq!(
                    without_opaque(again),
                    without_opaque(spec),
                    "YAML round trip changed the spec"
                );
            }
            Err(e) => {
                message("parsing a CDI spec", &e);
            }
        }
    }
    if let Some((kind, name)) = cdi::parse_qualified(&text) {
        assert!(kind.contains('/') && !name.is_empty());
    }
}

/// The spec without the edits gpurun keeps as opaque JSON (`intelRdt`, `netDevices`: parsed
/// so a spec using them loads, refused when applied). serde_json's float parsing is not
/// exact to the last bit, so a float in them may not survive a round trip unchanged.
fn without_opaque(mut spec: CdiSpec) -> CdiSpec {
    let edits = spec
        .devices
        .iter_mut()
        .map(|d| &mut d.container_edits)
        .chain(spec.container_edits.as_mut());
    for e in edits {
        e.intel_rdt = e.intel_rdt.take().map(|_| serde_json::Value::Null);
        e.net_devices = vec![serde_json::Value::Null; e.net_devices.len()];
    }
    spec
}

/// glibc's ld.so.cache.
pub fn ldcache(data: &[u8]) {
    match ldcache::parse(data) {
        Ok(entries) => {
            // Every entry is a string the file held (invalid UTF-8 shown as U+FFFD, one per
            // byte at most): it cannot have more characters than the file has bytes.
            for e in entries {
                assert!(e.soname.chars().count() <= data.len());
                assert!(e.path.chars().count() <= data.len());
            }
        }
        Err(e) => {
            message("parsing ld.so.cache", &e);
        }
    }
}

/// The pure parsers of `/proc/driver/nvidia` and `/proc/devices`.
pub fn procfs(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match procfs::parse_information(&text) {
        Ok(info) => {
            assert!(info.uuid.starts_with("GPU-"));
            let again: PciAddr = info.bus.to_string().parse().expect("a printed bus parses");
            assert_eq!(again, info.bus);
        }
        Err(e) => {
            message("parsing an information file", &e);
        }
    }
    if let Some(v) = procfs::parse_version(&text) {
        assert!(procfs::is_version(&v), "{v:?}");
    }
    for (name, _) in procfs::parse_devices(&text) {
        assert!(name.starts_with("nvidia"), "{name:?}");
    }
    let _ = procfs::parse_mig_minors(&text);
    let _ = procfs::parse_access_minor(&text);
    let params = procfs::params_without_device_modification(&text);
    let modify: Vec<&str> = params
        .lines()
        .filter(|l| l.split(':').next().map(str::trim) == Some("ModifyDeviceFiles"))
        .collect();
    assert!(
        !modify.is_empty() && modify.iter().all(|l| *l == "ModifyDeviceFiles: 0"),
        "params still let the container modify device files: {modify:?}"
    );
    for line in text.lines() {
        if let Ok(addr) = line.trim().parse::<PciAddr>() {
            assert_eq!(addr.to_string().parse::<PciAddr>().ok(), Some(addr));
        }
    }
}

/// A fake driver tree whose procfs files the `discover` target overwrites.
struct FakeHost {
    root: PathBuf,
    /// (file, original content): `/proc/devices`, the version file, GPU 0's information
    /// file, and GPU 1's MIG GI access file.
    files: Vec<(PathBuf, Vec<u8>)>,
    inventory: Inventory,
}

static FAKE: OnceLock<Mutex<FakeHost>> = OnceLock::new();

fn fake_host() -> &'static Mutex<FakeHost> {
    FAKE.get_or_init(|| {
        let root = std::env::temp_dir().join(format!("gpurun-fuzz-host-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let driver = gpurun::gpu::fake::FakeDriver::two_gpus()
            .nodes(gpurun::gpu::fake::Nodes::Placeholder)
            .build(&root)
            .expect("building the fake driver tree");
        let gpu0 = driver.proc_gpu_dir(0).expect("GPU 0").join("information");
        let files: Vec<(PathBuf, Vec<u8>)> = [
            root.join("proc/devices"),
            root.join("proc/driver/nvidia/version"),
            gpu0,
            root.join("proc/driver/nvidia/capabilities/gpu1/mig/gi1/access"),
        ]
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap_or_default();
            (p, data)
        })
        .collect();
        let inventory =
            gpurun::gpu::discover(&Roots::at(&root)).expect("discovering the fake tree");
        Mutex::new(FakeHost {
            root,
            files,
            inventory,
        })
    })
}

/// Removes the fake driver tree, if one was built (the stable harnesses call it last).
pub fn remove_fake_host() {
    if let Some(m) = FAKE.get() {
        let host = m.lock().unwrap_or_else(|p| p.into_inner());
        let _ = std::fs::remove_dir_all(&host.root);
    }
}

/// Discovery over a fake tree whose procfs files are the parts of `data` (split on
/// [`PART_SEPARATOR`]: `/proc/devices`, `version`, GPU 0's `information`, a MIG `access`
/// file; a missing part keeps the tree's own file). What discovery accepts must also
/// survive the discovery cache.
pub fn discover(data: &[u8]) {
    let host = fake_host().lock().unwrap_or_else(|p| p.into_inner());
    let mut parts = data.split(|b| *b == PART_SEPARATOR);
    for (path, original) in &host.files {
        let content = parts.next().unwrap_or(original);
        std::fs::write(path, content).expect("writing a fake procfs file");
    }
    let roots = Roots::at(&host.root);
    match gpurun::gpu::discover(&roots) {
        Ok(inv) => {
            let cache = host.root.join("state/discovery.json");
            gpurun::gpu::store_cache(&cache, &inv).expect("storing the discovery cache");
            let back = gpurun::gpu::load_cache(&cache, &roots).expect("loading the cache");
            assert_eq!(
                back.as_ref(),
                Some(&inv),
                "the cache did not return the inventory"
            );
        }
        Err(e) => {
            message("discovering the fake tree", &e);
        }
    }
    for (path, original) in &host.files {
        std::fs::write(path, original).expect("restoring a fake procfs file");
    }
}

fn hermetic_config() -> Config {
    let mut cfg = Config::default();
    cfg.nvidia.cdi_spec_dirs = vec![PathBuf::from("/nonexistent/gpurun-fuzz-cdi")];
    cfg.gpus.state_dir = PathBuf::from("/nonexistent/gpurun-fuzz-state");
    cfg
}

/// `NVIDIA_VISIBLE_DEVICES`, `NVIDIA_DRIVER_CAPABILITIES`, `NVIDIA_REQUIRE_*` and the whole
/// request contract. Lines of `data` are the container's environment; the first line is
/// also parsed on its own as each kind of value.
pub fn request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let first = text.lines().next().unwrap_or("");
    match request::parse_visible_devices(first) {
        Ok(ids) => {
            for (i, id) in ids.iter().enumerate() {
                assert!(!ids[..i].contains(id), "{id:?} listed twice");
            }
        }
        Err(e) => {
            message("parsing NVIDIA_VISIBLE_DEVICES", &e);
        }
    }
    for word in first.split(',') {
        if let Err(e) = DeviceId::parse(word) {
            message("parsing a device name", &e);
        }
    }
    if let Ok(c) = Capabilities::parse(first) {
        assert_eq!(Capabilities::parse(&c.to_string()), Ok(c));
    }
    let reqs = vec![("NVIDIA_REQUIRE_CUDA".to_string(), first.to_string())];
    for facts in [
        Facts::default(),
        Facts {
            driver: Some("550.54.15".into()),
            cuda: Some("12.4".into()),
            devices: vec![(Some("9.0".into()), Some("Tesla".into())), (None, None)],
        },
    ] {
        if let Err(e) = require::check(&reqs, &facts) {
            message("checking NVIDIA_REQUIRE_CUDA", &e);
        }
    }
    let (a, b) = first.split_once(' ').unwrap_or((first, ""));
    assert_eq!(
        require::compare_versions(a, b),
        require::compare_versions(b, a).reverse(),
        "version order is not antisymmetric for {a:?} and {b:?}"
    );
    assert_eq!(require::compare_versions(a, a), std::cmp::Ordering::Equal);

    let env: Vec<&str> = text.lines().collect();
    let host = fake_host().lock().unwrap_or_else(|p| p.into_inner());
    for privileged in [false, true] {
        let mut spec = gpurun::gpu::fake::spec(&env, privileged, &[]);
        for accept in [false, true] {
            let mut cfg = hermetic_config();
            cfg.nvidia.accept_env_when_unprivileged = accept;
            match request::parse(&spec, &cfg) {
                Ok(Parsed::Request(r)) => {
                    if let Err(e) = request::resolve(&r.devices, &host.inventory) {
                        message("resolving a request", &e);
                    }
                }
                Ok(Parsed::Ignored(w)) => assert!(!privileged && !accept && !w.is_empty()),
                Ok(Parsed::Nothing) => {}
                Err(e) => {
                    message("parsing a request", &e);
                }
            }
        }
        let gen = host.root.join("gen");
        let rootfs = host.root.join("rootfs");
        let _ = std::fs::create_dir_all(rootfs.join(gpurun::gpu::fake::LIB_DIR));
        match gpurun::gpu::inject(
            &mut spec,
            &rootfs,
            "fuzz",
            &gen,
            &hermetic_config(),
            &host.inventory,
        ) {
            Ok(Some(inj)) => {
                for uuid in &inj.grant.gpus {
                    assert!(
                        host.inventory.gpus.iter().any(|g| &g.uuid == uuid),
                        "{uuid}"
                    );
                }
            }
            Ok(None) => {}
            Err(e) => {
                message("injecting GPUs", &e);
            }
        }
    }
}

/// A state directory per thread, reused for every input and removed when the thread ends.
struct StateDir(PathBuf);

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

static STATE_DIRS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static STATE_DIR: StateDir = {
        let n = STATE_DIRS.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gpurun-fuzz-state-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("creating a state directory");
        StateDir(dir)
    };
}

/// A container's state.json, read the way every verb reads it.
pub fn state(data: &[u8]) {
    let path = STATE_DIR.with(|d| d.0.join(gpurun::state::STATE_FILE));
    std::fs::write(&path, data).expect("writing state.json");
    let result = gpurun::state::load_file(&path);
    match result {
        Ok(st) => {
            assert_eq!(st.gpurun_state_format, gpurun::state::FORMAT);
            let status = st.current_status(Path::new("/nonexistent"), || false);
            let public = st.public(status);
            assert_eq!(public.id, st.id);
            if status == gpurun::state::Status::Stopped {
                assert_eq!(public.pid, 0, "a stopped container shows a pid");
            }
            let _ = st.open_cgroup();
            let first = serde_json::to_value(&st).expect("state serialises");
            let bytes = serde_json::to_vec(&st).expect("state serialises");
            let again: gpurun::state::State =
                serde_json::from_slice(&bytes).expect("a written state reads back");
            assert_eq!(
                serde_json::to_value(&again).expect("state serialises"),
                first
            );
        }
        Err(e) => {
            let m = message("loading state.json", &e);
            assert!(
                m.contains(&path.display().to_string()),
                "the error does not name the file: {m}"
            );
        }
    }
}
