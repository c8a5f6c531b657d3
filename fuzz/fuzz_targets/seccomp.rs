//! libFuzzer target `seccomp`: the body shared with the stable harness in tests/.
#![no_main]

#[allow(dead_code)]
#[path = "../../tests/fuzz_support/targets.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::seccomp(data));
