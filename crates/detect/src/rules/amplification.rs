//! Amplification and reflection: unsolicited responses from reflector ports above their own
//! limit, or a flood mostly made of them.

use crate::reflect::REFLECTORS;
use crate::rules::Bucket;
use crate::Settings;

/// Unsolicited reflector responses in `b` above their own limit.
pub(crate) fn over(b: &Bucket, s: &Settings) -> bool {
    u64::from(b.refl_pkts) > s.amplification_pps
        || b.refl_bytes.saturating_mul(8) > s.amplification_bps
}

/// How far over their limit the reflected responses of `b` are.
pub(crate) fn ratio(b: &Bucket, s: &Settings) -> f64 {
    (f64::from(b.refl_pkts) / s.amplification_pps.max(1) as f64)
        .max((b.refl_bytes * 8) as f64 / s.amplification_bps.max(1) as f64)
}

pub(crate) fn amp_summary(
    pkts: u64,
    bits: u64,
    refl: &[u64; REFLECTORS.len()],
    refl_out: u64,
) -> String {
    let mut by: Vec<(u64, &str, u16)> = refl
        .iter()
        .zip(REFLECTORS.iter())
        .filter(|(v, _)| **v > 0)
        .map(|(v, (port, name))| (*v, *name, *port))
        .collect();
    by.sort_by(|a, b| b.0.cmp(&a.0).then(a.2.cmp(&b.2)));
    let protos: Vec<String> = by
        .iter()
        .map(|(v, name, port)| format!("{name} (port {port}): {v} bytes"))
        .collect();
    let total: u64 = by.iter().map(|x| x.0).sum();
    let ratio = if refl_out == 0 {
        "the asset sent nothing to them (unsolicited)".to_string()
    } else {
        format!(
            "the asset sent them {refl_out} bytes, an in/out ratio of {:.0}",
            total as f64 / refl_out as f64
        )
    };
    format!(
        "{pkts} packets ({bits} bits) of reflector responses in one second; reflected so far: {}; {ratio}",
        protos.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflected_responses_over_either_limit_are_an_attack_and_the_ratio_says_how_far() {
        let s = Settings::default();
        let quiet = Bucket {
            refl_pkts: 10,
            refl_bytes: 10_000,
            ..Bucket::default()
        };
        assert!(!over(&quiet, &s));
        let many = Bucket {
            refl_pkts: 5_000,
            refl_bytes: 10_000,
            ..Bucket::default()
        };
        assert!(over(&many, &s));
        assert!((ratio(&many, &s) - 5.0).abs() < 1e-9);
        let big = Bucket {
            refl_pkts: 100,
            refl_bytes: 1_000_000,
            ..Bucket::default()
        };
        assert!(over(&big, &s));
    }
}
