//! Fuzzing config.json (parse, validate, GPU requests, plan) and `linux.seccomp` (the BPF
//! compiler) on the stable toolchain: the committed corpus, then generated specs and
//! mutations. Long runs: `cargo +nightly fuzz run spec` / `seccomp` in `fuzz/`.

mod fuzz_support;

use fuzz_support::{targets, Rng};
use serde_json::{json, Value};

const SPEC_DICT: &[&str] = &[
    "\"ociVersion\"",
    "\"1.0.2\"",
    "\"process\"",
    "\"args\"",
    "\"cwd\"",
    "\"env\"",
    "\"user\"",
    "\"uid\"",
    "\"gid\"",
    "\"linux\"",
    "\"namespaces\"",
    "\"type\"",
    "\"path\"",
    "\"mounts\"",
    "\"destination\"",
    "\"source\"",
    "\"options\"",
    "\"devices\"",
    "\"major\"",
    "\"minor\"",
    "\"seccomp\"",
    "\"rlimits\"",
    "\"hooks\"",
    "\"annotations\"",
    "\"sysctl\"",
    "\"bind\"",
    "\"/proc\"",
    "\"/dev\"",
    "\"..\"",
    "\"mount\"",
    "\"user\"",
    "\"pid\"",
    "\"time\"",
    "\"uidMappings\"",
    "\"timeOffsets\"",
    "\"consoleSize\"",
    "\"NVIDIA_VISIBLE_DEVICES=all\"",
    "4294967296",
    "-1",
    "18446744073709551616",
    "1e999",
    "null",
    "true",
    "[]",
    "{}",
    "\"\\u0000\"",
];

const SECCOMP_DICT: &[&str] = &[
    "\"defaultAction\"",
    "\"SCMP_ACT_ERRNO\"",
    "\"SCMP_ACT_ALLOW\"",
    "\"SCMP_ACT_KILL\"",
    "\"SCMP_ACT_NOTIFY\"",
    "\"SCMP_ACT_TRACE\"",
    "\"SCMP_ACT_LOG\"",
    "\"syscalls\"",
    "\"names\"",
    "\"action\"",
    "\"args\"",
    "\"index\"",
    "\"value\"",
    "\"valueTwo\"",
    "\"op\"",
    "\"SCMP_CMP_MASKED_EQ\"",
    "\"SCMP_CMP_EQ\"",
    "\"errnoRet\"",
    "\"architectures\"",
    "\"SCMP_ARCH_X86\"",
    "\"flags\"",
    "\"SECCOMP_FILTER_FLAG_LOG\"",
    "\"listenerPath\"",
    "65536",
    "\"clone3\"",
    "\"personality\"",
    "\"ptrace\"",
    "6",
    "-1",
];

/// Mostly small non-negative numbers (so parsing gets through), sometimes an edge.
fn num(rng: &mut Rng) -> Value {
    if rng.one_in(5) {
        json!(rng.edgy_i64())
    } else {
        json!(rng.below(70000))
    }
}

fn path(rng: &mut Rng) -> Value {
    const PARTS: &[&str] = &[
        "", ".", "..", "proc", "sys", "dev", "tmp", "etc", "nvidia", "driver", "kcore", "self",
        "fd", "null", "a b", "é", "\u{0}", "x/../..", "sda",
    ];
    let mut p = if rng.one_in(6) {
        String::new()
    } else {
        "/".to_string()
    };
    for i in 0..rng.below(5) {
        if i > 0 {
            p.push('/');
        }
        p.push_str(PARTS[rng.below(PARTS.len())]);
    }
    json!(p)
}

fn words(rng: &mut Rng, max: usize) -> Value {
    let n = rng.below(max + 1);
    Value::Array((0..n).map(|_| json!(rng.word(12))).collect())
}

fn pick_str(rng: &mut Rng, options: &[&str]) -> Value {
    if rng.one_in(25) {
        json!(rng.word(10))
    } else {
        json!(*rng.pick(options))
    }
}

/// Any JSON value, up to `depth` levels.
fn any(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 5 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.one_in(2)),
        2 => num(rng),
        3 => json!(rng.word(20)),
        4 => path(rng),
        5 => Value::Array((0..rng.below(4)).map(|_| any(rng, depth - 1)).collect()),
        _ => {
            let mut m = serde_json::Map::new();
            for _ in 0..rng.below(4) {
                m.insert(rng.word(8), any(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

fn set(v: &mut Value, path: &[&str], value: Value) {
    let mut cur = v;
    for key in &path[..path.len() - 1] {
        if !cur.get(*key).is_some_and(Value::is_object) {
            cur[*key] = json!({});
        }
        cur = &mut cur[*key];
    }
    cur[path[path.len() - 1]] = value;
}

const SYSCALLS: &[&str] = &[
    "read",
    "write",
    "openat",
    "execve",
    "clone",
    "clone3",
    "seccomp",
    "personality",
    "ptrace",
    "socket",
    "kill",
    "mount",
    "unshare",
    "setns",
    "keyctl",
    "bpf",
    "close_range",
    "futex",
    "chown32",
    "socketcall",
    "not_a_syscall",
    "",
];

fn seccomp_profile(rng: &mut Rng) -> Value {
    const ACTIONS: &[&str] = &[
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_LOG",
    ];
    const OPS: &[&str] = &[
        "SCMP_CMP_NE",
        "SCMP_CMP_LT",
        "SCMP_CMP_LE",
        "SCMP_CMP_EQ",
        "SCMP_CMP_GE",
        "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ",
    ];
    const ARCHES: &[&str] = &[
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_ARM",
        "SCMP_ARCH_MIPS",
    ];
    const FLAGS: &[&str] = &[
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    ];
    let action = |rng: &mut Rng| {
        if rng.one_in(40) {
            json!("SCMP_ACT_NOTIFY")
        } else {
            pick_str(rng, ACTIONS)
        }
    };
    let mut p = json!({"defaultAction": action(rng)});
    if rng.one_in(3) {
        p["defaultErrnoRet"] = num(rng);
    }
    if rng.one_in(2) {
        p["architectures"] =
            Value::Array((0..rng.below(4)).map(|_| pick_str(rng, ARCHES)).collect());
    }
    if rng.one_in(4) {
        p["flags"] = Value::Array((0..rng.below(3)).map(|_| pick_str(rng, FLAGS)).collect());
    }
    if rng.one_in(20) {
        p["listenerPath"] = path(rng);
    }
    // Now and then a profile large enough to pass the kernel's 4096-instruction limit.
    let rules = if rng.one_in(30) {
        400 + rng.below(600)
    } else {
        rng.below(8)
    };
    let mut syscalls = Vec::new();
    for _ in 0..rules {
        let mut r = json!({
            "names": (0..1 + rng.below(4)).map(|_| pick_str(rng, SYSCALLS)).collect::<Vec<_>>(),
            "action": action(rng),
        });
        if rng.one_in(3) {
            r["errnoRet"] = num(rng);
        }
        if rng.one_in(2) {
            r["args"] = Value::Array(
                (0..rng.below(4))
                    .map(|_| {
                        json!({
                            "index": if rng.one_in(30) { num(rng) } else { json!(rng.below(7)) },
                            "value": if rng.one_in(3) { json!(rng.next_u64()) } else { num(rng) },
                            "valueTwo": num(rng),
                            "op": pick_str(rng, OPS),
                        })
                    })
                    .collect(),
            );
        }
        syscalls.push(r);
    }
    p["syscalls"] = Value::Array(syscalls);
    p
}

/// A spec built from `gpurun spec`'s defaults with a few fields replaced by generated
/// values: mostly well-typed, so validation and the plan see them.
fn generate_spec(rng: &mut Rng) -> Vec<u8> {
    if rng.one_in(50) {
        // Deeper than serde_json's recursion limit: an error, never a stack overflow.
        let deep = fuzz_support::deep_json(1000 + rng.below(100_000));
        return format!("{{\"ociVersion\":\"1.0.2\",\"annotations\":{deep}}}").into_bytes();
    }
    let mut v = gpurun::features::default_spec(false);
    v["process"]["terminal"] = json!(false);
    const NS: &[&str] = &[
        "mount", "pid", "network", "ipc", "uts", "user", "cgroup", "time",
    ];
    const RLIMITS: &[&str] = &[
        "RLIMIT_NOFILE",
        "RLIMIT_NPROC",
        "RLIMIT_CORE",
        "RLIMIT_STACK",
    ];
    const MOUNT_TYPES: &[&str] = &[
        "bind", "tmpfs", "proc", "sysfs", "devpts", "mqueue", "cgroup",
    ];
    const OPTIONS: &[&str] = &[
        "ro",
        "rw",
        "nosuid",
        "nodev",
        "noexec",
        "bind",
        "rbind",
        "rprivate",
        "rslave",
        "rro",
        "idmap",
        "tmpcopyup",
        "mode=755",
        "size=1k",
        "nosymfollow",
        "remount",
    ];
    const DEV_TYPES: &[&str] = &["c", "b", "u", "p", "a"];
    const CAPS: &[&str] = &[
        "CAP_SYS_ADMIN",
        "CAP_CHOWN",
        "CAP_KILL",
        "CAP_NET_RAW",
        "CAP_BOGUS",
    ];
    for _ in 0..1 + rng.below(4) {
        match rng.below(24) {
            0 => set(
                &mut v,
                &["ociVersion"],
                pick_str(rng, &["1.0.2", "1.2.0", "2.0.0", ""]),
            ),
            1 => set(&mut v, &["process", "args"], words(rng, 3)),
            2 => set(&mut v, &["process", "cwd"], path(rng)),
            3 => set(&mut v, &["process", "env"], words(rng, 4)),
            4 => set(&mut v, &["process", "user", "uid"], num(rng)),
            5 => set(
                &mut v,
                &["process", "user", "additionalGids"],
                json!([num(rng), num(rng)]),
            ),
            6 => {
                let r: Vec<Value> = (0..rng.below(3))
                    .map(|_| json!({"type": pick_str(rng, RLIMITS), "soft": num(rng), "hard": num(rng)}))
                    .collect();
                set(&mut v, &["process", "rlimits"], Value::Array(r));
            }
            7 => set(
                &mut v,
                &["process", "capabilities", "bounding"],
                json!([pick_str(rng, CAPS)]),
            ),
            8 => set(
                &mut v,
                &["process", "consoleSize"],
                json!({"height": num(rng), "width": num(rng)}),
            ),
            9 => set(&mut v, &["process", "oomScoreAdj"], num(rng)),
            10 => set(&mut v, &["hostname"], json!(rng.word(80))),
            11 => {
                let m: Vec<Value> = (0..1 + rng.below(3))
                    .map(|_| {
                        let mut m =
                            json!({"destination": path(rng), "type": pick_str(rng, MOUNT_TYPES)});
                        if rng.one_in(2) {
                            m["source"] = path(rng);
                        }
                        m["options"] = Value::Array(
                            (0..rng.below(4)).map(|_| pick_str(rng, OPTIONS)).collect(),
                        );
                        m
                    })
                    .collect();
                set(&mut v, &["mounts"], Value::Array(m));
            }
            12 => {
                let n: Vec<Value> = (0..rng.below(5))
                    .map(|_| {
                        let mut n = json!({"type": pick_str(rng, NS)});
                        if rng.one_in(4) {
                            n["path"] = path(rng);
                        }
                        n
                    })
                    .collect();
                set(&mut v, &["linux", "namespaces"], Value::Array(n));
            }
            13 => {
                let map = json!([{"containerID": num(rng), "hostID": num(rng), "size": num(rng)}]);
                set(&mut v, &["linux", "uidMappings"], map.clone());
                set(&mut v, &["linux", "gidMappings"], map);
            }
            14 => {
                let d = json!([{"path": path(rng), "type": pick_str(rng, DEV_TYPES),
                    "major": num(rng), "minor": num(rng), "fileMode": num(rng)}]);
                set(&mut v, &["linux", "devices"], d);
            }
            15 => {
                let r = json!([{"allow": rng.one_in(2), "type": pick_str(rng, DEV_TYPES),
                    "major": num(rng), "minor": num(rng), "access": pick_str(rng, &["rwm", "r", "", "x"])}]);
                set(&mut v, &["linux", "resources", "devices"], r);
            }
            16 => set(&mut v, &["linux", "resources", "memory", "limit"], num(rng)),
            17 => {
                let key = pick_str(
                    rng,
                    &[
                        "net.ipv4.ip_forward",
                        "kernel.shmmax",
                        "kernel.panic",
                        "user.max_user_namespaces",
                        "fs.mqueue.msg_max",
                    ],
                );
                let mut m = serde_json::Map::new();
                m.insert(key.as_str().unwrap_or("x").to_string(), json!(rng.word(5)));
                set(&mut v, &["linux", "sysctl"], Value::Object(m));
            }
            18 => set(
                &mut v,
                &["linux", "maskedPaths"],
                json!([path(rng), path(rng)]),
            ),
            19 => set(
                &mut v,
                &["linux", "rootfsPropagation"],
                pick_str(rng, &["rprivate", "shared", "slave", "bogus"]),
            ),
            20 => set(&mut v, &["linux", "seccomp"], seccomp_profile(rng)),
            21 => set(
                &mut v,
                &["linux", "timeOffsets"],
                json!({"monotonic": {"secs": num(rng), "nanosecs": num(rng)}}),
            ),
            22 => set(
                &mut v,
                &["hooks", "prestart"],
                json!([{"path": path(rng), "args": words(rng, 2), "timeout": num(rng)}]),
            ),
            _ => {
                let key =
                    *rng.pick(&["annotations", "linux", "process", "root", "mounts", "hooks"]);
                v[key] = any(rng, 3);
            }
        }
    }
    serde_json::to_vec(&v).expect("a Value serialises")
}

fn generate_seccomp(rng: &mut Rng) -> Vec<u8> {
    serde_json::to_vec(&seccomp_profile(rng)).expect("a Value serialises")
}

#[test]
fn config_json_parsing_validation_and_plan_never_panic() {
    let n = fuzz_support::run("spec", targets::spec, 20_000, SPEC_DICT, generate_spec);
    eprintln!("spec: {n} inputs");
}

#[test]
fn the_seccomp_compiler_never_panics() {
    let n = fuzz_support::run(
        "seccomp",
        targets::seccomp,
        10_000,
        SECCOMP_DICT,
        generate_seccomp,
    );
    eprintln!("seccomp: {n} inputs");
}
