//! NVIDIA's hooks as engines copy them into config.json (createContainer hooks in the
//! shape `nvidia-ctk cdi generate` 1.17 writes: `/usr/bin/nvidia-cdi-hook <subcommand>`),
//! done by gpurun with the real binary on the fake GPU node, never executed. Libraries
//! are built with gcc at test time and found by a glibc program only through the cache
//! gpurun generates.

#![allow(clippy::unwrap_used)]

mod common;
mod gpu_node;
use common::*;
use gpu_node::*;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// A host folder holding a hook binary named as NVIDIA's that records every run in a
/// marker file, and the libraries the tests build.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::Builder::new()
            .prefix("gpurun-nvhooks-")
            .tempdir()
            .unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let hook = bin.join("nvidia-cdi-hook");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\necho \"$@\" >> {}\n",
                dir.path().join("marker").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        Host { dir }
    }

    fn hook_path(&self) -> String {
        self.dir
            .path()
            .join("bin/nvidia-cdi-hook")
            .display()
            .to_string()
    }

    fn marker(&self) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join("marker")).ok()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

/// A shared object with `soname` whose `which()` returns `tag`, at `out`.
fn build_lib(out: &Path, soname: &str, tag: &str) {
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("lib.c");
    std::fs::write(
        &src,
        format!("const char *which(void) {{ return \"{tag}\"; }}\n"),
    )
    .unwrap();
    let st = Command::new("gcc")
        .args(["-shared", "-fPIC"])
        .arg(format!("-Wl,-soname,{soname}"))
        .arg("-o")
        .arg(out)
        .arg(&src)
        .status()
        .unwrap();
    assert!(st.success(), "gcc failed for {}", out.display());
}

/// Adds the note a CUDA forward-compatibility libcuda carries, listing `drivers`.
fn add_compat_note(lib: &Path, drivers: &[u32]) {
    let name = b"NVIDIA Corporation\0";
    let desc =
        format!("{{\"Format\":1,\"CUDA Version\":\"12.8\",\"Driver\":{drivers:?},\"Device\":[]}}");
    let pad = |b: &[u8]| {
        let mut v = b.to_vec();
        while !v.len().is_multiple_of(4) {
            v.push(0);
        }
        v
    };
    let mut note = Vec::new();
    for n in [name.len() as u32, desc.len() as u32, 1] {
        note.extend_from_slice(&n.to_le_bytes());
    }
    note.extend(pad(name));
    note.extend(pad(desc.as_bytes()));
    let scratch = tempfile::tempdir().unwrap();
    let bin = scratch.path().join("note.bin");
    std::fs::write(&bin, note).unwrap();
    let st = Command::new("objcopy")
        .arg(format!(
            "--add-section=.note.cuda.fwd_compatibility={}",
            bin.display()
        ))
        .arg(lib)
        .status()
        .unwrap();
    assert!(st.success(), "objcopy failed");
}

/// A glibc bundle (the dynamic loader and libc copied from the host, no ld.so.cache)
/// whose `/dltest SONAME` dlopens a library and prints what its `which()` says.
fn glibc_bundle(script: &str) -> Bundle {
    let b = bundle(script);
    let root = b.rootfs();
    let src = b.path().join("dltest.c");
    std::fs::write(
        &src,
        "#include <dlfcn.h>\n#include <stdio.h>\n\
         int main(int argc, char **argv) {\n\
           void *h = dlopen(argv[1], RTLD_NOW);\n\
           if (!h) { printf(\"dlopen: %s\\n\", dlerror()); return 1; }\n\
           const char *(*which)(void) = (const char *(*)(void))dlsym(h, \"which\");\n\
           printf(\"%s=%s\\n\", argv[1], which ? which() : \"?\");\n\
           return 0;\n\
         }\n",
    )
    .unwrap();
    let st = Command::new("gcc")
        .arg("-o")
        .arg(root.join("dltest"))
        .arg(&src)
        .arg("-ldl")
        .status()
        .unwrap();
    assert!(st.success(), "gcc failed");
    let copy = |host: &str, inside: &str| {
        let dest = root.join(inside);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(host, &dest).unwrap_or_else(|e| panic!("copying {host}: {e}"));
    };
    copy("/lib64/ld-linux-x86-64.so.2", "lib64/ld-linux-x86-64.so.2");
    for lib in ["libc.so.6", "libdl.so.2"] {
        let host = format!("/lib/x86_64-linux-gnu/{lib}");
        if Path::new(&host).exists() {
            copy(&host, &format!("lib/x86_64-linux-gnu/{lib}"));
        }
    }
    b
}

fn hook(path: &str, args: &[&str]) -> Value {
    let mut a = vec!["nvidia-cdi-hook".to_string()];
    a.extend(args.iter().map(|s| s.to_string()));
    json!({"path": path, "args": a, "env": []})
}

fn set_hooks(b: &mut Bundle, hooks: Vec<Value>) {
    b.config["hooks"] = json!({ "createContainer": hooks });
}

fn bind(b: &mut Bundle, source: &Path, dest: &str) {
    b.config["mounts"].as_array_mut().unwrap().push(json!({
        "destination": dest, "type": "bind", "source": source,
        "options": ["ro", "rbind", "nosuid", "nodev"]
    }));
}

fn set_node_hooks(node: &Node, value: &str) {
    let text: String = std::fs::read_to_string(&node.config)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("hooks = "))
        .map(|l| format!("{l}\n"))
        .collect();
    let text = text.replacen("[nvidia]\n", &format!("[nvidia]\nhooks = {value:?}\n"), 1);
    std::fs::write(&node.config, text).unwrap();
}

#[test]
fn nvidia_hooks_in_config_json_are_done_by_gpurun_and_never_run() {
    if skip("nvidia_hooks_in_config_json_are_done_by_gpurun_and_never_run") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let host = Host::new();
    let lib = host.path("lib/libnvtest.so.1.2.3");
    build_lib(&lib, "libnvtest.so.1", "host");
    let outside = host.path("outside");
    std::fs::create_dir(&outside).unwrap();

    let script = "/dltest libnvtest.so.1; \
                  echo dev=$(readlink /opt/nvlib/libnvtest.so); \
                  echo soname=$(readlink /opt/nvlib/libnvtest.so.1); \
                  echo kept=$(cat /opt/nvlib/kept); \
                  echo escape=$(readlink /escape/evil); \
                  grep ModifyDeviceFiles /proc/driver/nvidia/params";
    // Without the hooks the library is in no folder the loader searches.
    let mut plain = glibc_bundle(script);
    bind(&mut plain, &lib, "/opt/nvlib/libnvtest.so.1.2.3");
    let out = node.run(&rt, &plain, &id("nvh-plain"));
    assert!(
        stdout(&out).starts_with("dlopen: libnvtest.so.1: cannot open shared object file"),
        "{}\n{}",
        stdout(&out),
        stderr(&out)
    );

    let mut b = glibc_bundle(script);
    bind(&mut b, &lib, "/opt/nvlib/libnvtest.so.1.2.3");
    let root = b.rootfs();
    std::fs::create_dir_all(root.join("opt/nvlib")).unwrap();
    std::fs::write(root.join("opt/nvlib/kept"), "image\n").unwrap();
    // A directory of the image that points at a host path: the link must stay inside.
    // The same path exists inside the image, as it would for /usr/lib or /etc.
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    std::fs::create_dir_all(root.join(outside.strip_prefix("/").unwrap())).unwrap();
    let bin = "/usr/bin/nvidia-cdi-hook";
    set_hooks(
        &mut b,
        vec![
            hook(
                bin,
                &[
                    "create-symlinks",
                    "--link",
                    "libnvtest.so.1::/opt/nvlib/libnvtest.so",
                    "--link",
                    "elsewhere::/opt/nvlib/kept",
                    "--link",
                    "/etc/shadow::/escape/evil",
                ],
            ),
            hook(bin, &["update-ldcache", "--folder", "/opt/nvlib"]),
            hook(bin, &["disable-device-node-modification"]),
            hook(&host.hook_path(), &["some-future-hook", "--flag"]),
        ],
    );
    let out = node.run(&rt, &b, &id("nvh-native"));
    assert_ran(&out);
    for l in [
        "libnvtest.so.1=host",
        "dev=libnvtest.so.1",
        "soname=libnvtest.so.1.2.3",
        "kept=image",
        "escape=/etc/shadow",
        "ModifyDeviceFiles: 0",
    ] {
        assert!(
            has_line(&out, l),
            "{l} missing from:\n{}\n{}",
            stdout(&out),
            stderr(&out)
        );
    }
    assert_eq!(host.marker(), None, "an NVIDIA hook binary was executed");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "a link was made through the image's symlink on the host"
    );
    let link = root.join(outside.strip_prefix("/").unwrap()).join("evil");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("/etc/shadow"),
        "the link is made inside the root"
    );
    let err = stderr(&out);
    assert!(
        err.contains("[nvidia-hook-unknown]") && err.contains("some-future-hook"),
        "the unknown subcommand is named in a warning: {err}"
    );
}

#[test]
fn the_run_setting_executes_nvidia_hooks_as_given() {
    if skip("the_run_setting_executes_nvidia_hooks_as_given") {
        return;
    }
    let node = Node::new(false);
    set_node_hooks(&node, "run");
    let rt = Runtime::new();
    let host = Host::new();
    let mut b = bundle("true");
    set_hooks(
        &mut b,
        vec![hook(
            &host.hook_path(),
            &["update-ldcache", "--folder", "/x"],
        )],
    );
    let out = node.run(&rt, &b, &id("nvh-run"));
    assert_ran(&out);
    assert_eq!(
        host.marker().as_deref(),
        Some("update-ldcache --folder /x\n"),
        "hooks = \"run\" runs NVIDIA's hook"
    );

    set_node_hooks(&node, "native");
    let out = node.run(&rt, &b, &id("nvh-native-again"));
    assert_ran(&out);
    assert_eq!(
        host.marker().as_deref(),
        Some("update-ldcache --folder /x\n"),
        "not run again by default"
    );
}

/// The image ships CUDA's compat libcuda (570.86.10); the host driver's libcuda is mounted
/// into the library folder. Which one the loader finds is what enable-cuda-compat decided.
fn compat_case(host_driver: &str, note: Option<&[u32]>) -> String {
    let node = Node::new(false);
    let rt = Runtime::new();
    let host = Host::new();
    let driver = host.path("driver/libcuda.so.550.54.15");
    build_lib(&driver, "libcuda.so.1", "host");
    let mut b = glibc_bundle("/dltest libcuda.so.1");
    let compat = b
        .rootfs()
        .join("usr/local/cuda/compat/libcuda.so.570.86.10");
    build_lib(&compat, "libcuda.so.1", "compat");
    if let Some(drivers) = note {
        add_compat_note(&compat, drivers);
    }
    let folder = "/usr/lib/x86_64-linux-gnu";
    bind(&mut b, &driver, &format!("{folder}/libcuda.so.550.54.15"));
    let bin = "/usr/bin/nvidia-cdi-hook";
    set_hooks(
        &mut b,
        vec![
            hook(
                bin,
                &[
                    "enable-cuda-compat",
                    &format!("--host-driver-version={host_driver}"),
                ],
            ),
            hook(bin, &["update-ldcache", "--folder", folder]),
        ],
    );
    let out = node.run(&rt, &b, &id("nvh-compat"));
    assert_ran(&out);
    stdout(&out).trim().to_string()
}

#[test]
fn cuda_compat_libraries_are_chosen_as_nvidia_decides() {
    if skip("cuda_compat_libraries_are_chosen_as_nvidia_decides") {
        return;
    }
    assert_eq!(
        compat_case("550.54.15", Some(&[535, 550])),
        "libcuda.so.1=compat",
        "the note lists the host driver's major and the compat driver is newer"
    );
    assert_eq!(
        compat_case("550.54.15", Some(&[535])),
        "libcuda.so.1=host",
        "the note does not list the host driver's major"
    );
    assert_eq!(
        compat_case("550.54.15", None),
        "libcuda.so.1=compat",
        "no note: the compat major is above the host's"
    );
    assert_eq!(
        compat_case("575.10.1", None),
        "libcuda.so.1=host",
        "no note: the host's major is above the compat's"
    );
}

#[test]
fn the_compat_note_is_read_from_the_library() {
    let t = tempfile::tempdir().unwrap();
    let lib = t.path().join("libcuda.so.570.86.10");
    build_lib(&lib, "libcuda.so.1", "compat");
    let f = std::fs::File::open(&lib).unwrap();
    assert_eq!(gpurun::gpu::elf::cuda_compat_note(f).unwrap(), None);
    add_compat_note(&lib, &[470, 535]);
    let f = std::fs::File::open(&lib).unwrap();
    let note = gpurun::gpu::elf::cuda_compat_note(f)
        .unwrap()
        .expect("a note");
    assert_eq!(note.drivers, [470, 535]);
    assert_eq!(note.cuda_version, "12.8");
    // Any cut of the file, and every byte of its section table flipped, is an answer,
    // never a panic.
    let whole = std::fs::read(&lib).unwrap();
    let cut = t.path().join("cut");
    for len in (0..whole.len()).step_by(97) {
        std::fs::write(&cut, &whole[..len]).unwrap();
        let _ = gpurun::gpu::elf::cuda_compat_note(std::fs::File::open(&cut).unwrap());
    }
    let shoff = u64::from_le_bytes(whole[0x28..0x30].try_into().unwrap()) as usize;
    for i in shoff..whole.len() {
        let mut bad = whole.clone();
        bad[i] ^= 0xff;
        std::fs::write(&cut, &bad).unwrap();
        let _ = gpurun::gpu::elf::cuda_compat_note(std::fs::File::open(&cut).unwrap());
    }
}

#[test]
fn a_skipped_hook_carries_its_reason_code_in_the_json_log() {
    if skip("a_skipped_hook_carries_its_reason_code_in_the_json_log") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let mut b = bundle("true");
    set_hooks(
        &mut b,
        vec![hook(
            "/usr/bin/nvidia-cdi-hook",
            &["chmod", "--mode", "755", "--path", "/dev/dri"],
        )],
    );
    b.write();
    let id = id("nvh-json");
    rt.track(&id);
    let log = b.path().join("log.json");
    let out = node
        .cmd(&rt)
        .arg("--log")
        .arg(&log)
        .args(["--log-format", "json", "run", "-b"])
        .arg(b.path())
        .arg(&id)
        .output()
        .unwrap();
    assert_ran(&out);
    let text = std::fs::read_to_string(&log).unwrap();
    let line: Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["msg"]
                .as_str()
                .is_some_and(|m| m.contains("[nvidia-hook-unknown]"))
        })
        .unwrap_or_else(|| panic!("no reason code in the log: {text}"));
    assert_eq!(line["level"], "warning", "{line}");
    assert_eq!(line["code"], "nvidia-hook-unknown", "{line}");
    assert!(
        line["msg"].as_str().unwrap().contains("\"chmod\""),
        "{line}"
    );
}

#[test]
fn a_symlinks_annotation_from_the_config_makes_no_link() {
    if skip("a_symlinks_annotation_from_the_config_makes_no_link") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    // Only gpurun may ask init (root, before the uid drop) for links: a user's annotation
    // passed on by an engine must not.
    let mut b = bundle("if test -L /made-by-user; then echo link=yes; else echo link=no; fi");
    annotate(
        &mut b,
        "gpurun.dev/symlinks",
        r#"[["/etc/shadow", "/made-by-user"]]"#,
    );
    let out = node.run(&rt, &b, &id("user-links"));
    assert_ran(&out);
    assert!(has_line(&out, "link=no"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("gpurun.dev/symlinks ignored"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_image_cache_that_is_a_fifo_neither_stalls_nor_fails_create() {
    if skip("an_image_cache_that_is_a_fifo_neither_stalls_nor_fails_create") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let mut b = bundle("echo ran");
    let cache = b.rootfs().join("etc/ld.so.cache");
    std::fs::create_dir_all(cache.parent().unwrap()).unwrap();
    let _ = std::fs::remove_file(&cache);
    nix::unistd::mkfifo(&cache, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    set_hooks(
        &mut b,
        vec![hook(
            "/usr/bin/nvidia-cdi-hook",
            &["update-ldcache", "--folder", "/usr/lib"],
        )],
    );
    b.write();
    let cid = id("fifo-cache");
    rt.track(&cid);
    let mut child = node
        .cmd(&rt)
        .args(["run", "-b"])
        .arg(b.path())
        .arg(&cid)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("create stalled on the image's FIFO ld.so.cache");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_ran(&out);
    assert!(has_line(&out, "ran"), "{}", stdout(&out));
}

#[test]
fn nvidia_hooks_without_a_mount_namespace_are_refused_before_any_mount() {
    if skip("nvidia_hooks_without_a_mount_namespace_are_refused_before_any_mount") {
        return;
    }
    let node = Node::new(false);
    let rt = Runtime::new();
    let mut b = bundle("true");
    // No mount namespace and nothing to mount: runc's "shares the host's mounts" case.
    b.config["linux"]["namespaces"] = json!([{"type": "pid"}]);
    b.config["mounts"] = json!([]);
    for f in ["maskedPaths", "readonlyPaths"] {
        b.config["linux"].as_object_mut().unwrap().remove(f);
    }
    b.config.as_object_mut().unwrap().remove("hostname");
    set_hooks(
        &mut b,
        vec![hook(
            "/usr/bin/nvidia-cdi-hook",
            &["disable-device-node-modification"],
        )],
    );
    let before = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    let out = node.run(&rt, &b, &id("hooks-no-mntns"));
    let after = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count();
    assert_ne!(
        out.status.code(),
        Some(0),
        "NVIDIA's hook done as a mount on the host's table"
    );
    assert!(
        stderr(&out).contains("needs a mount namespace"),
        "{}",
        stderr(&out)
    );
    assert_eq!(before, after, "the host's mount table changed");
}
