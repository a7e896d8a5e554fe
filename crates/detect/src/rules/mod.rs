//! The rules, one file each. Each judges from one second's counts ([`Bucket`]) or one
//! window's as a pure function; `state.rs` gathers the counts and `alert.rs` turns a verdict
//! into alert events.
//!
//! - [`flood`]: volumetric and SYN flood;
//! - [`amplification`]: UDP amplification and TCP reflection;
//! - [`carpet`]: carpet bombing of a multi-address asset;
//! - [`impairment`]: service impairment;
//! - [`ics`]: industrial command abuse;
//! - [`scan`]: port and address scans;
//! - [`sources`]: which sources gathered during a flood are the attack's (named, counted);
//! - [`exfil`]: bulk exfiltration.

pub(crate) mod amplification;
pub(crate) mod carpet;
pub(crate) mod exfil;
pub(crate) mod flood;
pub(crate) mod ics;
pub(crate) mod impairment;
pub(crate) mod scan;
pub(crate) mod sources;

use crate::state::*;
use normwatch_model::{Asset, Rates, Severity};

/// One second of traffic in full, as the rules read it (a copy, never stored per second).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Bucket {
    pub(crate) bytes: u64,
    pub(crate) tcp_bytes: u64,
    pub(crate) udp_bytes: u64,
    pub(crate) icmp_bytes: u64,
    pub(crate) refl_bytes: u64,
    pub(crate) pkts: u32,
    pub(crate) new_flows: u32,
    pub(crate) tcp_pkts: u32,
    pub(crate) tcp_new: u32,
    pub(crate) tcp_half_open: u32,
    pub(crate) udp_pkts: u32,
    pub(crate) udp_new: u32,
    pub(crate) icmp_pkts: u32,
    pub(crate) icmp_new: u32,
    pub(crate) refl_pkts: u32,
    pub(crate) svc_att: u32,
    pub(crate) svc_est: u32,
    pub(crate) svc_flows: u32,
    pub(crate) svc_ans: u32,
    /// A limit was crossed in this second (it does not feed the baseline).
    pub(crate) hot: bool,
}

impl Bucket {
    /// These counts plus the share `part` (0 to 1) of `prev`'s: the last second of traffic
    /// when this second is under way.
    pub(crate) fn with_part_of(&self, prev: &Bucket, part: f64) -> Bucket {
        let p32 = |v: u32| (f64::from(v) * part) as u32;
        let p64 = |v: u64| (v as f64 * part) as u64;
        Bucket {
            bytes: self.bytes + p64(prev.bytes),
            tcp_bytes: self.tcp_bytes + p64(prev.tcp_bytes),
            udp_bytes: self.udp_bytes + p64(prev.udp_bytes),
            icmp_bytes: self.icmp_bytes + p64(prev.icmp_bytes),
            refl_bytes: self.refl_bytes + p64(prev.refl_bytes),
            pkts: self.pkts.saturating_add(p32(prev.pkts)),
            new_flows: self.new_flows.saturating_add(p32(prev.new_flows)),
            tcp_pkts: self.tcp_pkts.saturating_add(p32(prev.tcp_pkts)),
            tcp_new: self.tcp_new.saturating_add(p32(prev.tcp_new)),
            tcp_half_open: self.tcp_half_open.saturating_add(p32(prev.tcp_half_open)),
            udp_pkts: self.udp_pkts.saturating_add(p32(prev.udp_pkts)),
            udp_new: self.udp_new.saturating_add(p32(prev.udp_new)),
            icmp_pkts: self.icmp_pkts.saturating_add(p32(prev.icmp_pkts)),
            icmp_new: self.icmp_new.saturating_add(p32(prev.icmp_new)),
            refl_pkts: self.refl_pkts.saturating_add(p32(prev.refl_pkts)),
            ..*self
        }
    }

    /// Nothing reached this second.
    pub(crate) fn is_empty(&self) -> bool {
        self.pkts == 0 && self.new_flows == 0 && self.bytes == 0 && !self.hot
    }

    pub(crate) fn of(c: &Core, x: &Ext, hot: bool) -> Bucket {
        Bucket {
            bytes: c.bytes,
            tcp_bytes: x.tcp_bytes,
            udp_bytes: x.udp_bytes,
            icmp_bytes: x.icmp_bytes,
            refl_bytes: x.refl_bytes,
            pkts: c.pkts,
            new_flows: c.new_flows,
            tcp_pkts: x.tcp_pkts,
            tcp_new: c.tcp_new,
            tcp_half_open: c.tcp_half_open,
            udp_pkts: x.udp_pkts,
            udp_new: x.udp_new,
            icmp_pkts: x.icmp_pkts,
            icmp_new: x.icmp_new,
            refl_pkts: x.refl_pkts,
            svc_att: c.svc_att,
            svc_est: c.svc_est,
            svc_flows: c.svc_flows,
            svc_ans: c.svc_ans,
            hot,
        }
    }
}

/// Effective limits of one traffic class; `u64::MAX` is not checked.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lim {
    pub(crate) pkts: u64,
    pub(crate) bits: u64,
    pub(crate) new: u64,
}

impl Lim {
    pub(crate) fn fixed(r: &Rates) -> Lim {
        Lim {
            pkts: r.pps.unwrap_or(u64::MAX),
            bits: r.bps.unwrap_or(u64::MAX),
            new: r.new_flows_per_s.unwrap_or(u64::MAX),
        }
    }

    #[inline]
    pub(crate) fn over(&self, pkts: u32, bytes: u64, new: u32) -> bool {
        u64::from(pkts) > self.pkts
            || bytes.saturating_mul(8) > self.bits
            || u64::from(new) > self.new
    }

    /// How far over the worst of the three it is (0 when none is set).
    pub(crate) fn ratio(&self, pkts: u64, bytes: u64, new: u64) -> f64 {
        let r = |v: u64, l: u64| {
            if l == u64::MAX {
                0.0
            } else {
                v as f64 / l.max(1) as f64
            }
        };
        r(pkts, self.pkts)
            .max(r(bytes.saturating_mul(8), self.bits))
            .max(r(new, self.new))
    }
}

/// The limits in force: static thresholds raised to the learned baseline (totals only).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub(crate) total: Lim,
    pub(crate) tcp: Lim,
    pub(crate) udp: Lim,
    pub(crate) icmp: Lim,
}

impl Limits {
    /// Some limit of the total or of a protocol is crossed in `b`.
    pub(crate) fn over(&self, b: &Bucket) -> bool {
        self.total.over(b.pkts, b.bytes, b.new_flows)
            || self.tcp.over(b.tcp_pkts, b.tcp_bytes, b.tcp_new)
            || self.udp.over(b.udp_pkts, b.udp_bytes, b.udp_new)
            || self.icmp.over(b.icmp_pkts, b.icmp_bytes, b.icmp_new)
    }

    /// How far over its limit the worst figure of `b` is (0 when no limit is set).
    pub(crate) fn ratio(&self, b: &Bucket) -> f64 {
        [
            self.total
                .ratio(u64::from(b.pkts), b.bytes, u64::from(b.new_flows)),
            self.tcp
                .ratio(u64::from(b.tcp_pkts), b.tcp_bytes, u64::from(b.tcp_new)),
            self.udp
                .ratio(u64::from(b.udp_pkts), b.udp_bytes, u64::from(b.udp_new)),
            self.icmp
                .ratio(u64::from(b.icmp_pkts), b.icmp_bytes, u64::from(b.icmp_new)),
        ]
        .into_iter()
        .fold(0.0, f64::max)
    }
}

pub(crate) const UNSET: Lim = Lim {
    pkts: u64::MAX,
    bits: u64::MAX,
    new: u64::MAX,
};

/// Per-protocol limits, held only by assets that set one.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ProtoLim {
    pub(crate) tcp: Lim,
    pub(crate) udp: Lim,
    pub(crate) icmp: Lim,
}

pub(crate) const NO_PROTO_LIMITS: ProtoLim = ProtoLim {
    tcp: UNSET,
    udp: UNSET,
    icmp: UNSET,
};

pub(crate) fn proto_limits(asset: &Asset) -> Option<ProtoLim> {
    let t = &asset.thresholds;
    let p = ProtoLim {
        tcp: Lim::fixed(&t.tcp),
        udp: Lim::fixed(&t.udp),
        icmp: Lim::fixed(&t.icmp),
    };
    let set = |l: &Lim| l.pkts != u64::MAX || l.bits != u64::MAX || l.new != u64::MAX;
    (set(&p.tcp) || set(&p.udp) || set(&p.icmp)).then_some(p)
}

/// Severity from how far the worst rate is over its limit.
pub(crate) fn severity(ratio: f64) -> Severity {
    if ratio >= 10.0 {
        Severity::Critical
    } else if ratio >= 3.0 {
        Severity::High
    } else {
        Severity::Medium
    }
}
