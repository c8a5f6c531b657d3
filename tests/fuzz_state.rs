//! Fuzzing state.json, the file every verb after `create` trusts least: the committed
//! corpus (real states, other format versions, hostile values, corrupt files), then
//! generated states and mutations. A state of another format or a corrupt one must be an
//! error that names the file. Long runs: `cargo +nightly fuzz run state` in `fuzz/`.

mod fuzz_support;

use std::collections::HashMap;
use std::path::PathBuf;

use fuzz_support::{targets, Rng};
use gpurun::state::{State, Status};
use serde_json::{json, Value};

const DICT: &[&str] = &[
    "\"gpurunStateFormat\"",
    "\"pid\"",
    "\"initStartTime\"",
    "\"status\"",
    "\"creating\"",
    "\"stopped\"",
    "\"cgroup\"",
    "\"v1\"",
    "\"layout\"",
    "\"hybrid\"",
    "\"hooks\"",
    "\"spec\"",
    "\"gpus\"",
    "\"gpuStateDir\"",
    "2",
    "0",
    "-1",
    "null",
    "{}",
    "[]",
    "\"\\ud800\"",
];

fn generate(rng: &mut Rng) -> Vec<u8> {
    let status = *rng.pick(&[
        Status::Creating,
        Status::Created,
        Status::Running,
        Status::Paused,
        Status::Stopped,
    ]);
    let st = State {
        gpurun_state_format: if rng.one_in(4) {
            rng.edgy_i64() as u32
        } else {
            gpurun::state::FORMAT
        },
        oci_version: (*rng.pick(&["1.0.2", "1.2.0", ""])).into(),
        id: rng.word(10),
        pid: if rng.one_in(3) {
            rng.edgy_i64() as i32
        } else {
            std::process::id() as i32
        },
        init_start_time: rng.next_u64(),
        status,
        bundle: PathBuf::from(rng.word(12)),
        rootfs: PathBuf::from(rng.word(12)),
        created: rng.word(30),
        owner: rng.word(6),
        annotations: HashMap::from([(rng.word(5), rng.word(5))]),
        systemd_cgroup: rng.one_in(2),
        rootless: rng.one_in(2),
        private_pid_ns: rng.one_in(2),
        cgroup: rng.one_in(2).then(|| {
            // Any JSON reads as a record; one gpurun cannot decode is kept as it was.
            serde_json::from_value(json!({"driver": *rng.pick(&["cgroupfs", "systemd", "x"]),
                       "layout": *rng.pick(&["hybrid", "unified", "legacy", "x"]),
                       "v1": {"pids": "/nonexistent/pids"}, "created": [], "unified": null}))
            .expect("a cgroup record reads")
        }),
        hooks: None,
        gpus: if rng.one_in(3) {
            vec![rng.word(8)]
        } else {
            Vec::new()
        },
        gpu_state_dir: rng
            .one_in(3)
            .then(|| PathBuf::from("/nonexistent/gpu-state")),
        gpu_journal: rng
            .one_in(3)
            .then(gpurun::gpu::config::JournalConfig::default),
        notify_socket: rng.one_in(5).then(|| PathBuf::from(rng.word(8))),
        spec: rng.one_in(2).then(|| json!({"ociVersion": "1.0.2"})),
    };
    let mut v = serde_json::to_value(&st).expect("a state serialises");
    if rng.one_in(3) {
        // One field removed or replaced by a value of another type.
        let key = *rng.pick(&[
            "pid",
            "status",
            "cgroup",
            "hooks",
            "id",
            "gpurunStateFormat",
            "spec",
            "gpus",
        ]);
        if rng.one_in(2) {
            v.as_object_mut().map(|o| o.remove(key));
        } else {
            v[key] = match rng.below(4) {
                0 => Value::Null,
                1 => json!(rng.word(5)),
                2 => json!(rng.edgy_i64()),
                _ => json!([[[]]]),
            };
        }
    }
    if rng.one_in(30) {
        v["spec"] = serde_json::from_str(&fuzz_support::deep_json(100)).expect("100 levels parse");
    }
    serde_json::to_vec(&v).expect("a Value serialises")
}

#[test]
fn state_files_never_panic_and_errors_name_the_file() {
    let n = fuzz_support::run("state", targets::state, 5000, DICT, generate);
    eprintln!("state: {n} inputs");
}
