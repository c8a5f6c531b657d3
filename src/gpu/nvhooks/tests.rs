use super::*;

fn hook(path: &str, args: &[&str]) -> Hook {
    let mut h = Hook::default();
    h.set_path(PathBuf::from(path));
    h.set_args(Some(args.iter().map(|a| a.to_string()).collect()));
    h
}

/// `createContainer` hooks as `nvidia-ctk cdi generate` 1.17 writes them.
fn nvidia_ctk_hooks() -> Vec<Hook> {
    let bin = "/usr/bin/nvidia-cdi-hook";
    vec![
        hook(
            bin,
            &[
                "nvidia-cdi-hook",
                "create-symlinks",
                "--link",
                "libcuda.so.1::/usr/lib/x86_64-linux-gnu/libcuda.so",
            ],
        ),
        hook(
            bin,
            &[
                "nvidia-cdi-hook",
                "enable-cuda-compat",
                "--host-driver-version=550.54.15",
            ],
        ),
        hook(
            bin,
            &[
                "nvidia-cdi-hook",
                "update-ldcache",
                "--folder",
                "/usr/lib/x86_64-linux-gnu",
            ],
        ),
        hook(
            bin,
            &["nvidia-cdi-hook", "disable-device-node-modification"],
        ),
        hook(bin, &["nvidia-cdi-hook", "some-future-hook", "--x"]),
    ]
}

#[test]
fn nvidia_hooks_are_known_by_file_name_and_their_subcommand_parsed() {
    let s = parse(&hook(
        "/opt/x/nvidia-ctk",
        &[
            "nvidia-ctk",
            "--debug",
            "hook",
            "create-symlinks",
            "--link=a::/b",
            "-link",
            "c::d",
        ],
    ))
    .expect("parses");
    assert_eq!(
        s,
        Some(Subcommand::CreateSymlinks(vec![
            ("a".into(), "/b".into()),
            ("c".into(), "/d".into())
        ])),
        "a link relative to the root is made absolute"
    );
    assert_eq!(
        parse(&hook(
            "/usr/bin/nvidia-ctk",
            &["nvidia-ctk", "runtime", "configure"]
        ))
        .expect("parses"),
        Some(Subcommand::Unknown("runtime".into())),
        "nvidia-ctk without `hook` is NVIDIA's binary all the same: skipped, never run"
    );
    assert_eq!(
        parse(&hook(
            "/usr/bin/other",
            &["nvidia-cdi-hook", "update-ldcache"]
        ))
        .expect("parses"),
        None
    );
    let e = parse(&hook(
        bin(),
        &["nvidia-cdi-hook", "create-symlinks", "--link", "nolink"],
    ))
    .expect_err("a link without :: is refused");
    assert!(e.to_string().contains(CODE_INVALID), "{e}");
    match parse(&hook(
        bin(),
        &[
            "nvidia-cdi-hook",
            "enable-cuda-compat",
            "--host-driver-version",
            "550.1",
        ],
    )) {
        Ok(Some(Subcommand::EnableCudaCompat(c))) => {
            assert_eq!(c.host_driver_version.as_deref(), Some("550.1"));
            assert_eq!(c.dir, PathBuf::from(DEFAULT_COMPAT_DIR));
        }
        other => panic!("{other:?}"),
    }
}

fn bin() -> &'static str {
    "/usr/bin/nvidia-cdi-hook"
}

#[test]
fn take_removes_every_nvidia_hook_and_keeps_the_others() {
    let mut spec = Spec::default();
    let mut hooks = Hooks::default();
    let mut cc = nvidia_ctk_hooks();
    cc.push(hook("/usr/bin/other-hook", &["other-hook"]));
    hooks.set_create_container(Some(cc));
    hooks.set_poststart(Some(vec![hook(
        bin(),
        &["nvidia-cdi-hook", "update-application-profile"],
    )]));
    spec.set_hooks(Some(hooks));
    assert!(present(&spec));
    let w = take(&mut spec).expect("takes");
    assert!(!present(&spec));
    let h = spec.hooks().clone().expect("hooks");
    let left: Vec<PathBuf> = h
        .create_container()
        .iter()
        .flatten()
        .map(|h| h.path().clone())
        .collect();
    assert_eq!(left, [PathBuf::from("/usr/bin/other-hook")]);
    assert_eq!(
        w.links,
        [(
            "libcuda.so.1".to_string(),
            "/usr/lib/x86_64-linux-gnu/libcuda.so".to_string()
        )]
    );
    assert_eq!(w.folders, [PathBuf::from("/usr/lib/x86_64-linux-gnu")]);
    assert!(w.params && w.profile && w.compat.is_some());
    assert_eq!(w.warnings.len(), 1);
    assert!(w.warnings[0].contains(CODE_UNKNOWN) && w.warnings[0].contains("some-future-hook"));
    assert_eq!(w.log.len(), 5);
    assert!(w.log.iter().all(|l| l.contains(CODE_NATIVE)));
}

#[test]
fn the_run_setting_leaves_the_hooks_in_the_spec() {
    let mut spec = Spec::default();
    let mut hooks = Hooks::default();
    hooks.set_create_container(Some(nvidia_ctk_hooks()));
    spec.set_hooks(Some(hooks));
    let mut cfg = Config::default();
    cfg.nvidia.hooks = NvidiaHooks::Run;
    let t = Target {
        rootfs: Path::new("/nonexistent"),
        cover: "cover",
    };
    let w = handle(&mut spec, &t, &cfg).expect("handled");
    assert!(w.log[0].contains(CODE_RUN));
    assert_eq!(
        spec.hooks()
            .as_ref()
            .and_then(|h| h.create_container().clone())
            .map(|v| v.len()),
        Some(5)
    );
}

#[test]
fn the_application_profile_masks_the_gpu_minors() {
    let mut spec: Spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2",
        "linux": {"devices": [
            {"path": "/dev/nvidia0", "type": "c", "major": 195, "minor": 0},
            {"path": "/dev/nvidia3", "type": "c", "major": 195, "minor": 3},
            {"path": "/dev/nvidiactl", "type": "c", "major": 195, "minor": 255}
        ]}
    }))
    .expect("a spec");
    assert_eq!(gpu_minor_mask(&spec), 0b1001);
    let t = tempfile::tempdir().expect("tempdir");
    profile(&mut spec, t.path());
    let m = spec.mounts().clone().expect("a mount");
    assert_eq!(m[0].destination(), Path::new(PROFILE));
    let text = std::fs::read_to_string(m[0].source().as_ref().expect("a source")).expect("read");
    assert!(text.contains("\"EGLVisibleDGPUDevices\",0x9]"), "{text}");
}

#[test]
fn links_go_through_the_annotation_init_reads() {
    let mut spec = Spec::default();
    record_links(&mut spec, &[("a".into(), "/x/b".into())]).expect("recorded");
    record_links(
        &mut spec,
        &[("a".into(), "/x/b".into()), ("c".into(), "/d".into())],
    )
    .expect("recorded");
    assert_eq!(
        read_links(&spec),
        [
            ("a".to_string(), "/x/b".to_string()),
            ("c".to_string(), "/d".to_string())
        ]
    );
}
