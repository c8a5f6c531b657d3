//! Fuzzing the GPU side's parsers on the stable toolchain: CDI specs (JSON and YAML),
//! ld.so.cache, the `/proc/driver/nvidia` and `/proc/devices` parsers and discovery over
//! them, and the request contract (`NVIDIA_VISIBLE_DEVICES`, `NVIDIA_DRIVER_CAPABILITIES`,
//! `NVIDIA_REQUIRE_*`). Long runs: `cargo +nightly fuzz run <target>` in `fuzz/`.

mod fuzz_support;

use fuzz_support::{targets, Rng};
use serde_json::{json, Value};

fn label(rng: &mut Rng) -> String {
    if rng.one_in(8) {
        rng.word(8)
    } else {
        let n = 1 + rng.below(10);
        (0..n)
            .map(|_| *rng.pick(&["a", "b", "0", "7", "-", "_", ".", ":"]))
            .collect()
    }
}

fn cdi_path(rng: &mut Rng) -> String {
    let name = *rng.pick(&[
        "/dev/nvidia0",
        "/usr/lib/libcuda.so.1",
        "relative",
        "",
        "/a b",
        "/../x",
    ]);
    if rng.one_in(5) {
        rng.word(12)
    } else {
        name.to_string()
    }
}

fn edits(rng: &mut Rng) -> Value {
    let mut e = serde_json::Map::new();
    if rng.one_in(2) {
        e.insert(
            "env".into(),
            json!((0..rng.below(3))
                .map(|_| format!("{}={}", label(rng), rng.word(5)))
                .collect::<Vec<_>>()),
        );
    }
    if rng.one_in(2) {
        let mut n = json!({"path": cdi_path(rng)});
        if rng.one_in(2) {
            n["type"] = json!(*rng.pick(&["c", "b", "u", "p", "x"]));
            n["major"] = json!(rng.edgy_i64());
            n["minor"] = json!(rng.below(300));
        }
        if rng.one_in(3) {
            n["hostPath"] = json!(cdi_path(rng));
        }
        if rng.one_in(3) {
            n["permissions"] = json!(*rng.pick(&["rw", "rwm", "", "x"]));
        }
        if rng.one_in(4) {
            n["fileMode"] = json!(rng.below(0o10000));
        }
        e.insert("deviceNodes".into(), json!([n]));
    }
    if rng.one_in(2) {
        let mut m = json!({"hostPath": cdi_path(rng), "containerPath": cdi_path(rng),
            "options": ["ro", "rbind"]});
        if rng.one_in(3) {
            m["type"] = json!("bind");
        }
        e.insert("mounts".into(), json!([m]));
    }
    if rng.one_in(3) {
        let hook = *rng.pick(&[
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststart",
            "poststop",
            "prestart",
        ]);
        e.insert("hooks".into(), json!([{"hookName": hook, "path": cdi_path(rng), "args": ["x"], "timeout": rng.edgy_i64()}]));
    }
    if rng.one_in(6) {
        e.insert("additionalGids".into(), json!([rng.below(70000)]));
    }
    if rng.one_in(10) {
        e.insert("intelRdt".into(), json!({"closID": "x"}));
    }
    if rng.one_in(10) {
        e.insert(
            "netDevices".into(),
            json!([{"hostInterfaceName": "eth0", "name": "eth1"}]),
        );
    }
    Value::Object(e)
}

fn generate_cdi(rng: &mut Rng) -> Vec<u8> {
    if rng.one_in(40) {
        // Deep nesting in YAML and JSON: an error, never a stack overflow.
        return fuzz_support::deep_json(200 + rng.below(5_000)).into_bytes();
    }
    let version = *rng.pick(&[
        "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0", "2.0.0", "",
    ]);
    let vendor = *rng.pick(&["nvidia.com", "acme.example.com", "x", "1bad", "a..b", ""]);
    let class = if rng.one_in(4) {
        label(rng)
    } else {
        "gpu".to_string()
    };
    let mut spec = json!({"cdiVersion": version, "kind": format!("{vendor}/{class}")});
    if rng.one_in(4) {
        spec["annotations"] = json!({label(rng): rng.word(6)});
    }
    let devices: Vec<Value> = (0..rng.below(4))
        .map(|_| {
            let mut d = json!({"name": label(rng), "containerEdits": edits(rng)});
            if rng.one_in(5) {
                d["annotations"] = json!({"k": "v"});
            }
            d
        })
        .collect();
    spec["devices"] = Value::Array(devices);
    if rng.one_in(2) {
        spec["containerEdits"] = edits(rng);
    }
    if rng.one_in(2) {
        serde_norway::to_string(&spec)
            .expect("a Value serialises to YAML")
            .into_bytes()
    } else {
        serde_json::to_vec(&spec).expect("a Value serialises")
    }
}

/// A new-format cache with random entries, sometimes behind an old-format block, then
/// sometimes with one header or table field overwritten.
fn generate_ldcache(rng: &mut Rng) -> Vec<u8> {
    let entries: Vec<(i32, String, String)> = (0..rng.below(6))
        .map(|_| {
            let flags = *rng.pick(&[0x0303, 0x0003, 0x0a03, 0x0803, 0x0000, -1, 0x0001]);
            (
                flags,
                format!("lib{}.so.1", label(rng)),
                format!("/usr/lib/{}", rng.word(10)),
            )
        })
        .collect();
    let base = 48 + entries.len() * 24;
    let mut strings = Vec::new();
    let mut table = Vec::new();
    for (flags, key, value) in &entries {
        let k = (base + strings.len()) as u32;
        strings.extend_from_slice(key.as_bytes());
        strings.push(0);
        let v = (base + strings.len()) as u32;
        strings.extend_from_slice(value.as_bytes());
        strings.push(0);
        table.extend_from_slice(&flags.to_ne_bytes());
        table.extend_from_slice(&k.to_ne_bytes());
        table.extend_from_slice(&v.to_ne_bytes());
        table.extend_from_slice(&[0; 12]);
    }
    let mut new = b"glibc-ld.so.cache1.1".to_vec();
    new.extend_from_slice(&(entries.len() as u32).to_ne_bytes());
    new.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
    new.extend_from_slice(&[*rng.pick(&[0u8, 2, 3]), 0, 0, 0]);
    new.extend_from_slice(&[0; 16]);
    new.extend(table);
    new.extend(strings);
    let mut out = Vec::new();
    if rng.one_in(4) {
        let n = rng.below(4) as u32;
        out.extend_from_slice(b"ld.so-1.7.0\0");
        out.extend_from_slice(&n.to_ne_bytes());
        out.extend(std::iter::repeat_n(0u8, n as usize * 12));
        while out.len() % 8 != 0 {
            out.push(0);
        }
    }
    let at = out.len();
    out.extend(new);
    if rng.one_in(2) {
        let field = at + *rng.pick(&[20usize, 24, 28, 48, 52, 56, 72, 76]);
        if field + 4 <= out.len() {
            let v = rng.edgy_i64() as u32;
            out[field..field + 4].copy_from_slice(&v.to_ne_bytes());
        }
    }
    if rng.one_in(5) {
        let keep = rng.below(out.len() + 1);
        out.truncate(keep);
    }
    out
}

fn pci(rng: &mut Rng) -> String {
    let hex = |rng: &mut Rng, n: usize| -> String {
        (0..n)
            .map(|_| *rng.pick(&["0", "a", "F", "9", "x", ""]))
            .collect()
    };
    match rng.below(3) {
        0 => format!(
            "{}:{}:{}.{}",
            hex(rng, 4),
            hex(rng, 2),
            hex(rng, 2),
            hex(rng, 1)
        ),
        1 => format!("{}:{}.{}", hex(rng, 2), hex(rng, 2), hex(rng, 1)),
        _ => format!(
            "{:08x}:{:02x}:{:02x}.{}",
            rng.next_u64() as u32,
            rng.below(300),
            rng.below(40),
            rng.below(9)
        ),
    }
}

fn information(rng: &mut Rng) -> String {
    let mut s = String::new();
    if !rng.one_in(10) {
        s.push_str(&format!("Model: \t {}\n", rng.word(12)));
    }
    if !rng.one_in(10) {
        let uuid = if rng.one_in(4) {
            rng.word(10)
        } else {
            format!("GPU-{:08x}-0000", rng.next_u64() as u32)
        };
        s.push_str(&format!("GPU UUID: \t {uuid}\n"));
    }
    if !rng.one_in(10) {
        s.push_str(&format!("Bus Location: \t {}\n", pci(rng)));
    }
    if !rng.one_in(10) {
        s.push_str(&format!("Device Minor: \t {}\n", rng.edgy_i64()));
    }
    if rng.one_in(3) {
        s.push_str(&format!("GPU Excluded: {}\n", rng.pick(&["Yes", "No", ""])));
    }
    s
}

fn devices(rng: &mut Rng) -> String {
    let mut s = String::from("Character devices:\n");
    for _ in 0..rng.below(6) {
        let name = *rng.pick(&[
            "nvidia",
            "nvidia-frontend",
            "nvidia-uvm",
            "nvidia-caps",
            "nvidia-modeset",
            "mem",
            "nvidiactl",
        ]);
        s.push_str(&format!("{:3} {name}\n", rng.edgy_i64()));
    }
    if rng.one_in(3) {
        s.push_str("\nBlock devices:\n195 nvidia\n");
    }
    s
}

fn version(rng: &mut Rng) -> String {
    let v = if rng.one_in(3) {
        rng.word(10)
    } else {
        format!("{}.{}.{}", rng.below(1000), rng.below(100), rng.below(100))
    };
    format!("NVRM version: NVIDIA UNIX x86_64 Kernel Module  {v}  Release Build\nGCC version: 12\n")
}

fn generate_procfs(rng: &mut Rng) -> Vec<u8> {
    match rng.below(6) {
        0 => information(rng),
        1 => devices(rng),
        2 => version(rng),
        3 => format!("DeviceFileMinor: {}\nDeviceFileMode: 256\n", rng.edgy_i64()),
        4 => format!("ModifyDeviceFiles: {}\n{}: 1\n", rng.below(3), rng.word(20)),
        _ => pci(rng),
    }
    .into_bytes()
}

fn generate_discover(rng: &mut Rng) -> Vec<u8> {
    let access = format!("DeviceFileMinor: {}\nDeviceFileMode: 256\n", rng.edgy_i64());
    let parts = [devices(rng), version(rng), information(rng), access];
    let n = rng.below(parts.len() + 1);
    parts[..n].join("\u{1e}").into_bytes()
}

fn device_name(rng: &mut Rng) -> String {
    match rng.below(9) {
        0 => rng.below(4).to_string(),
        1 => "GPU-00000000-0000-0000-0000-000000000000".into(),
        2 => format!("GPU-{}", rng.word(6)),
        3 => format!("MIG-{}", rng.word(6)),
        4 => format!("{}:{}", rng.below(3), rng.below(3)),
        5 => pci(rng),
        6 => (*rng.pick(&[
            "all",
            "none",
            "void",
            "nvidia.com/gpu=0",
            "nvidia.com/gpu=all",
        ]))
        .into(),
        7 => rng.word(6),
        _ => "0000:86:00.0".into(),
    }
}

fn require_expr(rng: &mut Rng) -> String {
    let mut alts = Vec::new();
    for _ in 0..1 + rng.below(3) {
        let terms: Vec<String> = (0..1 + rng.below(3))
            .map(|_| {
                let prop = *rng.pick(&["cuda", "driver", "arch", "brand", "jetpack", ""]);
                let op = *rng.pick(&[">=", "<=", "=", "!=", "<", ">", "~", ""]);
                let value = match rng.below(3) {
                    0 => format!("{}.{}", rng.below(600), rng.below(100)),
                    1 => (*rng.pick(&["tesla", "geforce", "quadro"])).into(),
                    _ => rng.word(6),
                };
                format!("{prop}{op}{value}")
            })
            .collect();
        alts.push(terms.join(","));
    }
    alts.join(" ")
}

fn generate_request(rng: &mut Rng) -> Vec<u8> {
    let first = match rng.below(4) {
        0 => (0..1 + rng.below(4))
            .map(|_| device_name(rng))
            .collect::<Vec<_>>()
            .join(","),
        1 => require_expr(rng),
        2 => (0..1 + rng.below(3))
            .map(|_| {
                (*rng.pick(&[
                    "compute", "utility", "graphics", "video", "display", "compat32", "ngx", "all",
                    "gaming", "",
                ]))
                .to_string()
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => format!(
            "{}.{} {}.{}.{}",
            rng.below(20),
            rng.below(20),
            rng.below(20),
            rng.below(20),
            rng.below(3)
        ),
    };
    let mut lines = vec![first];
    for _ in 0..rng.below(5) {
        let line = match rng.below(8) {
            0 | 1 => format!(
                "NVIDIA_VISIBLE_DEVICES={}",
                (0..1 + rng.below(3))
                    .map(|_| device_name(rng))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            2 => format!(
                "NVIDIA_DRIVER_CAPABILITIES={}",
                rng.pick(&["compute,utility", "all", "video", "bogus", ""])
            ),
            3 => format!("NVIDIA_REQUIRE_CUDA={}", require_expr(rng)),
            4 => format!("CUDA_VERSION={}.{}", rng.below(20), rng.below(10)),
            5 => format!(
                "NVIDIA_DISABLE_REQUIRE={}",
                rng.pick(&["true", "1", "false", "maybe"])
            ),
            6 => format!(
                "{}=all",
                rng.pick(&[
                    "NVIDIA_MIG_CONFIG_DEVICES",
                    "NVIDIA_IMEX_CHANNELS",
                    "NVIDIA_MIG_MONITOR_DEVICES"
                ])
            ),
            _ => rng.word(20),
        };
        lines.push(line);
    }
    lines.join("\n").into_bytes()
}

const CDI_DICT: &[&str] = &[
    "cdiVersion",
    "kind",
    "devices",
    "containerEdits",
    "deviceNodes",
    "hostPath",
    "containerPath",
    "hooks",
    "hookName",
    "mounts",
    "env",
    "annotations",
    "additionalGids",
    "netDevices",
    "\"0.7.0\"",
    "nvidia.com/gpu",
    "&a",
    "*a",
    "!!binary",
    "- ",
    ": ",
    "{",
    "}",
    "\n  ",
];
const LDCACHE_DICT: &[&str] = &[
    "glibc-ld.so.cache1.1",
    "ld.so-1.7.0",
    "\0",
    "\u{3}\u{3}\0\0",
    "\u{ff}\u{ff}",
];
const PROCFS_DICT: &[&str] = &[
    "GPU UUID: GPU-",
    "Bus Location: ",
    "Device Minor: ",
    "Character devices:\n",
    "Block devices:\n",
    "195 nvidia\n",
    "ModifyDeviceFiles: ",
    "DeviceFileMinor: ",
    "NVRM version: ",
    "\u{1e}",
    ":",
    ".",
];
const REQUEST_DICT: &[&str] = &[
    "NVIDIA_VISIBLE_DEVICES=",
    "NVIDIA_DRIVER_CAPABILITIES=",
    "NVIDIA_REQUIRE_CUDA=",
    "CUDA_VERSION=",
    "GPU-",
    "MIG-",
    "all",
    "none",
    "void",
    ",",
    ">=",
    "!=",
    "brand=",
    "é",
    "\n",
];

#[test]
fn cdi_specs_never_panic_and_round_trip() {
    let n = fuzz_support::run("cdi", targets::cdi, 3000, CDI_DICT, generate_cdi);
    eprintln!("cdi: {n} inputs");
}

#[test]
fn ld_so_cache_parsing_never_panics() {
    let n = fuzz_support::run(
        "ldcache",
        targets::ldcache,
        20_000,
        LDCACHE_DICT,
        generate_ldcache,
    );
    eprintln!("ldcache: {n} inputs");
}

#[test]
fn proc_driver_nvidia_parsers_never_panic() {
    let n = fuzz_support::run(
        "procfs",
        targets::procfs,
        20_000,
        PROCFS_DICT,
        generate_procfs,
    );
    eprintln!("procfs: {n} inputs");
}

/// One test for both targets that use the fake driver tree: they share it, one at a time.
#[test]
fn discovery_and_gpu_requests_never_panic() {
    let n = fuzz_support::run(
        "discover",
        targets::discover,
        1000,
        PROCFS_DICT,
        generate_discover,
    );
    eprintln!("discover: {n} inputs");
    let n = fuzz_support::run(
        "request",
        targets::request,
        2000,
        REQUEST_DICT,
        generate_request,
    );
    eprintln!("request: {n} inputs");
    targets::remove_fake_host();
}

/// Found by the request target: a name whose fourth byte falls inside a multi-byte
/// character (`GPUé`) made the prefix check slice a `str` off a character boundary.
#[test]
fn device_names_with_multibyte_characters_are_errors_not_panics() {
    use gpurun::gpu::request::{parse_visible_devices, DeviceId};
    for name in ["GPUé", "MIGé1234", "abcé", "é"] {
        let e = DeviceId::parse(name).expect_err(name);
        assert!(e.contains("unknown device"), "{e}");
    }
    assert_eq!(
        DeviceId::parse("GPU-É1"),
        Ok(DeviceId::GpuUuid("GPU-É1".into()))
    );
    let e = parse_visible_devices("0,GPUé")
        .expect_err("GPUé")
        .to_string();
    assert!(e.contains("GPUé"), "{e}");
}
