//! The stable-toolchain side of gpurun's fuzzing: replay the committed corpus of a target
//! (`tests/fixtures/fuzz/<target>/`), then feed it a bounded number of inputs made by a
//! small deterministic PRNG — structured ones from the target's own generator and byte-level
//! mutations of the corpus. The same target bodies (`targets.rs`) are what the libFuzzer
//! targets in `fuzz/` run for long sessions on nightly.
//!
//! A panic in a target fails the test with the input escaped in the message, and the input
//! is saved under `target/fuzz-failures/<target>/` to be committed into the corpus once
//! the bug is fixed. `GPURUN_FUZZ_ITERS` overrides the number of generated inputs and
//! `GPURUN_FUZZ_SEED` the seed.
#![allow(dead_code)]

pub mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// splitmix64: tiny, fast, and the same sequence on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True one time in `n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A number that is often on an edge: 0, ±1, a power of two, the limits of a type.
    pub fn edgy_i64(&mut self) -> i64 {
        const EDGES: &[i64] = &[
            0,
            1,
            -1,
            2,
            7,
            255,
            256,
            4095,
            4096,
            65535,
            65536,
            i32::MAX as i64,
            i32::MIN as i64,
            u32::MAX as i64,
            1 << 32,
            i64::MAX,
            i64::MIN,
        ];
        match self.below(3) {
            0 => *self.pick(EDGES),
            1 => self.below(1000) as i64,
            _ => self.next_u64() as i64,
        }
    }

    /// A short string from an alphabet that includes the characters parsers split on,
    /// multi-byte UTF-8 and control characters.
    pub fn word(&mut self, max: usize) -> String {
        const ALPHABET: &[&str] = &[
            "a",
            "Z",
            "0",
            "9",
            "-",
            "_",
            ".",
            "/",
            ":",
            ",",
            "=",
            "!",
            "<",
            ">",
            " ",
            "\t",
            "\n",
            "\0",
            "é",
            "\u{200b}",
            "\u{10ffff}",
            "..",
            "%",
            "\\",
            "\"",
            "*",
            "GPU-",
            "MIG-",
            "all",
            "none",
        ];
        let n = self.below(max + 1);
        (0..n).map(|_| *self.pick(ALPHABET)).collect()
    }
}

/// How many generated inputs a target gets (the corpus is always replayed in full).
pub fn iterations(default: usize) -> usize {
    std::env::var("GPURUN_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn seed() -> u64 {
    std::env::var("GPURUN_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x6770_7572_756e)
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fuzz")
}

/// The committed corpus of `target`, sorted by file name.
pub fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = fixtures().join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let data = std::fs::read(e.path()).expect("read corpus file");
            (name, data)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "corpus {} is empty", dir.display());
    out
}

/// One byte-level mutation of `input`, sometimes splicing in another corpus entry or a
/// token from `dict`.
pub fn mutate(rng: &mut Rng, input: &[u8], corpus: &[(String, Vec<u8>)], dict: &[&str]) -> Vec<u8> {
    let mut v = input.to_vec();
    let rounds = 1 + rng.below(4);
    for _ in 0..rounds {
        let len = v.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                v[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                v[i] = *rng.pick(&[0u8, 0xff, 0x7f, 0x80, b'"', b'{', b'[', b'\\', b'-', b'9']);
            }
            2 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(16)).min(len);
                v.drain(a..b);
            }
            3 => {
                let at = rng.below(len + 1);
                let tok = rng.pick(dict).as_bytes().to_vec();
                v.splice(at..at, tok);
            }
            4 if len > 0 => {
                let a = rng.below(len);
                let b = (a + 1 + rng.below(64)).min(len);
                let chunk = v[a..b].to_vec();
                let at = rng.below(len + 1);
                v.splice(at..at, chunk);
            }
            5 => {
                let other = &rng.pick(corpus).1;
                if !other.is_empty() {
                    let cut_here = rng.below(len + 1);
                    let cut_there = rng.below(other.len());
                    v.truncate(cut_here);
                    v.extend_from_slice(&other[cut_there..]);
                }
            }
            6 if len > 0 => {
                v.truncate(rng.below(len));
            }
            7 if len >= 4 => {
                let i = rng.below(len - 3);
                let n = rng.edgy_i64() as u32;
                v[i..i + 4].copy_from_slice(&n.to_ne_bytes());
            }
            _ => {
                let at = rng.below(len + 1);
                let digits = rng.edgy_i64().to_string();
                v.splice(at..at, digits.into_bytes());
            }
        }
    }
    v
}

/// Run `target` over its corpus and `default_iters` generated inputs: half from
/// `generate`, half mutations of the corpus. Returns how many inputs ran.
pub fn run(
    target: &str,
    body: fn(&[u8]),
    default_iters: usize,
    dict: &[&str],
    mut generate: impl FnMut(&mut Rng) -> Vec<u8>,
) -> usize {
    let corpus = corpus(target);
    for (name, data) in &corpus {
        check(target, body, data, &format!("corpus file {name}"));
    }
    let mut rng = Rng::new(seed() ^ fnv(target.as_bytes()));
    let n = iterations(default_iters);
    for i in 0..n {
        let data = if i % 2 == 0 {
            generate(&mut rng)
        } else {
            let base = &rng.pick(&corpus).1.clone();
            mutate(&mut rng, base, &corpus, dict)
        };
        check(target, body, &data, &format!("generated input {i}"));
    }
    corpus.len() + n
}

fn check(target: &str, body: fn(&[u8]), data: &[u8], what: &str) {
    if catch_unwind(AssertUnwindSafe(|| body(data))).is_ok() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/fuzz-failures")
        .join(target);
    let file = dir.join(format!("{:016x}", fnv(data)));
    let saved = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, data))
        .map(|()| format!("saved to {}", file.display()))
        .unwrap_or_else(|e| format!("not saved: {e}"));
    let shown: String = String::from_utf8_lossy(&data[..data.len().min(2048)])
        .escape_debug()
        .collect();
    panic!("fuzz target {target} panicked on {what} ({saved}): {shown}");
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Build a JSON document nested `depth` levels deep (arrays), as text: deeper than any
/// recursive-descent parser's stack should be asked to go.
pub fn deep_json(depth: usize) -> String {
    let mut s = String::with_capacity(depth * 2 + 8);
    s.extend(std::iter::repeat_n('[', depth));
    s.push('1');
    s.extend(std::iter::repeat_n(']', depth));
    s
}
