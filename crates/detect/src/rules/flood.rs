//! Volumetric and SYN flood: a second above the limits in force (static thresholds raised
//! to the learned baseline), totals and per protocol; a SYN flood when its new TCP flows
//! are mostly left half-open.

use crate::alert::*;
use crate::baseline::Baseline;
use crate::rules::amplification::{self, amp_summary};
use crate::rules::*;
use crate::state::*;
use crate::{Settings, NS};
use normwatch_config::reflectors::Reflectors;
use normwatch_model::{Alert, AlertKind, Measured, Rates};

/// The total limits: static thresholds raised to the learned baseline once it is warm; until
/// then the static thresholds, and the default limits (`default_pps`, `default_bps`,
/// `default_new_flows`) for the figures they leave unset.
pub(crate) fn total_limit(fixed: &Rates, base: &Baseline, s: &Settings) -> Lim {
    let warm = base.seconds >= s.baseline_warmup.as_secs();
    if !warm {
        return Lim {
            pkts: fixed.pps.unwrap_or(s.default_pps),
            bits: fixed.bps.unwrap_or(s.default_bps),
            new: fixed.new_flows_per_s.unwrap_or(s.default_new_flows),
        };
    }
    let mean = base.mean();
    // max(static, baseline × factor), the learned part never below its floor.
    let eff = |fixed: Option<u64>, mean: f64, floor: u64| {
        let learned = ((mean * s.baseline_factor).ceil() as u64).max(floor);
        fixed.map_or(learned, |f| f.max(learned))
    };
    Lim {
        pkts: eff(fixed.pps, mean.pkts, s.baseline_min_pps),
        bits: eff(fixed.bps, mean.bits, s.baseline_min_bps),
        new: eff(
            fixed.new_flows_per_s,
            mean.new_flows,
            s.baseline_min_new_flows,
        ),
    }
}

/// The total limits an alert shows: the asset's static thresholds, and for each figure they
/// leave unset the limit in force (a default limit, or the learned one); `None` when the
/// static thresholds set every figure.
pub(crate) fn shown_limits(fixed: &Rates, lim: &Lim) -> Option<Rates> {
    let set = |v: u64| (v != u64::MAX).then_some(v);
    let all_set = fixed.pps.is_some() && fixed.bps.is_some() && fixed.new_flows_per_s.is_some();
    (!all_set).then(|| Rates {
        pps: fixed.pps.or(set(lim.pkts)),
        bps: fixed.bps.or(set(lim.bits)),
        new_flows_per_s: fixed.new_flows_per_s.or(set(lim.new)),
    })
}

/// A flood's worst second, and for carpet bombing its spread (addresses, busiest one's
/// packets).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Peak {
    pub(crate) b: Bucket,
    pub(crate) carpet: Option<(u32, u32)>,
}

pub(crate) fn flood_summary(
    kind: AlertKind,
    p: &Peak,
    refl: &[u64],
    refl_out: u64,
    cat: &Reflectors,
) -> String {
    let b = &p.b;
    match kind {
        AlertKind::SynFlood => format!(
            "{} new TCP flows in one second, {:.0}% never completed the handshake",
            b.tcp_new,
            f64::from(b.tcp_half_open) * 100.0 / f64::from(b.tcp_new.max(1))
        ),
        AlertKind::UdpAmplification => amp_summary(
            u64::from(b.refl_pkts),
            b.refl_bytes * 8,
            refl,
            refl_out,
            cat,
        ),
        AlertKind::CarpetBombing if p.carpet.is_some_and(|(n, _)| n > 0) => {
            let (n, top) = p.carpet.unwrap_or_default();
            format!(
                "{} packets, {} bits and {} new flows in one second spread over {n} addresses of the asset; the busiest address received {top} packets, within the per-address limit",
                b.pkts,
                b.bytes * 8,
                b.new_flows
            )
        }
        _ => format!(
            "{} packets, {} bits and {} new flows in one second towards the asset",
            b.pkts,
            b.bytes * 8,
            b.new_flows
        ),
    }
}

/// The kind of a flood second, from `counted` (the second's own counts) and `b` (the counts
/// judged over the limits: the second itself, or the last full second of traffic while it is
/// under way): amplification when reflected responses make most of its bytes, carpet bombing
/// when its spread says so (`carpet`), a SYN flood when its new TCP flows are mostly left
/// half-open and either crossed a new-flow limit or carry a good part of the second's packets
/// (whichever limit the flood crossed: the kind follows the traffic); `None` when nothing
/// more specific than a volumetric flood can be said.
pub(crate) fn classify(
    counted: &Bucket,
    b: &Bucket,
    lim: &Limits,
    s: &Settings,
    carpet: bool,
) -> Option<AlertKind> {
    let refl_share = counted.refl_bytes as f64 / counted.bytes.max(1) as f64;
    let half_open_share = if counted.tcp_new > 0 {
        f64::from(counted.tcp_half_open) / f64::from(counted.tcp_new)
    } else {
        0.0
    };
    let syn_limit = if lim.tcp.new != u64::MAX {
        lim.tcp.new
    } else {
        lim.total.new
    };
    // A SYN flood: new TCP flows, mostly left half-open, that crossed a new-flow limit (the
    // TCP one, or the total one while TCP makes most of the new flows), or that make most of
    // the new flows and carry at least a quarter of the packets, whichever limit was crossed.
    // (A few scanners' SYNs beside a large transfer carry far fewer.)
    let tcp_most = |b: &Bucket| u64::from(b.tcp_new) * 2 > u64::from(b.new_flows);
    let syn_over = u64::from(b.tcp_new) > syn_limit
        || (u64::from(b.new_flows) > lim.total.new && tcp_most(b))
        || (tcp_most(counted) && u64::from(counted.tcp_half_open) * 4 >= u64::from(counted.pkts));
    if refl_share >= s.amplification_share {
        Some(AlertKind::UdpAmplification)
    } else if carpet {
        Some(AlertKind::CarpetBombing)
    } else if syn_over && half_open_share >= s.syn_half_open_share {
        Some(AlertKind::SynFlood)
    } else {
        None
    }
}

impl<const N: usize> AssetState<N> {
    /// Judges second `sec` against the rate rules. A second already over a limit is judged
    /// again only once its counts grew by an eighth (or when it becomes final, `force`), so
    /// an attack's records do not each pay for a full judgement.
    pub(crate) fn judge(&mut self, cx: &Ctx, sec: u64, force: bool, out: &mut Vec<Alert>) {
        let s = cx.s;
        let slot = sec as usize % SEEN_SLOTS;
        if !force && self.is_hot(sec) {
            let seen = self
                .atk
                .as_ref()
                .map(|a| a.seen[slot])
                .filter(|x| x.sec == sec);
            if let (Some(seen), Some((c, x))) = (seen, self.parts(sec)) {
                if seen.next.holds(c, x) {
                    return;
                }
            }
        }
        let Some(counted) = self.get(sec) else {
            return;
        };
        let lim = self.limits();
        let mut b = counted;
        let mut over = lim.over(&b);
        if !over && !force && sec == self.newest && cx.now_ns / NS == sec {
            // The second under way is judged as the last full second of traffic: what it
            // counted so far and the part of the previous second still within one second of
            // now (spread evenly over it). A rate over a limit is seen as soon as one second
            // of it has passed, wherever the second boundaries fall.
            if let Some(prev) = sec.checked_sub(1).and_then(|p| self.get(p)) {
                let rest = 1.0 - (cx.now_ns % NS) as f64 / NS as f64;
                let window = counted.with_part_of(&prev, rest);
                if lim.over(&window) {
                    over = true;
                    b = window;
                }
            }
        }
        let amp_over = amplification::over(&b, s);
        if !over && !amp_over {
            return;
        }
        self.set_hot(sec);
        // Judged again once what this second itself counted grew.
        let next = Gate::after(&counted);
        self.atk().seen[slot] = Seen { sec, next };
        if sec == self.newest {
            // Cleared when the ring advances.
            self.gate = next;
        }
        let baseline = self.baseline_now(s);
        let measured = Measured {
            pps: f64::from(b.pkts),
            bps: (b.bytes * 8) as f64,
            new_flows_per_s: f64::from(b.new_flows),
        };
        let amp_ratio = amplification::ratio(&b, s);
        let mut amp_done = false;
        if over && self.scanner_dominated(s) && !amplification::over(&counted, s) {
            // A fast scan over a limit by itself: the scan rule reports it.
            over = false;
        }
        if over {
            let ratio = lim.ratio(&b);
            let carpet = self.carpet(cx, sec);
            // What the traffic is, from this second's own counts: a window reaching into the
            // previous second also holds what came before the attack.
            let kind = classify(&counted, &b, &lim, s, carpet.is_some()).unwrap_or_else(|| {
                // Nothing more specific: part of a flood already open on the asset, else a
                // volumetric flood. (One attack seen through a second that cannot be told
                // apart, e.g. one whose spread is no longer known, stays one alert.)
                self.open
                    .iter()
                    .find(|o| is_flood(o.kind))
                    .map_or(AlertKind::VolumetricFlood, |o| o.kind)
            });
            amp_done = kind == AlertKind::UdpAmplification;
            let peak = Peak { b, carpet };
            let (refl, refl_out) = self.reflected();
            let cat = &s.reflectors;
            let summary = move || flood_summary(kind, &peak, &refl, refl_out, cat);
            let ratio = if kind == AlertKind::UdpAmplification {
                ratio.max(amp_ratio)
            } else {
                ratio
            };
            self.hit(
                cx,
                kind,
                sec,
                sec * NS,
                measured,
                severity(ratio),
                summary,
                Extra {
                    peak: Some(peak),
                    threshold: shown_limits(&cx.asset.thresholds.total, &lim.total),
                    ..Extra::baseline(baseline)
                },
                out,
            );
        }
        if amp_over && !amp_done {
            let peak = Peak { b, carpet: None };
            let (refl, refl_out) = self.reflected();
            let summary = move || {
                flood_summary(
                    AlertKind::UdpAmplification,
                    &peak,
                    &refl,
                    refl_out,
                    &s.reflectors,
                )
            };
            self.hit(
                cx,
                AlertKind::UdpAmplification,
                sec,
                sec * NS,
                Measured {
                    pps: f64::from(b.refl_pkts),
                    bps: (b.refl_bytes * 8) as f64,
                    new_flows_per_s: f64::from(b.new_flows),
                },
                severity(amp_ratio),
                summary,
                Extra {
                    peak: Some(peak),
                    threshold: Some(Rates {
                        pps: Some(s.amplification_pps),
                        bps: Some(s.amplification_bps),
                        new_flows_per_s: None,
                    }),
                    ..Extra::baseline(baseline)
                },
                out,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(pps: u64, new: u64) -> Limits {
        Limits {
            total: Lim {
                pkts: pps,
                bits: u64::MAX,
                new,
            },
            tcp: UNSET,
            udp: UNSET,
            icmp: UNSET,
        }
    }

    fn syns(n: u32, half_open: u32) -> Bucket {
        Bucket {
            pkts: n,
            bytes: u64::from(n) * 60,
            new_flows: n,
            tcp_new: n,
            tcp_half_open: half_open,
            ..Bucket::default()
        }
    }

    #[test]
    fn half_open_new_flows_over_the_new_flow_limit_are_a_syn_flood() {
        let s = Settings::default();
        let lim = limits(u64::MAX, 1_000);
        let b = syns(5_000, 4_900);
        assert!(lim.over(&b));
        assert_eq!(classify(&b, &b, &lim, &s, false), Some(AlertKind::SynFlood));
        // Completed handshakes: a flood, but not of SYNs.
        let b = syns(5_000, 100);
        assert_eq!(classify(&b, &b, &lim, &s, false), None);
    }

    #[test]
    fn the_kind_follows_the_half_open_share_whichever_limit_was_crossed() {
        let s = Settings::default();
        // Only a packet limit: one-packet half-open SYNs are still a SYN flood.
        let lim = limits(10_000, u64::MAX);
        let b = syns(40_000, 40_000);
        assert_eq!(classify(&b, &b, &lim, &s, false), Some(AlertKind::SynFlood));
        // A large transfer with a few scanners' SYNs beside it is not.
        let transfer = Bucket {
            pkts: 40_000,
            bytes: 40_000 * 1_400,
            new_flows: 6,
            tcp_new: 6,
            tcp_half_open: 5,
            ..Bucket::default()
        };
        assert_eq!(classify(&transfer, &transfer, &lim, &s, false), None);
    }

    #[test]
    fn reflection_and_carpet_take_precedence_and_ratio_is_the_worst_figure() {
        let s = Settings::default();
        let lim = limits(1_000, u64::MAX);
        let b = Bucket {
            pkts: 3_000,
            bytes: 3_000_000,
            refl_bytes: 2_900_000,
            ..Bucket::default()
        };
        assert_eq!(
            classify(&b, &b, &lim, &s, true),
            Some(AlertKind::UdpAmplification)
        );
        let b = Bucket { refl_bytes: 0, ..b };
        assert_eq!(
            classify(&b, &b, &lim, &s, true),
            Some(AlertKind::CarpetBombing)
        );
        assert_eq!(classify(&b, &b, &lim, &s, false), None);
        assert!((lim.ratio(&b) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn the_learned_limit_applies_once_warm_and_never_below_its_floor() {
        let s = Settings::default();
        let fixed = Rates {
            pps: Some(500),
            ..Rates::default()
        };
        let mut base = Baseline::default();
        assert_eq!(total_limit(&fixed, &base, &s).pkts, 500);
        let quiet = crate::baseline::Sample {
            pkts: 10.0,
            ..crate::baseline::Sample::default()
        };
        for _ in 0..s.baseline_warmup.as_secs() {
            base.fold(0.01, 0, Some(&quiet));
        }
        // 10 pps learned × 3 is below the floor: the floor, above the static 500.
        assert_eq!(total_limit(&fixed, &base, &s).pkts, s.baseline_min_pps);
    }
}
