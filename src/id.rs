//! The one rule for container ids, used by every verb's state directory and by the GPU
//! lease table alike, so an id is accepted or refused before anything is created.
//!
//! The characters are runc's (`[A-Za-z0-9_+.-]+`, not `.` or `..`, so `.x` is valid). On
//! top of them, the names of the host-wide GPU state are refused: gpurun kept that state
//! under the default `--root` before it had its own directory, and running containers of
//! that time still use it there, so a container may never be named like it.

/// Entries of the host-wide GPU state directory, refused as container ids.
pub const RESERVED: &[&str] = &[
    "leases",
    "proc-driver-nvidia",
    "proc-driver-cover",
    "nvidia-hooks",
];
/// Prefix of the discovery cache's files (`discovery.json`, its temporary copies and the
/// refresh marker), refused as a container id prefix.
pub const RESERVED_PREFIX: &str = "discovery.";

/// Why an id was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not runc's format.
    Format,
    /// The name of host-wide GPU state.
    Reserved,
}

/// Checks `id` against the one rule.
pub fn check(id: &str) -> Result<(), Refusal> {
    let ok_chars = id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_+.-".contains(&b));
    if id.is_empty() || !ok_chars || id == "." || id == ".." || id.len() > 1024 {
        return Err(Refusal::Format);
    }
    if RESERVED.contains(&id) || id.starts_with(RESERVED_PREFIX) {
        return Err(Refusal::Reserved);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runc_format_with_gpu_state_names_reserved() {
        for ok in [
            ".x",
            "a",
            "a.b",
            "A_b+c-1",
            "discovery",
            "leases2",
            "x.leases",
        ] {
            assert_eq!(check(ok), Ok(()), "{ok}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"a".repeat(1025)] {
            assert_eq!(check(bad), Err(Refusal::Format), "{bad}");
        }
        for reserved in [
            "leases",
            "proc-driver-nvidia",
            "proc-driver-cover",
            "discovery.json",
            "discovery.refreshing",
            "discovery.json.tmp.42",
        ] {
            assert_eq!(check(reserved), Err(Refusal::Reserved), "{reserved}");
        }
    }
}
