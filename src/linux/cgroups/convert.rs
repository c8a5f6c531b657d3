//! Value conversions between the OCI (cgroup v1 shaped) fields and cgroup v2 files.

/// cgroup v1 `cpu.shares` (2..=262144, default 1024) to v2 `cpu.weight` (1..=10000, default
/// 100), with the formula runc ≥ 1.3.2 and crun ≥ 1.23 use: a quadratic in log2(shares) that
/// maps 2 → 1, 1024 → 100 and 262144 → 10000 (the older linear formula mapped 1024 to 39,
/// far below the v2 default). 0 means unset.
pub fn cpu_shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    if shares <= 2 {
        return 1;
    }
    if shares >= 262_144 {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    10f64.powf(exponent).ceil() as u64
}

/// cgroup v1 `blkio.weight` (10..=1000) to v2 `io.weight` (1..=10000). 0 means unset.
pub fn blkio_weight_to_io_weight(weight: u16) -> u64 {
    if weight == 0 {
        return 0;
    }
    let w = u64::from(weight.max(10));
    1 + (w - 10) * 9999 / 990
}

/// OCI `memory.swap` is memory+swap; v2 `memory.swap.max` is swap alone. Returns the value to
/// write (`None`: leave the file alone), or why the pair is invalid.
pub fn swap_to_v2(swap: i64, limit: i64) -> Result<Option<String>, String> {
    match (swap, limit) {
        // An unlimited memory limit with swap unset unlimits swap too, as on v1.
        (0, -1) => Ok(Some("max".to_string())),
        (0, _) => Ok(None),
        (-1, _) => Ok(Some("max".to_string())),
        (s, -1) => Ok(Some(s.to_string())),
        (_, 0) => Err("memory.swap is set but memory.limit is not".to_string()),
        (_, l) if l < 0 => Err(format!("memory.limit {l} is invalid")),
        (s, l) if s < l => Err(format!(
            "memory.swap {s} (memory+swap) is below memory.limit {l}"
        )),
        (s, l) => Ok(Some((s - l).to_string())),
    }
}

/// A v2 limit value: -1 is `max`.
pub fn v2_limit(value: i64) -> String {
    if value < 0 {
        "max".to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_to_weight_uses_the_quadratic_formula() {
        assert_eq!(cpu_shares_to_weight(0), 0);
        assert_eq!(cpu_shares_to_weight(2), 1);
        assert_eq!(cpu_shares_to_weight(1024), 100);
        assert_eq!(cpu_shares_to_weight(262_144), 10_000);
        assert_eq!(cpu_shares_to_weight(1_000_000), 10_000);
        assert_eq!(cpu_shares_to_weight(102), 17);
        assert_eq!(cpu_shares_to_weight(512), 59);
        assert_eq!(cpu_shares_to_weight(2048), 174);
        let mut last = 0;
        for shares in 2..=262_144u64 {
            let w = cpu_shares_to_weight(shares);
            assert!(w >= last, "not monotonic at {shares}");
            last = w;
        }
    }

    #[test]
    fn blkio_weight_maps_onto_io_weight() {
        assert_eq!(blkio_weight_to_io_weight(0), 0);
        assert_eq!(blkio_weight_to_io_weight(10), 1);
        assert_eq!(blkio_weight_to_io_weight(500), 4950);
        assert_eq!(blkio_weight_to_io_weight(1000), 10_000);
    }

    #[test]
    fn swap_is_converted_to_swap_alone() {
        assert_eq!(swap_to_v2(0, -1), Ok(Some("max".into())));
        assert_eq!(swap_to_v2(0, 1 << 20), Ok(None));
        assert_eq!(swap_to_v2(-1, 1 << 20), Ok(Some("max".into())));
        assert_eq!(
            swap_to_v2(3 << 20, 1 << 20),
            Ok(Some((2 << 20).to_string()))
        );
        assert_eq!(swap_to_v2(1 << 20, 1 << 20), Ok(Some("0".into())));
        assert!(swap_to_v2(1 << 20, 0).is_err());
        assert!(swap_to_v2(1 << 20, 2 << 20).is_err());
    }
}
