//! `Config::load` honours `GPURUN_CONFIG` (its own test binary: it sets the variable).

#![allow(clippy::unwrap_used)]

use gpurun::config::{Config, Sharing};

#[test]
fn load_reads_the_file_named_by_gpurun_config() {
    let t = tempfile::tempdir().unwrap();
    let path = t.path().join("config.toml");
    std::fs::write(&path, "[gpus]\nsharing = \"exclusive\"\n").unwrap();
    std::env::set_var("GPURUN_CONFIG", &path);
    assert_eq!(Config::load().unwrap().gpus.sharing, Sharing::Exclusive);

    std::fs::write(&path, "[gpus]\nshareing = \"exclusive\"\n").unwrap();
    let e = Config::load().unwrap_err().to_string();
    assert!(
        e.contains("shareing") && e.contains(&path.display().to_string()),
        "{e}"
    );

    std::env::set_var("GPURUN_CONFIG", t.path().join("absent.toml"));
    assert_eq!(Config::load().unwrap(), Config::default());
    std::env::remove_var("GPURUN_CONFIG");
}
