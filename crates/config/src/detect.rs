//! `[detect]`: the detector's settings, one type with one set of defaults. The detector
//! (`normwatch-detect`) runs on this type as validated here; the TOML keys are its field names.

use crate::diag::Diagnostics;
use crate::reflectors::{load_reflectors, Reflectors};
use crate::validate::duration;
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[detect]`: the detector.
#[derive(Clone, Debug, PartialEq)]
pub struct DetectConfig {
    /// The norm catalogue; `None`: the catalogue built into normwatch (`config/norms.toml`).
    pub norms: Option<PathBuf>,
    /// The reflector catalogue: the built-in one (`config/reflectors.toml`), or the file
    /// `reflectors` names.
    pub reflectors: Reflectors,
    /// How late (event time) a flow record may arrive and still count (10 s).
    pub lateness: Duration,
    /// Quiet time before an alert closes (30 s).
    pub quiet_period: Duration,
    /// Least event time between updates of an open alert (10 s).
    pub update_interval: Duration,
    /// Share of new TCP flows left half-open that makes a flood a SYN flood (0.8).
    pub syn_half_open_share: f64,
    /// A second is a flood above its learned baseline times this (3), once the baseline has
    /// learned for `baseline_warmup` (5 min); the averages' time constant (10 min).
    pub baseline_factor: f64,
    pub baseline_warmup: Duration,
    pub baseline_window: Duration,
    /// Floors of the learned limits (1 000 packets/s, 10 Mbit/s, 100 new flows/s).
    pub baseline_min_pps: u64,
    pub baseline_min_bps: u64,
    pub baseline_min_new_flows: u64,
    /// Limits of an asset, for each figure its thresholds leave unset, until its baseline
    /// has learned (`baseline_warmup`): an asset is protected from its first second
    /// (20 000 packets/s, 1 Gbit/s, 3 500 new flows/s, FastNetMon's default limits).
    pub default_pps: u64,
    pub default_bps: u64,
    pub default_new_flows: u64,
    /// Unsolicited reflector responses per second that make an amplification attack (1 000
    /// packets/s, 1 Mbit/s); a reflector flow counts as unsolicited when the asset sent
    /// nothing or the reflector sent at least `amplification_ratio` (50) times its bytes; a
    /// flood at least `amplification_share` (0.5) reflected is an amplification attack.
    pub amplification_pps: u64,
    pub amplification_bps: u64,
    pub amplification_ratio: f64,
    pub amplification_share: f64,
    /// Service impairment: the window summed (5 s), the least attempts judged (20), the drop
    /// below baseline that counts as a collapse (to 0.5 of it) and the load rise (2×).
    pub impairment_window: Duration,
    pub impairment_min_attempts: u64,
    pub impairment_drop: f64,
    pub impairment_load_factor: f64,
    /// Scans: distinct ports (8) or addresses (8) of an asset one source probes, with no gap
    /// longer than `scan_idle` (1 h).
    pub scan_ports: u32,
    pub scan_addresses: u32,
    pub scan_idle: Duration,
    /// Bulk exfiltration: bytes a `holds-ip` asset sends one external destination within
    /// `exfil_window` (1 GB in 1 h).
    pub exfil_bytes: u64,
    pub exfil_window: Duration,
    /// Carpet bombing: distinct addresses of an asset a flood must hit (16).
    pub carpet_min_addresses: u32,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            norms: None,
            reflectors: Reflectors::built_in(),
            lateness: Duration::from_secs(10),
            quiet_period: Duration::from_secs(30),
            update_interval: Duration::from_secs(10),
            syn_half_open_share: 0.8,
            baseline_factor: 3.0,
            baseline_warmup: Duration::from_secs(300),
            baseline_window: Duration::from_secs(600),
            baseline_min_pps: 1_000,
            baseline_min_bps: 10_000_000,
            baseline_min_new_flows: 100,
            default_pps: 20_000,
            default_bps: 1_000_000_000,
            default_new_flows: 3_500,
            amplification_pps: 1_000,
            amplification_bps: 1_000_000,
            amplification_ratio: 50.0,
            amplification_share: 0.5,
            impairment_window: Duration::from_secs(5),
            impairment_min_attempts: 20,
            impairment_drop: 0.5,
            impairment_load_factor: 2.0,
            scan_ports: 8,
            scan_addresses: 8,
            scan_idle: Duration::from_secs(3600),
            exfil_bytes: 1_000_000_000,
            exfil_window: Duration::from_secs(3600),
            carpet_min_addresses: 16,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDetect {
    norms: Option<String>,
    reflectors: Option<String>,
    lateness: Option<String>,
    quiet_period: Option<String>,
    update_interval: Option<String>,
    syn_half_open_share: Option<f64>,
    baseline_factor: Option<f64>,
    baseline_warmup: Option<String>,
    baseline_window: Option<String>,
    baseline_min_pps: Option<u64>,
    baseline_min_bps: Option<u64>,
    baseline_min_new_flows: Option<u64>,
    default_pps: Option<u64>,
    default_bps: Option<u64>,
    default_new_flows: Option<u64>,
    amplification_pps: Option<u64>,
    amplification_bps: Option<u64>,
    amplification_ratio: Option<f64>,
    amplification_share: Option<f64>,
    impairment_window: Option<String>,
    impairment_min_attempts: Option<u64>,
    impairment_drop: Option<f64>,
    impairment_load_factor: Option<f64>,
    scan_ports: Option<u64>,
    scan_addresses: Option<u64>,
    scan_idle: Option<String>,
    exfil_bytes: Option<u64>,
    exfil_window: Option<String>,
    carpet_min_addresses: Option<u64>,
}

/// A duration key of `[detect]` within `lo..=hi`.
fn detect_secs(
    v: Option<String>,
    key: &str,
    dflt: Duration,
    (lo, hi, accepted): (u64, u64, &str),
    d: &mut Diagnostics,
) -> Duration {
    match v {
        None => dflt,
        Some(s) => match duration(&s, key, d) {
            Some(v) if v >= Duration::from_secs(lo) && v <= Duration::from_secs(hi) => v,
            Some(_) => {
                d.push(key, format!("{s:?} is out of range; accepted: {accepted}"));
                dflt
            }
            None => dflt,
        },
    }
}

/// A number key of `[detect]` within `lo..=hi` (`accepted` says so in words).
fn detect_num<T: PartialOrd + Copy + fmt::Display>(
    v: Option<T>,
    key: &str,
    dflt: T,
    (lo, hi, accepted): (T, T, &str),
    d: &mut Diagnostics,
) -> T {
    match v {
        None => dflt,
        Some(v) if v >= lo && v <= hi => v,
        Some(v) => {
            d.push(key, format!("{v} is out of range; accepted: {accepted}"));
            dflt
        }
    }
}

impl RawDetect {
    pub(crate) fn validate(self, base: &Path, d: &mut Diagnostics) -> DetectConfig {
        let dflt = DetectConfig::default();
        let secs = |v: Option<String>, key: &str, dflt: Duration, d: &mut Diagnostics| match v {
            None => dflt,
            Some(s) => match duration(&s, key, d) {
                Some(v) if v >= Duration::from_secs(1) && v <= Duration::from_secs(3600) => v,
                Some(_) => {
                    d.push(key, format!("{s:?} is out of range; accepted: 1s to 1h"));
                    dflt
                }
                None => dflt,
            },
        };
        let lateness = secs(self.lateness, "detect.lateness", dflt.lateness, d);
        let quiet_period = secs(
            self.quiet_period,
            "detect.quiet_period",
            dflt.quiet_period,
            d,
        );
        let update_interval = secs(
            self.update_interval,
            "detect.update_interval",
            dflt.update_interval,
            d,
        );
        let syn_half_open_share = match self.syn_half_open_share {
            None => dflt.syn_half_open_share,
            Some(v) if (0.0..=1.0).contains(&v) && v > 0.0 => v,
            Some(v) => {
                d.push(
                    "detect.syn_half_open_share",
                    format!("{v} is out of range; accepted: above 0 up to 1"),
                );
                dflt.syn_half_open_share
            }
        };
        const DAY: u64 = 86_400;
        let share = (f64::MIN_POSITIVE, 1.0, "above 0 up to 1");
        let factor = (1.0, 1000.0, "1 to 1000");
        let count = |hi: u64, accepted| (1u64, hi, accepted);
        let baseline_factor = detect_num(
            self.baseline_factor,
            "detect.baseline_factor",
            dflt.baseline_factor,
            factor,
            d,
        );
        let baseline_warmup = detect_secs(
            self.baseline_warmup,
            "detect.baseline_warmup",
            dflt.baseline_warmup,
            (1, 7 * DAY, "1s to 7d"),
            d,
        );
        let baseline_window = detect_secs(
            self.baseline_window,
            "detect.baseline_window",
            dflt.baseline_window,
            (1, 7 * DAY, "1s to 7d"),
            d,
        );
        let rate = count(u64::MAX / 64, "a positive whole number");
        let baseline_min_pps = detect_num(
            self.baseline_min_pps,
            "detect.baseline_min_pps",
            dflt.baseline_min_pps,
            rate,
            d,
        );
        let baseline_min_bps = detect_num(
            self.baseline_min_bps,
            "detect.baseline_min_bps",
            dflt.baseline_min_bps,
            rate,
            d,
        );
        let baseline_min_new_flows = detect_num(
            self.baseline_min_new_flows,
            "detect.baseline_min_new_flows",
            dflt.baseline_min_new_flows,
            rate,
            d,
        );
        let default_pps = detect_num(
            self.default_pps,
            "detect.default_pps",
            dflt.default_pps,
            rate,
            d,
        );
        let default_bps = detect_num(
            self.default_bps,
            "detect.default_bps",
            dflt.default_bps,
            rate,
            d,
        );
        let default_new_flows = detect_num(
            self.default_new_flows,
            "detect.default_new_flows",
            dflt.default_new_flows,
            rate,
            d,
        );
        let amplification_pps = detect_num(
            self.amplification_pps,
            "detect.amplification_pps",
            dflt.amplification_pps,
            rate,
            d,
        );
        let amplification_bps = detect_num(
            self.amplification_bps,
            "detect.amplification_bps",
            dflt.amplification_bps,
            rate,
            d,
        );
        let amplification_ratio = detect_num(
            self.amplification_ratio,
            "detect.amplification_ratio",
            dflt.amplification_ratio,
            factor,
            d,
        );
        let amplification_share = detect_num(
            self.amplification_share,
            "detect.amplification_share",
            dflt.amplification_share,
            share,
            d,
        );
        let impairment_window = detect_secs(
            self.impairment_window,
            "detect.impairment_window",
            dflt.impairment_window,
            (1, 16, "1s to 16s"),
            d,
        );
        let impairment_min_attempts = detect_num(
            self.impairment_min_attempts,
            "detect.impairment_min_attempts",
            dflt.impairment_min_attempts,
            count(1_000_000, "1 to 1000000"),
            d,
        );
        let impairment_drop = detect_num(
            self.impairment_drop,
            "detect.impairment_drop",
            dflt.impairment_drop,
            share,
            d,
        );
        let impairment_load_factor = detect_num(
            self.impairment_load_factor,
            "detect.impairment_load_factor",
            dflt.impairment_load_factor,
            factor,
            d,
        );
        let distinct = count(100, "1 to 100");
        let scan_ports = detect_num(
            self.scan_ports,
            "detect.scan_ports",
            u64::from(dflt.scan_ports),
            distinct,
            d,
        ) as u32;
        let scan_addresses = detect_num(
            self.scan_addresses,
            "detect.scan_addresses",
            u64::from(dflt.scan_addresses),
            distinct,
            d,
        ) as u32;
        let scan_idle = detect_secs(
            self.scan_idle,
            "detect.scan_idle",
            dflt.scan_idle,
            (1, 7 * DAY, "1s to 7d"),
            d,
        );
        let exfil_bytes = detect_num(
            self.exfil_bytes,
            "detect.exfil_bytes",
            dflt.exfil_bytes,
            rate,
            d,
        );
        let exfil_window = detect_secs(
            self.exfil_window,
            "detect.exfil_window",
            dflt.exfil_window,
            (1, 7 * DAY, "1s to 7d"),
            d,
        );
        let carpet_min_addresses = detect_num(
            self.carpet_min_addresses,
            "detect.carpet_min_addresses",
            u64::from(dflt.carpet_min_addresses),
            (2, 1_000_000, "2 to 1000000"),
            d,
        ) as u32;
        DetectConfig {
            norms: self.norms.as_deref().map(|n| crate::bus::resolve(base, n)),
            reflectors: match self.reflectors.as_deref() {
                None => dflt.reflectors,
                Some(p) => match load_reflectors(&crate::bus::resolve(base, p)) {
                    Ok(r) => r,
                    Err(e) => {
                        d.push("detect.reflectors", e.to_string());
                        dflt.reflectors
                    }
                },
            },
            lateness,
            quiet_period,
            update_interval,
            syn_half_open_share,
            baseline_factor,
            baseline_warmup,
            baseline_window,
            baseline_min_pps,
            baseline_min_bps,
            baseline_min_new_flows,
            default_pps,
            default_bps,
            default_new_flows,
            amplification_pps,
            amplification_bps,
            amplification_ratio,
            amplification_share,
            impairment_window,
            impairment_min_attempts,
            impairment_drop,
            impairment_load_factor,
            scan_ports,
            scan_addresses,
            scan_idle,
            exfil_bytes,
            exfil_window,
            carpet_min_addresses,
        }
    }
}
