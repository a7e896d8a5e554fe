//! One asset's detector state and the rules that read it.

use crate::baseline::{Baseline, Sample};
use crate::reflect::{reflector, REFLECTORS};
use crate::sketch::{Cardinality, Distinct};
use crate::{Footprint, Settings, NS};
use hashbrown::HashMap;
use normwatch_config::norms::NormCatalogue;
use normwatch_model::{
    Alert, AlertKind, AlertState, Asset, AssetIndex, DirStats, FlowRecord, IcsCounts, Impairment,
    Measured, PriorDir, Rates, Role, Severity, Side, SpoofingAssessment, TcpFlags, TopSource,
};
use std::net::IpAddr;

/// Least seconds of history per asset; more when the allowed lateness needs them.
const MIN_RING: u64 = 16;
/// Most seconds of history per asset.
const MAX_RING: u64 = 64;
/// Seconds before the ring kept for late records of short flows (a flood's flows reported
/// only at their idle timeout). A power of two.
const LATE_SLOTS: usize = 4;
/// Sources remembered per asset while an alert may need naming them (more are counted).
const MAX_SOURCES: usize = 1024;
/// Sources followed by the scan rule per asset (more are not followed until some expire).
const MAX_SCANNERS: usize = 4096;
/// Addresses of a multi-address asset followed in one second.
const MAX_SPREAD: usize = 4096;
/// Prefixes of up to 2^this IPv4 addresses keep a cell per address for the spread.
const DIRECT_SPREAD_BITS: u8 = 10;
/// External destinations followed exactly per `holds-ip` asset.
const MAX_EXFIL: usize = 1024;
/// The sketch of bytes a `holds-ip` asset sent per destination: rows and counters per row.
const SENT_ROWS: usize = 2;
const SENT_COLS: usize = 64;
/// A destination is followed exactly once the sketch says it may have received this
/// fraction (1/2^shift) of the exfiltration limit.
const SENT_ADMIT_SHIFT: u32 = 4;
/// Sources named in an alert. Evidence packages are addressed to the States these sources
/// are registered in, so a botnet spread over many States needs more than a handful named;
/// a hundred keep an alert event near 10 KB of JSON.
const TOP_SOURCES: usize = 100;
/// Event seconds between sweeps of idle scanners and expired destinations.
const SWEEP_SECS: u64 = 60;
/// Event seconds a closed alert's window is remembered past its quiet period, so late
/// records of its attack do not open another alert. A flow table reports a flow at its idle
/// timeout (Zeek's is a minute for UDP and ICMP; a sensor may use five minutes for TCP), so
/// its records can be that much later than the detector's allowed lateness.
const CLOSED_KEEP_SECS: u64 = 300;
/// Closed alerts remembered per asset (the oldest is forgotten first).
const MAX_CLOSED: usize = 8;

/// What the rules need besides the asset's own state.
pub(crate) struct Ctx<'a> {
    pub s: &'a Settings,
    pub norms: &'a NormCatalogue,
    pub asset: &'a Asset,
    pub index: &'a AssetIndex,
    /// The latest watermark second the detector acted on.
    pub watermark: u64,
    /// The latest event time the detector has seen (ns; 0 when not known), for the rate of
    /// the second now under way.
    pub now_ns: u64,
}

impl<'a> Ctx<'a> {
    /// The context for the asset at position `idx` of `index`.
    #[inline]
    pub fn of(
        s: &'a Settings,
        norms: &'a NormCatalogue,
        index: &'a AssetIndex,
        idx: usize,
        watermark: u64,
    ) -> Self {
        Ctx {
            s,
            norms,
            asset: index.get(idx as u32),
            index,
            watermark,
            now_ns: 0,
        }
    }
}

pub(crate) fn ring_len(s: &Settings) -> u64 {
    // A power of two: the slot of a second is a mask, not a division. Bounded, so a long
    // allowed lateness does not cost every asset a long ring: seconds leaving the ring are
    // made final early, and later records reach only the late cache and the baseline.
    (s.lateness_secs + 4)
        .clamp(MIN_RING, MAX_RING)
        .next_power_of_two()
}

/// One second of traffic towards the asset, as every asset counts it (40 bytes). Counts are
/// u32, saturating rather than wrapping: 4.29 billion packets, flows or handshakes in one
/// second towards one asset is beyond any link a sensor captures (a 400 Gbit/s link carries
/// under 600 M minimum-size packets a second). Bytes are u64. The second a slot holds is
/// implied by the ring's newest second: a slot is cleared when the ring advances onto it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Core {
    bytes: u64,
    pkts: u32,
    new_flows: u32,
    tcp_new: u32,
    tcp_half_open: u32,
    /// Service ports: TCP attempts, of them established; flows, of them answered.
    svc_att: u32,
    svc_est: u32,
    svc_flows: u32,
    svc_ans: u32,
}

/// Per-protocol and reflected counts of one second, kept only by assets with per-protocol
/// thresholds or that have received unsolicited reflector responses: other assets never read
/// them (their per-protocol limits are unset, and nothing of theirs was reflected).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Ext {
    tcp_bytes: u64,
    udp_bytes: u64,
    icmp_bytes: u64,
    /// Unsolicited responses from reflector ports.
    refl_bytes: u64,
    tcp_pkts: u32,
    udp_pkts: u32,
    udp_new: u32,
    icmp_pkts: u32,
    icmp_new: u32,
    refl_pkts: u32,
}

/// A second of the cache of late seconds: its own tag, flag and both parts.
#[derive(Clone, Copy, Debug, Default)]
struct LateSlot {
    sec: u64,
    hot: bool,
    c: Core,
    x: Ext,
}

/// One second of traffic in full, as the rules read it (a copy, never stored per second).
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    bytes: u64,
    tcp_bytes: u64,
    udp_bytes: u64,
    icmp_bytes: u64,
    refl_bytes: u64,
    pkts: u32,
    new_flows: u32,
    tcp_pkts: u32,
    tcp_new: u32,
    tcp_half_open: u32,
    udp_pkts: u32,
    udp_new: u32,
    icmp_pkts: u32,
    icmp_new: u32,
    refl_pkts: u32,
    svc_att: u32,
    svc_est: u32,
    svc_flows: u32,
    svc_ans: u32,
    /// A limit was crossed in this second (it does not feed the baseline).
    hot: bool,
}

impl Bucket {
    /// These counts plus the share `part` (0 to 1) of `prev`'s: the last second of traffic
    /// when this second is under way.
    fn with_part_of(&self, prev: &Bucket, part: f64) -> Bucket {
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
    fn is_empty(&self) -> bool {
        self.pkts == 0 && self.new_flows == 0 && self.bytes == 0 && !self.hot
    }

    fn of(c: &Core, x: &Ext, hot: bool) -> Bucket {
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

/// A second already over a limit when it was last judged, and the counts it must grow past
/// to be judged again.
#[derive(Clone, Copy, Debug, Default)]
struct Seen {
    sec: u64,
    next: Gate,
}

/// A second's counts when it was last judged over a limit, grown by an eighth: up to them it
/// is not judged again.
#[derive(Clone, Copy, Debug, Default)]
struct Gate {
    pkts: u32,
    new: u32,
    refl: u32,
}

impl Gate {
    fn after(b: &Bucket) -> Gate {
        let grown = |n: u32| n.saturating_add(n / 8);
        Gate {
            pkts: grown(b.pkts),
            new: grown(b.new_flows),
            refl: grown(b.refl_pkts),
        }
    }

    /// Counts still within the gate: not worth judging again.
    #[inline]
    fn holds(&self, c: &Core, x: Option<&Ext>) -> bool {
        c.pkts <= self.pkts && c.new_flows <= self.new && x.map_or(0, |x| x.refl_pkts) <= self.refl
    }
}

/// Seconds whose judged counts are remembered (by second modulo this; a collision only
/// costs one more judgement).
const SEEN_SLOTS: usize = 16;

#[inline]
fn add32(a: &mut u32, v: u64) {
    *a = a.saturating_add(u32::try_from(v).unwrap_or(u32::MAX));
}

/// Effective limits of one traffic class; `u64::MAX` is not checked.
#[derive(Clone, Copy, Debug)]
struct Lim {
    pkts: u64,
    bits: u64,
    new: u64,
}

impl Lim {
    fn fixed(r: &Rates) -> Lim {
        Lim {
            pkts: r.pps.unwrap_or(u64::MAX),
            bits: r.bps.unwrap_or(u64::MAX),
            new: r.new_flows_per_s.unwrap_or(u64::MAX),
        }
    }

    #[inline]
    fn over(&self, pkts: u32, bytes: u64, new: u32) -> bool {
        u64::from(pkts) > self.pkts
            || bytes.saturating_mul(8) > self.bits
            || u64::from(new) > self.new
    }

    /// How far over the worst of the three it is (0 when none is set).
    fn ratio(&self, pkts: u64, bytes: u64, new: u64) -> f64 {
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
struct Limits {
    total: Lim,
    tcp: Lim,
    udp: Lim,
    icmp: Lim,
}

const UNSET: Lim = Lim {
    pkts: u64::MAX,
    bits: u64::MAX,
    new: u64::MAX,
};

/// Per-protocol limits, held only by assets that set one.
#[derive(Clone, Copy, Debug)]
struct ProtoLim {
    tcp: Lim,
    udp: Lim,
    icmp: Lim,
}

const NO_PROTO_LIMITS: ProtoLim = ProtoLim {
    tcp: UNSET,
    udp: UNSET,
    icmp: UNSET,
};

fn proto_limits(asset: &Asset) -> Option<ProtoLim> {
    let t = &asset.thresholds;
    let p = ProtoLim {
        tcp: Lim::fixed(&t.tcp),
        udp: Lim::fixed(&t.udp),
        icmp: Lim::fixed(&t.icmp),
    };
    let set = |l: &Lim| l.pkts != u64::MAX || l.bits != u64::MAX || l.new != u64::MAX;
    (set(&p.tcp) || set(&p.udp) || set(&p.icmp)).then_some(p)
}

/// The total limits: static thresholds raised to the learned baseline once it is warm.
fn total_limit(fixed: &Rates, base: &Baseline, s: &Settings) -> Lim {
    let warm = base.seconds >= s.baseline_warmup_secs;
    if !warm {
        return Lim::fixed(fixed);
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

/// A one-hash Bloom filter over hashed addresses (`addr_key`), `WORDS` × 64 bits: "certainly
/// not added" without probing the table it stands for.
#[derive(Debug)]
struct Filter<const WORDS: usize>([u64; WORDS]);

/// The filter over the addresses in a full source table: 8 bits per entry, so about one in
/// eight absent addresses still probes the table.
type Held = Filter<{ MAX_SOURCES * 8 / 64 }>;

/// The same over a full scan table.
type Scanners = Filter<{ MAX_SCANNERS * 8 / 64 }>;

impl<const WORDS: usize> Default for Filter<WORDS> {
    fn default() -> Self {
        Filter([0; WORDS])
    }
}

impl<const WORDS: usize> Filter<WORDS> {
    #[inline]
    fn bit(v: u64) -> usize {
        let bits = (WORDS * 64).trailing_zeros();
        (v.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    fn add(&mut self, v: u64) {
        let b = Self::bit(v);
        self.0[b / 64] |= 1 << (b % 64);
    }

    #[inline]
    fn maybe(&self, v: u64) -> bool {
        let b = Self::bit(v);
        self.0[b / 64] & (1 << (b % 64)) != 0
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Src {
    pkts: u64,
    bytes: u64,
    reflector: bool,
}

/// One source's probes of the asset.
#[derive(Clone, Copy, Debug, Default)]
struct Probe {
    ports: Distinct,
    addrs: Distinct,
    first_sec: u64,
    last_sec: u64,
    probes: u64,
}

/// Bytes one external destination received from the asset in the current window.
#[derive(Clone, Copy, Debug, Default)]
struct Outbound {
    start_sec: u64,
    last_sec: u64,
    bytes: u64,
}

/// One address's traffic in one second.
#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    sec: u64,
    pkts: u32,
    new: u32,
    bytes: u64,
}

/// How one second's traffic spread over the asset's addresses.
#[derive(Clone, Copy, Debug, Default)]
struct SecSpread {
    sec: u64,
    /// Addresses hit (beyond the table's bound: counted, not followed).
    distinct: u32,
    max_pkts: u32,
    max_bytes: u64,
    max_new: u32,
}

/// Per-address traffic of a multi-address asset: the latest second in full, the one before
/// as its totals (records spanning the boundary judge it after the latest began).
#[derive(Debug, Default)]
struct Spread {
    /// A single IPv4 prefix of at most `DIRECT_SPREAD` addresses: its network and size, and
    /// a cell per address (made on first use), so no hashing.
    direct: Option<(u32, u32)>,
    cells: Vec<Cell>,
    /// Other assets: the latest second's addresses.
    addrs: HashMap<IpAddr, Cell>,
    cur: SecSpread,
    prev: SecSpread,
}

#[derive(Debug)]
struct Open {
    id: String,
    kind: AlertKind,
    start_ns: u64,
    /// Last second in which the condition held.
    last_hit_sec: u64,
    /// The asset's own watermark (newest second minus the allowed lateness) when the latest
    /// hit was seen: hits that keep arriving late keep the alert open.
    heard_sec: u64,
    last_update_sec: u64,
    measured: Measured,
    severity: Severity,
    summary: String,
    baseline: Option<Measured>,
    impairment: Option<Impairment>,
    /// Parties named by the rule itself (scanner, exfiltration destination, commanding
    /// source); empty: the asset's busiest sources.
    named: Vec<TopSource>,
    /// The worst second of a flood.
    peak: Option<Peak>,
    /// The limits compared with, where they are not the asset's thresholds.
    threshold: Option<Rates>,
}

/// A flood's worst second, and for carpet bombing its spread (addresses, busiest one's
/// packets).
#[derive(Clone, Copy, Debug)]
struct Peak {
    b: Bucket,
    carpet: Option<(u32, u32)>,
}

/// An empty alert, to hold a slot while the real one is borrowed elsewhere.
fn placeholder() -> Open {
    Open {
        id: String::new(),
        kind: AlertKind::Scan,
        start_ns: 0,
        last_hit_sec: 0,
        heard_sec: 0,
        last_update_sec: 0,
        measured: Measured::default(),
        severity: Severity::Low,
        summary: String::new(),
        baseline: None,
        impairment: None,
        named: Vec::new(),
        peak: None,
        threshold: None,
    }
}

/// Quiet seconds before an alert of `kind` closes. Bulk exfiltration is a total over its
/// window, reported by flow records that may be minutes apart (a sensor's active timeout):
/// the same transfer keeps one alert while records come within the window.
/// Quiet seconds before an alert of `kind` closes: a scan or an upload is one alert for as
/// long as its rule follows it (probes with no longer gap than `scan_idle_secs`, bytes within
/// the exfiltration window), however sparse its records.
fn quiet_secs(s: &Settings, kind: AlertKind) -> u64 {
    match kind {
        AlertKind::BulkExfiltration => s.quiet_secs.max(s.exfil_window_secs),
        AlertKind::Scan => s.quiet_secs.max(s.scan_idle_secs),
        _ => s.quiet_secs,
    }
}

fn is_flood(kind: AlertKind) -> bool {
    matches!(
        kind,
        AlertKind::VolumetricFlood
            | AlertKind::SynFlood
            | AlertKind::UdpAmplification
            | AlertKind::CarpetBombing
    )
}

/// Severity from how far the worst rate is over its limit.
fn severity(ratio: f64) -> Severity {
    if ratio >= 10.0 {
        Severity::Critical
    } else if ratio >= 3.0 {
        Severity::High
    } else {
        Severity::Medium
    }
}

/// Popcount a [`Distinct`] bitmap reaches when `n` distinct values went in (expected).
fn bits_for(n: u32) -> u32 {
    let n = f64::from(n.max(1));
    (128.0 * (1.0 - (-n / 128.0).exp())).round().max(1.0) as u32
}

fn addr_key(a: IpAddr) -> u64 {
    match a {
        IpAddr::V4(v) => u64::from(u32::from(v)),
        IpAddr::V6(v) => {
            let b = u128::from(v);
            (b as u64) ^ ((b >> 64) as u64).rotate_left(17)
        }
    }
}

/// What a record adds to a flow's earlier records in one direction: packets and IP bytes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Added {
    pkts: u64,
    bytes: u64,
}

impl Added {
    /// Everything: the flow's first record.
    #[inline]
    fn all(d: &DirStats) -> Added {
        Added {
            pkts: d.pkts,
            bytes: d.ip_bytes,
        }
    }

    /// What was sent since the prior record.
    #[inline]
    fn since(p: &PriorDir, d: &DirStats) -> Added {
        let (pkts, bytes) = p.added(d);
        Added { pkts, bytes }
    }
}

/// A probe: a connection attempt the remote end originated that never completed a handshake
/// and carried no data — a SYN (and maybe a RST), never an ACK from the prober. So a
/// SYN-ACK or RST arriving unsolicited (backscatter of someone else's spoofed flood: its ACK
/// answers a SYN the asset never sent) is not one, nor is a health check that completes its
/// handshake; a connect() scan counts on the closed ports it hits, not on the open ones.
/// Over UDP: a flow the asset never answered, not from a reflector port (those are responses).
fn is_probe(r: &FlowRecord, inbound: &DirStats, outbound: &DirStats, remote_port: u16) -> bool {
    match r.ip_proto {
        6 => {
            let f = inbound.tcp_flags;
            f.has(TcpFlags::SYN) && !f.has(TcpFlags::ACK) && inbound.payload_bytes == 0
        }
        17 => outbound.pkts == 0 && reflector(remote_port).is_none(),
        _ => false,
    }
}

#[derive(Debug)]
// Fields a record touches come first, in declaration order (`repr(C)`), within the first two
// cache lines (the state is aligned to one), then the ring of seconds: a cold asset's slot is
// found from the state's address alone, so its cache misses overlap. What only alerts, final
// seconds and attacks use follows.
#[repr(C, align(64))]
pub(crate) struct AssetState<const N: usize> {
    /// Newest second seen; seconds up to `finalized` are final.
    newest: u64,
    finalized: u64,
    /// The total limits in force (static thresholds raised to the learned baseline).
    lim: Lim,
    /// Ring slots whose second crossed a limit (bit per slot; the ring has at most 64).
    hot: u64,
    /// Checked before `judge` is called at all (see [`Gate`]).
    gate: Gate,
    /// Packets counted for seconds already final, since the last finalisation (saturating).
    late_pkts: u32,
    open: Vec<Open>,
    /// The per-protocol and reflected part of each ring slot (made when needed).
    ext: Option<Box<[Ext; N]>>,
    /// Copied from the asset, so a record does not reach into its configuration.
    ports: Ports,
    holds_ip: bool,
    /// The asset has more than one address.
    multi: bool,
    /// On the detector's list of assets to visit when the watermark moves.
    pub(crate) listed: bool,
    /// Sources or reflected bytes were gathered since they were last forgotten.
    gathered: bool,
    /// One slot per second, `newest` and the seconds before it (see [`Core`]), in the state
    /// itself: a record's slot is found from the state's address alone, so reading it does
    /// not wait for a pointer to load. The length is a constant of the type (the detector
    /// picks the state type from the allowed lateness), so slot arithmetic has no length to
    /// read and no bounds to check.
    ring: [Core; N],
    /// Seconds before the ring's window that late records still reach (made on first use).
    late_cache: Option<Box<[LateSlot; LATE_SLOTS]>>,
    /// Per-protocol limits, where the asset sets any.
    plim: Option<Box<ProtoLim>>,
    /// Per-address traffic of an asset with more than one address (carpet bombing applies),
    /// made when an attack may first be building.
    spread: Option<Box<Spread>>,
    /// Bytes counted for seconds already final, since the last finalisation.
    late_bytes: u64,
    base: Baseline,
    /// What an attack gathers (made when the first one may be building).
    atk: Option<Box<Attack>>,
    /// The scan and exfiltration rules' tables (made on the first probe or upload).
    tables: Option<Box<Tables>>,
}

/// What an attack on the asset gathers: its sources and reflected traffic, and the counts of
/// its seconds when last judged.
#[derive(Debug, Default)]
struct Attack {
    sources: HashMap<IpAddr, Src>,
    /// Which sources the full table may hold (made when it fills).
    held: Option<Box<Held>>,
    others: (u64, u64),
    /// Reflected bytes by protocol, and bytes the asset sent in those flows, since nothing
    /// was open.
    refl: [u64; REFLECTORS.len()],
    refl_out: u64,
    seen: [Seen; SEEN_SLOTS],
    /// Recently closed alerts.
    closed: Vec<Closed>,
    /// Hits folded into a closed alert's window (late records of its attack).
    late_hits: u64,
    /// Distinct sources gathered, beyond the table's room too.
    distinct: Cardinality,
}

#[cold]
fn new_attack() -> Box<Attack> {
    Box::new(Attack {
        sources: HashMap::new(),
        held: None,
        distinct: Cardinality::default(),
        others: (0, 0),
        refl: [0; REFLECTORS.len()],
        refl_out: 0,
        seen: [Seen::default(); SEEN_SLOTS],
        closed: Vec::new(),
        late_hits: 0,
    })
}

/// A closed alert: its kind, the seconds it covered and the parties it named.
#[derive(Debug)]
struct Closed {
    kind: AlertKind,
    first_sec: u64,
    last_sec: u64,
    named: Vec<IpAddr>,
}

/// The tables of the per-source rules.
#[derive(Debug)]
struct Tables {
    scans: HashMap<IpAddr, Probe>,
    /// Which sources the full scan table may hold (made when it is found full, dropped when
    /// a sweep may have made room): a spoofed flood's sources are nearly all new, and a bit
    /// per hashed address says "certainly not followed" without probing the table.
    scanning: Option<Box<Scanners>>,
    /// Destinations followed exactly, and which may be among them.
    exfil: HashMap<IpAddr, Outbound>,
    followed: Filter<4>,
    /// What every other destination may have received (made on the first upload).
    sent: Option<Box<Sent>>,
    last_sweep: u64,
}

/// A count-min sketch of the KiB a `holds-ip` asset sent to each external destination in the
/// current window (512 bytes). It never under-counts, so a destination is followed exactly
/// (in `Tables::exfil`) no later than when it has really received 1/16 of the limit: an
/// upload is flagged by the time it passes the limit plus at most that much per window,
/// while a server's many ordinary clients cost two counters each, not a table entry.
#[derive(Debug)]
struct Sent {
    start_sec: u64,
    kib: [[u32; SENT_COLS]; SENT_ROWS],
}

impl Sent {
    /// Adds `bytes` for the destination `key` (`addr_key`); its estimate afterwards, in bytes.
    #[inline]
    fn add(&mut self, key: u64, bytes: u64) -> u64 {
        let h = key.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let kib = u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX);
        let mut est = u32::MAX;
        for (row, counters) in self.kib.iter_mut().enumerate() {
            let col = (h >> (40 + 6 * row)) as usize % SENT_COLS;
            let c = &mut counters[col];
            *c = c.saturating_add(kib);
            est = est.min(*c);
        }
        u64::from(est) * 1024
    }
}

/// The asset's service ports: the first few inline (most assets have fewer); with more, the
/// rest are read from the asset's own list.
#[derive(Debug)]
struct Ports {
    inline: [u16; 8],
    len: u8,
    more: bool,
}

impl Ports {
    fn new(all: &[u16]) -> Ports {
        // Unused slots repeat the first port, so a lookup compares all eight without a length.
        let mut inline = [all.first().copied().unwrap_or(0); 8];
        let n = all.len().min(inline.len());
        inline[..n].copy_from_slice(&all[..n]);
        Ports {
            inline,
            len: n as u8,
            more: all.len() > n,
        }
    }

    #[inline(always)]
    fn contains(&self, p: u16, asset: &Asset) -> bool {
        (self.len > 0 && self.inline.iter().fold(false, |hit, &q| hit | (q == p)))
            || (self.more && asset.service_ports.contains(&p))
    }
}

/// Memory figures of states with `N` seconds of history.
pub(crate) fn footprint<const N: usize>() -> Footprint {
    // A hashbrown table holds one entry and one control byte per bucket, and keeps at most
    // 7/8 of its buckets full.
    let entry = |k: usize, v: usize| (k + v + 1) * 8 / 7 + 1;
    Footprint {
        per_asset: size_of::<Option<AssetState<N>>>(),
        per_asset_ext: size_of::<[Ext; N]>(),
        per_source: entry(size_of::<IpAddr>(), size_of::<Src>()),
        per_scanner: entry(size_of::<IpAddr>(), size_of::<Probe>()),
        per_spread_addr: size_of::<Cell>(),
    }
}

impl<const N: usize> AssetState<N> {
    /// The learned normal, for reporting.
    pub(crate) fn learned(&self) -> &Baseline {
        &self.base
    }

    /// Inbound packets, bits and new flows of the latest complete second (the one before the
    /// newest seen; zero if nothing came).
    pub(crate) fn latest(&self) -> Measured {
        let sec = self.newest.saturating_sub(1);
        self.get(sec).map_or_else(Measured::default, |b| {
            let s = sample(&b);
            Measured {
                pps: s.pkts,
                bps: s.bits,
                new_flows_per_s: s.new_flows,
            }
        })
    }

    /// Bytes this state holds: itself, its ring, caches and tables (as allocated, so spare
    /// capacity counts) and its open alerts.
    pub(crate) fn heap_bytes(&self) -> usize {
        size_of::<AssetState<N>>()
            + self.ext.as_ref().map_or(0, |_| size_of::<[Ext; N]>())
            + self.plim.as_ref().map_or(0, |_| size_of::<ProtoLim>())
            + self
                .late_cache
                .as_ref()
                .map_or(0, |_| size_of::<[LateSlot; LATE_SLOTS]>())
            + self.atk.as_ref().map_or(0, |a| {
                size_of::<Attack>()
                    + a.closed.capacity() * size_of::<Closed>()
                    + a.closed
                        .iter()
                        .map(|c| c.named.capacity() * size_of::<IpAddr>())
                        .sum::<usize>()
                    + a.sources.allocation_size()
                    + a.held.as_ref().map_or(0, |_| size_of::<Held>())
            })
            + self.tables.as_ref().map_or(0, |t| {
                size_of::<Tables>()
                    + t.scans.allocation_size()
                    + t.scanning.as_ref().map_or(0, |_| size_of::<Scanners>())
                    + t.exfil.allocation_size()
                    + t.sent.as_ref().map_or(0, |_| size_of::<Sent>())
            })
            + self.spread.as_ref().map_or(0, |sp| {
                size_of::<Spread>()
                    + sp.addrs.allocation_size()
                    + sp.cells.capacity() * size_of::<Cell>()
            })
            + self.open.capacity() * size_of::<Open>()
            + self
                .open
                .iter()
                .map(|o| {
                    o.id.capacity()
                        + o.summary.capacity()
                        + o.named.capacity() * size_of::<TopSource>()
                })
                .sum::<usize>()
    }

    /// Sources held for naming and followed by the scan rule.
    pub(crate) fn tracked_sources(&self) -> (usize, usize) {
        (
            self.atk.as_ref().map_or(0, |a| a.sources.len()),
            self.tables.as_ref().map_or(0, |t| t.scans.len()),
        )
    }

    pub(crate) fn new(cx: &Ctx, first_sec: u64) -> Self {
        let base = Baseline::default();
        let multi = cx
            .asset
            .cidrs
            .iter()
            .any(|n| n.prefix_len() < n.max_prefix_len());
        debug_assert_eq!(ring_len(cx.s), N as u64);
        let plim = proto_limits(cx.asset);
        AssetState {
            ring: [Core::default(); N],
            ext: plim.map(|_| Box::new([Ext::default(); N])),
            plim: plim.map(Box::new),
            hot: 0,
            gate: Gate::default(),
            late_pkts: 0,
            late_cache: None,
            newest: first_sec,
            finalized: first_sec.saturating_sub(1),
            lim: total_limit(&cx.asset.thresholds.total, &base, cx.s),
            base,
            late_bytes: 0,
            atk: None,
            tables: None,
            open: Vec::new(),
            spread: None,
            multi,
            listed: false,
            gathered: false,
            holds_ip: cx.asset.has_role(Role::HoldsIp),
            ports: Ports::new(&cx.asset.service_ports),
        }
    }

    /// The limits in force, per protocol too.
    #[inline]
    fn limits(&self) -> Limits {
        let p = self.plim.as_deref().copied().unwrap_or(NO_PROTO_LIMITS);
        Limits {
            total: self.lim,
            tcp: p.tcp,
            udp: p.udp,
            icmp: p.icmp,
        }
    }

    /// Moves the ring's newest second to `to`, clearing the slots it advances onto.
    #[inline]
    fn advance(&mut self, to: u64) {
        let n = self.ring_len() as u64;
        let mask = self.ring_len() - 1;
        for sec in (self.newest + 1).max(to.saturating_sub(n - 1))..=to {
            let i = sec as usize & mask;
            self.ring[i] = Core::default();
            if let Some(x) = self.ext.as_deref_mut() {
                x[i] = Ext::default();
            }
            self.hot &= !(1u64 << i);
        }
        self.gate = Gate::default();
        self.newest = to;
    }

    /// Slots in the ring.
    #[inline(always)]
    fn ring_len(&self) -> usize {
        const { assert!(N.is_power_of_two() && N <= 64) };
        N
    }

    /// Whether `sec` has a slot in the ring (the newest second and those before it).
    #[inline]
    fn in_ring(&self, sec: u64) -> bool {
        // `sec` not after the newest and fewer than the ring's length before it.
        self.newest.wrapping_sub(sec) < self.ring_len() as u64
    }

    /// The counts of `sec` to add to: in the ring if `sec` is within its window (from
    /// `window`, up to the newest second), else in the cache of late seconds. The
    /// per-protocol part is there when the asset keeps one.
    #[inline]
    fn counts(&mut self, sec: u64, window: u64) -> (&mut Core, Option<&mut Ext>) {
        if sec >= window {
            let i = sec as usize & (self.ring_len() - 1);
            return (
                &mut self.ring[i],
                self.ext.as_deref_mut().map(|x| &mut x[i]),
            );
        }
        let cache = self
            .late_cache
            .get_or_insert_with(|| Box::new([LateSlot::default(); LATE_SLOTS]));
        let b = &mut cache[sec as usize & (LATE_SLOTS - 1)];
        if b.sec != sec {
            *b = LateSlot {
                sec,
                ..LateSlot::default()
            };
        }
        (&mut b.c, Some(&mut b.x))
    }

    /// Starts keeping the per-protocol and reflected part of each second.
    fn want_ext(&mut self) {
        if self.ext.is_none() {
            self.ext = Some(Box::new([Ext::default(); N]));
        }
    }

    /// Second `sec` in full, if the ring or the late cache holds it.
    fn get(&self, sec: u64) -> Option<Bucket> {
        if self.in_ring(sec) {
            let i = sec as usize & (self.ring_len() - 1);
            let x = self.ext.as_deref().map_or_else(Ext::default, |x| x[i]);
            return Some(Bucket::of(&self.ring[i], &x, self.hot >> i & 1 != 0));
        }
        let b = &self.late_cache.as_ref()?[sec as usize & (LATE_SLOTS - 1)];
        (b.sec == sec).then(|| Bucket::of(&b.c, &b.x, b.hot))
    }

    /// Whether second `sec` crossed a limit.
    #[inline]
    fn is_hot(&self, sec: u64) -> bool {
        if self.in_ring(sec) {
            return self.hot >> (sec as usize & (self.ring_len() - 1)) & 1 != 0;
        }
        self.late_cache.as_ref().is_some_and(|c| {
            c[sec as usize & (LATE_SLOTS - 1)].sec == sec && c[sec as usize & (LATE_SLOTS - 1)].hot
        })
    }

    fn set_hot(&mut self, sec: u64) {
        if self.in_ring(sec) {
            self.hot |= 1u64 << (sec as usize & (self.ring_len() - 1));
        } else if let Some(c) = self.late_cache.as_mut() {
            let b = &mut c[sec as usize & (LATE_SLOTS - 1)];
            if b.sec == sec {
                b.hot = true;
            }
        }
    }

    #[inline]
    fn atk(&mut self) -> &mut Attack {
        self.atk.get_or_insert_with(new_attack)
    }

    fn tables(&mut self, sec: u64) -> &mut Tables {
        self.tables.get_or_insert_with(|| {
            Box::new(Tables {
                scans: HashMap::new(),
                scanning: None,
                exfil: HashMap::new(),
                followed: Filter::default(),
                sent: None,
                last_sweep: sec,
            })
        })
    }

    /// Reflected bytes by protocol and the asset's bytes in those flows.
    fn reflected(&self) -> ([u64; REFLECTORS.len()], u64) {
        self.atk
            .as_ref()
            .map_or(([0; REFLECTORS.len()], 0), |a| (a.refl, a.refl_out))
    }

    /// Counts one record. Returns false if part of it fell in seconds already final (the
    /// baseline learns it as late volume; the rate rules still see it where they can).
    pub(crate) fn account(
        &mut self,
        cx: &Ctx,
        r: &FlowRecord,
        side: Side,
        out: &mut Vec<Alert>,
    ) -> bool {
        let (inbound, outbound, remote, remote_port, local, local_port) = match side {
            Side::Resp => (
                &r.orig,
                &r.resp,
                r.orig_addr,
                r.orig_port,
                r.resp_addr,
                r.resp_port,
            ),
            Side::Orig => (
                &r.resp,
                &r.orig,
                r.resp_addr,
                r.resp_port,
                r.orig_addr,
                r.orig_port,
            ),
        };
        if self.finalized < cx.watermark && !self.listed {
            // Seconds the watermark passed while the asset was not watched (see
            // `needs_watch`): made final now, before this record counts, as the watermark's
            // move would have.
            self.expire(cx, cx.watermark, out);
        }
        // A flow reported while it goes on (interim reports, active timeouts) counts only what
        // its record adds to the earlier ones, over the seconds it happened in, and is a new
        // connection only on its first record.
        let prior = r.prior.map(|p| match side {
            Side::Resp => (p.orig, p.resp),
            Side::Orig => (p.resp, p.orig),
        });
        let new = prior.is_none();
        let (din, dout) = match &prior {
            None => (Added::all(inbound), Added::all(outbound)),
            Some((pi, po)) => (Added::since(pi, inbound), Added::since(po, outbound)),
        };
        let ring = self.ring_len() as u64;
        let first = r.added_since_ns() / NS;
        let last = (r.last_ns / NS).max(first);
        if last > self.newest {
            // Seconds about to leave the ring become final first.
            if last >= self.finalized + ring {
                self.finalize(cx, last - ring, out);
            }
            self.advance(last);
        }
        // Seconds before the ring's window: a short flow reported late still counts, in the
        // small cache of late seconds; the early part of a long one only feeds the baseline.
        let window = (self.newest + 1).saturating_sub(ring);
        let late = last < window;
        if late && last - first >= LATE_SLOTS as u64 {
            self.late_mass(din.pkts, din.bytes);
            self.side_rules(
                cx,
                r,
                inbound,
                outbound,
                &dout,
                prior.as_ref().map(|p| &p.0),
                remote,
                remote_port,
                local,
                local_port,
                first,
                last,
                side,
                out,
            );
            return false;
        }
        let from = if late { first } else { first.max(window) };
        // Shares are of the whole span: seconds outside the ring keep nothing of it, rather
        // than the remaining seconds receiving more than their part.
        let span = last - first + 1;
        let proto = r.ip_proto;
        let reflected = proto == 17
            && inbound.pkts > 0
            && reflector(remote_port).is_some()
            && (outbound.pkts == 0
                || inbound.ip_bytes as f64 >= cx.s.amp_ratio * outbound.ip_bytes as f64);
        if reflected {
            self.want_ext();
        }
        let (mut final_p, mut final_b) = (0, 0);
        if span == 1 && !late && last > self.finalized && self.ext.is_none() {
            // The common record: one second, in the ring, not yet final, nothing per protocol
            // to count.
            let mask = self.ring_len() - 1;
            let c = &mut self.ring[last as usize & mask];
            add32(&mut c.pkts, din.pkts);
            c.bytes += din.bytes;
        } else {
            // Spread packets and bytes over the seconds the flow spans.
            let (mut kept_p, mut kept_b) = (0, 0);
            // Each second's share: the quotient, and one more for the first `remainder` seconds.
            let (pq, pr, bq, br) = if span == 1 {
                (din.pkts, 0, din.bytes, 0)
            } else {
                (
                    din.pkts / span,
                    din.pkts % span,
                    din.bytes / span,
                    din.bytes % span,
                )
            };
            for sec in from..=last {
                let i = sec - first;
                let (p, b) = (pq + u64::from(i < pr), bq + u64::from(i < br));
                if sec <= self.finalized {
                    final_p += p;
                    final_b += b;
                } else {
                    kept_p += p;
                    kept_b += b;
                }
                let (bk, x) = self.counts(sec, window);
                add32(&mut bk.pkts, p);
                bk.bytes += b;
                if let Some(x) = x {
                    match proto {
                        6 => {
                            add32(&mut x.tcp_pkts, p);
                            x.tcp_bytes += b;
                        }
                        17 => {
                            add32(&mut x.udp_pkts, p);
                            x.udp_bytes += b;
                            if reflected {
                                add32(&mut x.refl_pkts, p);
                                x.refl_bytes += b;
                            }
                        }
                        1 | 58 => {
                            add32(&mut x.icmp_pkts, p);
                            x.icmp_bytes += b;
                        }
                        _ => {}
                    }
                }
            }
            // What the baseline did not see: seconds outside the ring and seconds already final.
            let unseen = (din.pkts - kept_p, din.bytes - kept_b);
            if unseen.0 > 0 || unseen.1 > 0 {
                self.late_mass(unseen.0, unseen.1);
            }
        }
        let inbound_flags = inbound.tcp_flags;
        let half_open = proto == 6
            && side == Side::Resp
            && inbound_flags.has(TcpFlags::SYN)
            && !inbound_flags.has(TcpFlags::ACK);
        let service = side == Side::Resp && self.ports.contains(local_port, cx.asset);
        if let Some((pi, po)) = &prior {
            // What an earlier record of this connection left open and this one settles is
            // counted in the second the connection began, if that is not final yet.
            let start = r.first_ns / NS;
            let completed = proto == 6
                && side == Side::Resp
                && pi.tcp_flags.has(TcpFlags::SYN)
                && !pi.tcp_flags.has(TcpFlags::ACK)
                && inbound_flags.has(TcpFlags::ACK);
            let answered = service && po.pkts == 0 && outbound.pkts > 0;
            let established = service
                && proto == 6
                && inbound_flags.has(TcpFlags::SYN)
                && !(po.tcp_flags.has(TcpFlags::SYN | TcpFlags::ACK)
                    && pi.tcp_flags.has(TcpFlags::ACK))
                && outbound.tcp_flags.has(TcpFlags::SYN | TcpFlags::ACK)
                && inbound_flags.has(TcpFlags::ACK);
            if (completed || answered || established) && start > self.finalized && start >= window {
                let (bk, _) = self.counts(start, window);
                if completed {
                    bk.tcp_half_open = bk.tcp_half_open.saturating_sub(1);
                }
                bk.svc_ans += u32::from(answered);
                bk.svc_est += u32::from(established);
            }
        } else {
            // A record of a sampled flow export stands for `rate` flows as its packets stand
            // for `rate` packets (one-packet flows of a flood are seen one in `rate`), so
            // new-flow thresholds compare like with like.
            let flows = r.export.as_ref().map_or(1, |e| e.sampling_rate.max(1));
            let (bk, x) = self.counts(from, window);
            bk.new_flows = bk.new_flows.saturating_add(flows);
            match proto {
                6 => {
                    bk.tcp_new = bk.tcp_new.saturating_add(flows);
                    if half_open {
                        bk.tcp_half_open = bk.tcp_half_open.saturating_add(flows);
                    }
                }
                17 => {
                    if let Some(x) = x {
                        x.udp_new = x.udp_new.saturating_add(flows);
                    }
                }
                1 | 58 => {
                    if let Some(x) = x {
                        x.icmp_new = x.icmp_new.saturating_add(flows);
                    }
                }
                _ => {}
            }
            if service {
                bk.svc_flows = bk.svc_flows.saturating_add(1);
                bk.svc_ans += u32::from(outbound.pkts > 0);
                if proto == 6 && inbound_flags.has(TcpFlags::SYN) {
                    bk.svc_att = bk.svc_att.saturating_add(1);
                    bk.svc_est += u32::from(
                        outbound.tcp_flags.has(TcpFlags::SYN | TcpFlags::ACK)
                            && inbound_flags.has(TcpFlags::ACK),
                    );
                }
            }
        }
        // Sources and the per-address spread are followed only while an attack may be
        // building (a quarter of a limit reached) or is under way: benign traffic pays for
        // neither table.
        let near_last = self.near_sec(cx.s, last);
        let armed =
            !self.open.is_empty() || near_last || (from != last && self.near_sec(cx.s, from));
        if reflected {
            let i = reflector(remote_port).expect("reflected");
            let a = self.atk();
            a.refl[i] += din.bytes;
            a.refl_out += dout.bytes;
            self.gathered = true;
        }
        if armed && din.pkts > 0 {
            self.gathered = true;
            let a = self.atk();
            a.distinct.insert(addr_key(remote));
            // Once the table is full, a spoofed flood's sources are nearly all new: a bit per
            // hashed address says "certainly not held" without probing the table.
            let absent = a
                .held
                .as_deref()
                .is_some_and(|h| !h.maybe(addr_key(remote)));
            if absent {
                a.others.0 += din.pkts;
                a.others.1 += din.bytes;
            } else if let Some(e) = a.sources.get_mut(&remote) {
                e.pkts += din.pkts;
                e.bytes += din.bytes;
                e.reflector |= reflected;
            } else if a.sources.len() < MAX_SOURCES {
                a.sources.insert(
                    remote,
                    Src {
                        pkts: din.pkts,
                        bytes: din.bytes,
                        reflector: reflected,
                    },
                );
                if a.sources.len() == MAX_SOURCES {
                    let mut h = Box::new(Held::default());
                    for k in a.sources.keys() {
                        h.add(addr_key(*k));
                    }
                    a.held = Some(h);
                }
            } else {
                a.others.0 += din.pkts;
                a.others.1 += din.bytes;
            }
        }
        if armed && self.multi {
            let sp = self.spread.get_or_insert_with(|| {
                let direct = match cx.asset.cidrs.as_slice() {
                    [ipnet::IpNet::V4(n)] if n.prefix_len() >= 32 - DIRECT_SPREAD_BITS => {
                        Some((u32::from(n.network()), 1u32 << (32 - n.prefix_len())))
                    }
                    _ => None,
                };
                Box::new(Spread {
                    direct,
                    ..Spread::default()
                })
            });
            spread(sp, local, last, &din, new && from == first);
        }
        // Seconds this record touched may now cross a limit.
        if from == last {
            if (near_last || self.is_hot(last)) && !self.gated(last) {
                self.judge(cx, last, false, out);
            }
        } else {
            for sec in from..=last {
                self.evaluate(cx, sec, out);
            }
        }
        self.side_rules(
            cx,
            r,
            inbound,
            outbound,
            &dout,
            prior.as_ref().map(|p| &p.0),
            remote,
            remote_port,
            local,
            local_port,
            first,
            last,
            side,
            out,
        );
        final_p == 0 && final_b == 0
    }

    /// Traffic of seconds already final (the early part of a long flow, reported at its
    /// end): too late for the rate rules, but part of the asset's normal volume, so the
    /// baseline learns it.
    fn late_mass(&mut self, pkts: u64, bytes: u64) {
        add32(&mut self.late_pkts, pkts);
        self.late_bytes += bytes;
    }

    /// The rules that do not use the per-second buckets: ICS commands, scans, exfiltration.
    /// Inlined: most records need none of them, and the tests are cheaper than the call.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    fn side_rules(
        &mut self,
        cx: &Ctx,
        r: &FlowRecord,
        inbound: &DirStats,
        outbound: &DirStats,
        dout: &Added,
        prior_in: Option<&PriorDir>,
        remote: IpAddr,
        remote_port: u16,
        local: IpAddr,
        local_port: u16,
        first: u64,
        last: u64,
        side: Side,
        out: &mut Vec<Alert>,
    ) {
        if let Some(ics) = &r.ics {
            let all = if side == Side::Resp {
                &ics.orig
            } else {
                &ics.resp
            };
            // The commands this record adds to the flow's earlier ones.
            let before = prior_in.map_or([0; 4], |p| p.commands);
            let cmds = IcsCounts {
                write: all.write.saturating_sub(before[0]),
                control: all.control.saturating_sub(before[1]),
                stop_restart: all.stop_restart.saturating_sub(before[2]),
                program_firmware: all.program_firmware.saturating_sub(before[3]),
                ..*all
            };
            let n = cmds.write + cmds.control + cmds.stop_restart + cmds.program_firmware;
            if n > 0 && !cx.asset.allows(remote) {
                self.ics(cx, r, remote, inbound, &cmds, last, out);
            }
        }
        // A connection attempt is judged a probe once its flow has ended: an interim report
        // may come before the answer. In a second already over a limit, a flood's (often
        // spoofed) sources would fill the scan table one probe each: probes are not followed
        // then.
        if side == Side::Resp
            && r.end_reason.is_final()
            && is_probe(r, inbound, outbound, remote_port)
            && !self.is_hot(last)
        {
            self.probe(cx, remote, local, local_port, last, out);
        }
        if dout.bytes > 0 && self.holds_ip {
            let sent = DirStats {
                pkts: dout.pkts,
                ip_bytes: dout.bytes,
                ..*outbound
            };
            self.outbound(cx, remote, &sent, first, last, out);
        }
    }

    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn ics(
        &mut self,
        cx: &Ctx,
        r: &FlowRecord,
        remote: IpAddr,
        inbound: &DirStats,
        cmds: &IcsCounts,
        last: u64,
        out: &mut Vec<Alert>,
    ) {
        let severity = if cmds.stop_restart + cmds.program_firmware > 0 {
            Severity::Critical
        } else {
            Severity::High
        };
        let (w, c, sr, pf) = (
            cmds.write,
            cmds.control,
            cmds.stop_restart,
            cmds.program_firmware,
        );
        let n = w + c + sr + pf;
        let summary = move || {
            format!(
                "{n} industrial commands ({w} write, {c} control, {sr} stop/restart, {pf} program/firmware) from {remote}, which is not on the allow list"
            )
        };
        let named = TopSource {
            addr: remote,
            share: 1.0,
            pkts: inbound.pkts,
            bytes: inbound.ip_bytes,
            reflector: false,
        };
        self.hit(
            cx,
            AlertKind::IcsCommandAbuse,
            last,
            r.added_since_ns(),
            Measured::default(),
            severity,
            summary,
            Extra::named(named),
            out,
        );
    }

    #[inline(never)]
    fn probe(
        &mut self,
        cx: &Ctx,
        remote: IpAddr,
        local: IpAddr,
        local_port: u16,
        sec: u64,
        out: &mut Vec<Alert>,
    ) {
        let s = cx.s;
        let Tables {
            scans, scanning, ..
        } = self.tables(sec);
        if scans.len() >= MAX_SCANNERS {
            let f = scanning.get_or_insert_with(|| {
                let mut f = Box::new(Scanners::default());
                for k in scans.keys() {
                    f.add(addr_key(*k));
                }
                f
            });
            if !f.maybe(addr_key(remote)) {
                // Not followed, and no room to follow it.
                return;
            }
        }
        let p = if let Some(p) = scans.get_mut(&remote) {
            if sec > p.last_sec + s.scan_idle_secs {
                *p = Probe {
                    first_sec: sec,
                    ..Probe::default()
                };
            }
            p
        } else if scans.len() < MAX_SCANNERS {
            scans.entry(remote).or_insert(Probe {
                first_sec: sec,
                ..Probe::default()
            })
        } else {
            return;
        };
        p.ports.insert(u64::from(local_port));
        p.addrs.insert(addr_key(local));
        p.last_sec = p.last_sec.max(sec);
        p.first_sec = p.first_sec.min(sec);
        p.probes += 1;
        let (ports, addrs) = (p.ports.count(), p.addrs.count());
        if ports < bits_for(s.scan_ports) && addrs < bits_for(s.scan_addrs) {
            return;
        }
        let p = *p;
        let summary = move || {
            format!(
                "{remote} sent {} unanswered connection attempts to about {:.0} ports on about {:.0} addresses of the asset",
                p.probes,
                p.ports.estimate(),
                p.addrs.estimate()
            )
        };
        let named = TopSource {
            addr: remote,
            share: 1.0,
            pkts: p.probes,
            bytes: 0,
            reflector: false,
        };
        self.hit(
            cx,
            AlertKind::Scan,
            sec,
            p.first_sec * NS,
            Measured::default(),
            Severity::Low,
            summary,
            Extra::named(named),
            out,
        );
    }

    #[inline(never)]
    fn outbound(
        &mut self,
        cx: &Ctx,
        remote: IpAddr,
        outbound: &DirStats,
        first: u64,
        last: u64,
        out: &mut Vec<Alert>,
    ) {
        let s = cx.s;
        let t = self.tables(last);
        let key = addr_key(remote);
        let followed = if t.followed.maybe(key) {
            t.exfil.get_mut(&remote)
        } else {
            None
        };
        let e = match followed {
            Some(e) => {
                if last >= e.start_sec + s.exfil_window_secs {
                    *e = Outbound {
                        start_sec: first,
                        ..Outbound::default()
                    };
                }
                e
            }
            None => {
                let sent = t.sent.get_or_insert_with(|| {
                    Box::new(Sent {
                        start_sec: first,
                        kib: [[0; SENT_COLS]; SENT_ROWS],
                    })
                });
                if last >= sent.start_sec + s.exfil_window_secs {
                    sent.start_sec = first;
                    sent.kib = [[0; SENT_COLS]; SENT_ROWS];
                }
                // Followed from when it may have received a sixteenth of the limit, if it is
                // outside every protected asset (asked only then) and there is room.
                if sent.add(key, outbound.ip_bytes) < s.exfil_bytes >> SENT_ADMIT_SHIFT
                    || t.exfil.len() >= MAX_EXFIL
                    || cx.index.lookup(remote).is_some()
                {
                    return;
                }
                t.followed.add(key);
                t.exfil.entry(remote).or_insert(Outbound {
                    start_sec: first,
                    ..Outbound::default()
                })
            }
        };
        e.bytes += outbound.ip_bytes;
        e.last_sec = e.last_sec.max(last);
        if e.bytes <= s.exfil_bytes {
            return;
        }
        let e = *e;
        let secs = (e.last_sec + 1).saturating_sub(e.start_sec).max(1);
        let limit = s.exfil_bytes;
        let window = s.exfil_window_secs;
        let summary = move || {
            format!(
                "{} bytes sent to external destination {remote} in {secs} s (limit {limit} bytes per {window} s) by an asset holding intellectual property",
                e.bytes
            )
        };
        let named = TopSource {
            addr: remote,
            share: 1.0,
            pkts: outbound.pkts,
            bytes: e.bytes,
            reflector: false,
        };
        let ratio = e.bytes as f64 / limit.max(1) as f64;
        self.hit(
            cx,
            AlertKind::BulkExfiltration,
            last,
            e.start_sec * NS,
            Measured {
                pps: 0.0,
                bps: (e.bytes * 8) as f64 / secs as f64,
                new_flows_per_s: 0.0,
            },
            if ratio >= 10.0 {
                Severity::Critical
            } else {
                Severity::High
            },
            summary,
            Extra::named(named),
            out,
        );
    }

    /// Checks second `sec` against the rate rules.
    fn evaluate(&mut self, cx: &Ctx, sec: u64, out: &mut Vec<Alert>) {
        // A second under a quarter of every limit is under every limit: nothing to judge.
        if (self.is_hot(sec) || self.near_sec(cx.s, sec)) && !self.gated(sec) {
            self.judge(cx, sec, false, out);
        }
    }

    /// Second `sec` is over a limit and has not grown by an eighth since it was last judged:
    /// `judge` would return at once. Read here, before the call: for the newest second from
    /// the state itself, for an earlier one (a record spanning two seconds) from the attack's
    /// judged counts, as `judge` reads them.
    #[inline(always)]
    fn gated(&self, sec: u64) -> bool {
        if sec == self.newest {
            let i = sec as usize & (self.ring_len() - 1);
            return self.hot >> i & 1 != 0
                && self
                    .gate
                    .holds(&self.ring[i], self.ext.as_deref().map(|x| &x[i]));
        }
        self.gated_earlier(sec)
    }

    #[inline(never)]
    fn gated_earlier(&self, sec: u64) -> bool {
        let Some(a) = self.atk.as_deref() else {
            return false;
        };
        let seen = &a.seen[sec as usize % SEEN_SLOTS];
        seen.sec == sec
            && self.is_hot(sec)
            && self.parts(sec).is_some_and(|(c, x)| seen.next.holds(c, x))
    }

    /// A quarter of some limit reached in second `sec`: an attack may be building. Every
    /// limit the rate rules judge is here, so a second not near is not over. Read in place.
    #[inline]
    fn near_sec(&self, s: &Settings, sec: u64) -> bool {
        match self.parts(sec) {
            Some((c, x)) => self.near(s, c, x),
            None => false,
        }
    }

    /// The stored counts of `sec`, in the ring or the late cache.
    #[inline]
    fn parts(&self, sec: u64) -> Option<(&Core, Option<&Ext>)> {
        if self.in_ring(sec) {
            let i = sec as usize & (self.ring_len() - 1);
            return Some((&self.ring[i], self.ext.as_deref().map(|x| &x[i])));
        }
        let b = &self.late_cache.as_ref()?[sec as usize & (LATE_SLOTS - 1)];
        (b.sec == sec).then_some((&b.c, Some(&b.x)))
    }

    #[inline(always)]
    fn near(&self, s: &Settings, c: &Core, x: Option<&Ext>) -> bool {
        let q = |v: u32, lim: u64| u64::from(v) * 4 > lim;
        let qb = |v: u64, lim: u64| v.saturating_mul(32) > lim;
        let near = |l: &Lim, pkts: u32, bytes: u64, new: u32| {
            q(pkts, l.pkts) || qb(bytes, l.bits) || q(new, l.new)
        };
        if near(&self.lim, c.pkts, c.bytes, c.new_flows) {
            return true;
        }
        // Without the per-protocol part there is no per-protocol limit and nothing reflected.
        let Some(x) = x else {
            return false;
        };
        let p = self.plim.as_deref().unwrap_or(&NO_PROTO_LIMITS);
        near(&p.tcp, x.tcp_pkts, x.tcp_bytes, c.tcp_new)
            || near(&p.udp, x.udp_pkts, x.udp_bytes, x.udp_new)
            || near(&p.icmp, x.icmp_pkts, x.icmp_bytes, x.icmp_new)
            || q(x.refl_pkts, s.amp_pps)
            || qb(x.refl_bytes, s.amp_bps)
    }

    /// Judges second `sec` against the rate rules. A second already over a limit is judged
    /// again only once its counts grew by an eighth (or when it becomes final, `force`), so
    /// an attack's records do not each pay for a full judgement.
    fn judge(&mut self, cx: &Ctx, sec: u64, force: bool, out: &mut Vec<Alert>) {
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
        let over_in = |b: &Bucket| {
            lim.total.over(b.pkts, b.bytes, b.new_flows)
                || lim.tcp.over(b.tcp_pkts, b.tcp_bytes, b.tcp_new)
                || lim.udp.over(b.udp_pkts, b.udp_bytes, b.udp_new)
                || lim.icmp.over(b.icmp_pkts, b.icmp_bytes, b.icmp_new)
        };
        let mut b = counted;
        let mut over = over_in(&b);
        if !over && !force && sec == self.newest && cx.now_ns / NS == sec {
            // The second under way is judged as the last full second of traffic: what it
            // counted so far and the part of the previous second still within one second of
            // now (spread evenly over it). A rate over a limit is seen as soon as one second
            // of it has passed, wherever the second boundaries fall.
            if let Some(prev) = sec.checked_sub(1).and_then(|p| self.get(p)) {
                let rest = 1.0 - (cx.now_ns % NS) as f64 / NS as f64;
                let window = counted.with_part_of(&prev, rest);
                if over_in(&window) {
                    over = true;
                    b = window;
                }
            }
        }
        let amp_over =
            u64::from(b.refl_pkts) > s.amp_pps || b.refl_bytes.saturating_mul(8) > s.amp_bps;
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
        let amp_ratio = (f64::from(b.refl_pkts) / s.amp_pps.max(1) as f64)
            .max((b.refl_bytes * 8) as f64 / s.amp_bps.max(1) as f64);
        let mut amp_done = false;
        if over {
            let ratio = [
                lim.total
                    .ratio(u64::from(b.pkts), b.bytes, u64::from(b.new_flows)),
                lim.tcp
                    .ratio(u64::from(b.tcp_pkts), b.tcp_bytes, u64::from(b.tcp_new)),
                lim.udp
                    .ratio(u64::from(b.udp_pkts), b.udp_bytes, u64::from(b.udp_new)),
                lim.icmp
                    .ratio(u64::from(b.icmp_pkts), b.icmp_bytes, u64::from(b.icmp_new)),
            ]
            .into_iter()
            .fold(0.0, f64::max);
            // What the traffic is, from this second's own counts: a window reaching into the
            // previous second also holds what came before the attack.
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
            let carpet = self.carpet(cx, sec);
            // A SYN flood: new TCP flows crossed a new-flow limit (the TCP one, or the total
            // one while TCP makes most of the new flows), mostly left half-open.
            let syn_over = u64::from(b.tcp_new) > syn_limit
                || (u64::from(b.new_flows) > lim.total.new && b.tcp_new * 2 > b.new_flows);
            let kind = if refl_share >= s.amp_share {
                AlertKind::UdpAmplification
            } else if carpet.is_some() {
                AlertKind::CarpetBombing
            } else if syn_over && half_open_share >= s.syn_half_open_share {
                AlertKind::SynFlood
            } else {
                // Nothing more specific: part of a flood already open on the asset, else a
                // volumetric flood. (One attack seen through a second that cannot be told
                // apart, e.g. one whose spread is no longer known, stays one alert.)
                self.open
                    .iter()
                    .find(|o| is_flood(o.kind))
                    .map_or(AlertKind::VolumetricFlood, |o| o.kind)
            };
            amp_done = kind == AlertKind::UdpAmplification;
            let peak = Peak { b, carpet };
            let (refl, refl_out) = self.reflected();
            let summary = move || flood_summary(kind, &peak, &refl, refl_out);
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
                    ..Extra::baseline(baseline)
                },
                out,
            );
        }
        if amp_over && !amp_done {
            let peak = Peak { b, carpet: None };
            let (refl, refl_out) = self.reflected();
            let summary =
                move || flood_summary(AlertKind::UdpAmplification, &peak, &refl, refl_out);
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
                        pps: Some(s.amp_pps),
                        bps: Some(s.amp_bps),
                        new_flows_per_s: None,
                    }),
                    ..Extra::baseline(baseline)
                },
                out,
            );
        }
    }

    /// Carpet bombing in second `sec`: many addresses hit, and the busiest one alone within
    /// the asset's limits. Returns the distinct addresses and the busiest one's packets.
    fn carpet(&self, cx: &Ctx, sec: u64) -> Option<(u32, u32)> {
        let sp = self.spread.as_deref()?;
        // The second itself, else a neighbour: a flow spanning two seconds puts its new flow
        // in the first and its spread in the last, and an attack's spread does not change
        // from one second to the next.
        let ss = [&sp.cur, &sp.prev]
            .into_iter()
            .filter(|x| x.distinct > 0)
            .min_by_key(|x| x.sec.abs_diff(sec))
            .filter(|x| x.sec.abs_diff(sec) <= 1)?;
        if ss.distinct < cx.s.carpet_min_addrs {
            return None;
        }
        let per_addr = self.lim;
        let within = u64::from(ss.max_pkts) <= per_addr.pkts
            && ss.max_bytes.saturating_mul(8) <= per_addr.bits
            && u64::from(ss.max_new) <= per_addr.new;
        within.then_some((ss.distinct, ss.max_pkts))
    }

    fn baseline_now(&self, s: &Settings) -> Option<Measured> {
        let m = self.base.mean();
        (self.base.seconds >= s.baseline_warmup_secs).then_some(Measured {
            pps: m.pkts,
            bps: m.bits,
            new_flows_per_s: m.new_flows,
        })
    }

    /// The condition of `kind` held in second `sec`: open, or keep open and maybe update.
    #[allow(clippy::too_many_arguments)]
    fn hit(
        &mut self,
        cx: &Ctx,
        kind: AlertKind,
        sec: u64,
        start_ns: u64,
        measured: Measured,
        severity: Severity,
        summary: impl FnOnce() -> String,
        extra: Extra,
        out: &mut Vec<Alert>,
    ) {
        let Extra {
            named,
            peak,
            baseline,
            impairment,
            threshold,
        } = extra;
        let update_secs = cx.s.update_secs;
        let heard = self.newest.saturating_sub(cx.s.lateness_secs);
        let open = self.open.iter().position(|o| o.kind == kind);
        if open.is_none() && self.covered(cx.s, kind, sec, named.as_ref()) {
            // A late record of an attack whose alert already closed.
            self.atk().late_hits += 1;
            return;
        }
        if let Some(pos) = open {
            let o = &mut self.open[pos];
            o.last_hit_sec = o.last_hit_sec.max(sec);
            o.heard_sec = o.heard_sec.max(heard);
            o.start_ns = o.start_ns.min(start_ns);
            if measured.pps > o.measured.pps
                || (measured.pps == o.measured.pps && measured.bps > o.measured.bps)
            {
                o.measured = measured;
                if peak.is_some() {
                    o.peak = peak;
                }
            }
            o.severity = o.severity.max(severity);
            if baseline.is_some() {
                o.baseline = baseline;
            }
            if let Some(n) = named {
                name(&mut o.named, n);
            }
            if let Some(i) = impairment {
                worst(&mut o.impairment, i);
            }
            if sec >= o.last_update_sec + update_secs {
                o.last_update_sec = sec;
                o.summary = summary();
                let mut o = std::mem::replace(&mut self.open[pos], placeholder());
                self.final_summary(&mut o);
                self.open[pos] = o;
                let o = &self.open[pos];
                out.push(self.event(cx, o, AlertState::Update));
            }
            return;
        }
        let o = Open {
            id: format!(
                "{}/{}/{}",
                cx.asset.id.as_str(),
                kind.as_str(),
                start_ns / NS
            ),
            kind,
            start_ns,
            last_hit_sec: sec,
            heard_sec: heard,
            last_update_sec: sec,
            measured,
            severity,
            summary: summary(),
            baseline,
            impairment,
            peak,
            threshold,
            named: named.into_iter().collect(),
        };
        out.push(self.event(cx, &o, AlertState::Open));
        self.open.push(o);
    }

    /// Makes seconds up to `upto` final: quiet ones feed the baseline, each is checked for
    /// service impairment.
    fn finalize(&mut self, cx: &Ctx, upto: u64, out: &mut Vec<Alert>) {
        if upto <= self.finalized {
            return;
        }
        let s = cx.s;
        let alpha = 1.0 / s.baseline_window_secs.max(1) as f64;
        let ring = self.ring_len() as u64;
        // Seconds that already left the ring had no traffic worth keeping: fold them at once.
        let start = (self.finalized + 1).max((upto + 1).saturating_sub(ring));
        // While an attack is under way nothing is learned from the traffic.
        let flooding = self
            .open
            .iter()
            .any(|o| is_flood(o.kind) || o.kind == AlertKind::ServiceImpairment);
        if start > self.finalized + 1 && !flooding {
            self.base.fold(alpha, start - self.finalized - 1, None);
        }
        let mut gap = 0;
        for sec in start..=upto {
            if self.is_hot(sec) {
                // Its final counts, for the alert's figures.
                self.judge(cx, sec, true, out);
            }
            // A second nothing reached is a gap, folded like one.
            let b = self.get(sec).filter(|b| !b.is_empty());
            // Judged against the baseline before this second joins it.
            let impaired = b.is_some_and(|b| b.svc_flows > 0) && self.impairment(cx, sec, out);
            let flooding = flooding || impaired;
            if !flooding && !b.is_some_and(|b| b.hot || self.suspect(cx.s, &b)) {
                match b {
                    None => gap += 1,
                    Some(b) => {
                        self.base.fold(alpha, gap, Some(&sample(&b)));
                        gap = 0;
                    }
                }
            }
            self.finalized = sec;
        }
        if gap > 0 {
            self.base.fold(alpha, gap, None);
        }
        if !flooding {
            self.base.add_mass(
                alpha,
                f64::from(self.late_pkts),
                (self.late_bytes * 8) as f64,
            );
        }
        (self.late_pkts, self.late_bytes) = (0, 0);
        if self.base.seconds >= s.baseline_warmup_secs {
            self.lim = total_limit(&cx.asset.thresholds.total, &self.base, s);
        }
    }

    /// A second whose own service figures already fell below the baseline's: not learned
    /// from, so an impairment that builds up over the window does not teach itself as normal.
    fn suspect(&self, s: &Settings, b: &Bucket) -> bool {
        let min = (s.impair_min_attempts / s.impair_window_secs.max(1)).max(1);
        let fell = |n: u32, of: u32, base: Option<f64>| {
            u64::from(of) >= min
                && base.is_some_and(|base| f64::from(n) / f64::from(of) < base * s.impair_drop)
        };
        fell(b.svc_est, b.svc_att, self.base.completion())
            || fell(b.svc_ans, b.svc_flows, self.base.response())
    }

    /// Service impairment in the window ending at final second `sec`; whether it holds.
    fn impairment(&mut self, cx: &Ctx, sec: u64, out: &mut Vec<Alert>) -> bool {
        let s = cx.s;
        if self.base.seconds < s.baseline_warmup_secs {
            return false;
        }
        let w = s.impair_window_secs.clamp(1, self.ring_len() as u64);
        let (mut att, mut est, mut flows, mut ans, mut pkts) = (0u64, 0u64, 0u64, 0u64, 0u64);
        for t in (sec + 1).saturating_sub(w)..=sec {
            if let Some(b) = self.get(t) {
                att += u64::from(b.svc_att);
                est += u64::from(b.svc_est);
                flows += u64::from(b.svc_flows);
                ans += u64::from(b.svc_ans);
                pkts += u64::from(b.pkts);
            }
        }
        let min = s.impair_min_attempts;
        let completion = (att >= min).then(|| est as f64 / att as f64);
        let response = (flows >= min).then(|| ans as f64 / flows as f64);
        let base_completion = self.base.completion();
        let base_response = self.base.response();
        let fell = |now: Option<f64>, base: Option<f64>| matches!((now, base), (Some(n), Some(b)) if n < b * s.impair_drop);
        let collapsed = fell(completion, base_completion) || fell(response, base_response);
        let wf = w as f64;
        let mean = self.base.mean();
        let load = flows as f64 / wf > mean.svc_flows * s.impair_load_factor
            || pkts as f64 / wf > mean.pkts * s.impair_load_factor;
        if !(collapsed && load) {
            return false;
        }
        let imp = Impairment {
            handshake_completion: completion,
            baseline_handshake_completion: base_completion,
            response_ratio: response,
        };
        if let Some(o) = self.open.iter_mut().find(|o| is_flood(o.kind)) {
            // The flood is the attack; the impairment is its effect, shown on its alert.
            worst(&mut o.impairment, imp);
            return true;
        }
        let pct = |v: Option<f64>| v.map_or("n/a".to_string(), |v| format!("{:.0}%", v * 100.0));
        let summary = move || {
            format!(
                "service ports: {} of connection attempts completed (normally {}), {} of {flows} flows answered (normally {}), over {w} s with load above {:.1}× normal",
                pct(completion),
                pct(base_completion),
                pct(response),
                pct(base_response),
                s.impair_load_factor
            )
        };
        let measured = Measured {
            pps: pkts as f64 / wf,
            bps: 0.0,
            new_flows_per_s: flows as f64 / wf,
        };
        let baseline = self.baseline_now(s);
        self.hit(
            cx,
            AlertKind::ServiceImpairment,
            sec,
            ((sec + 1).saturating_sub(w)) * NS,
            measured,
            Severity::High,
            summary,
            Extra {
                impairment: Some(imp),
                ..Extra::baseline(baseline)
            },
            out,
        );
        true
    }

    /// Whether a hit of `kind` in second `sec` belongs to an alert that already closed: the
    /// second lies within its window or a quiet period either side, where it would have joined
    /// the alert while open (every such second was final when it closed, so only a late record
    /// reaches it). A flood second matches a closed flood of any
    /// kind (late records alone may class it differently); a rule naming a party matches only
    /// an alert that named it.
    fn covered(&self, s: &Settings, kind: AlertKind, sec: u64, named: Option<&TopSource>) -> bool {
        let Some(a) = self.atk.as_deref() else {
            return false;
        };
        sec <= self.finalized
            && a.closed.iter().any(|c| {
                let same = c.kind == kind || (is_flood(c.kind) && is_flood(kind));
                same && sec + quiet_secs(s, c.kind) >= c.first_sec
                    && sec <= c.last_sec + quiet_secs(s, c.kind)
                    && named.is_none_or(|n| c.named.contains(&n.addr))
            })
    }

    /// Keeps a closed alert's window for late records of its attack.
    fn remember(&mut self, o: &Open) {
        let c = Closed {
            kind: o.kind,
            first_sec: o.start_ns / NS,
            last_sec: o.last_hit_sec,
            named: o.named.iter().map(|n| n.addr).collect(),
        };
        let a = self.atk();
        if a.closed.len() == MAX_CLOSED {
            a.closed.remove(0);
        }
        a.closed.push(c);
    }

    /// Hits folded into closed alerts (late records of their attacks).
    pub(crate) fn late_hits(&self) -> u64 {
        self.atk.as_ref().map_or(0, |a| a.late_hits)
    }

    /// The watermark moved to `watermark`: finalise, close quiet alerts, forget idle state.
    pub(crate) fn expire(&mut self, cx: &Ctx, watermark: u64, out: &mut Vec<Alert>) {
        self.finalize(cx, watermark, out);
        if !self.open.is_empty() {
            let mut i = 0;
            while i < self.open.len() {
                let o = &self.open[i];
                if o.last_hit_sec.max(o.heard_sec) + quiet_secs(cx.s, o.kind) < watermark {
                    let mut o = self.open.remove(i);
                    self.final_summary(&mut o);
                    out.push(self.event(cx, &o, AlertState::Closed));
                    self.remember(&o);
                } else {
                    i += 1;
                }
            }
        }
        if self.open.is_empty() && self.gathered {
            // Sources are named for an attack: forget those seen while nothing was open.
            if let Some(a) = self.atk.as_deref_mut() {
                a.sources.clear();
                a.held = None;
                a.distinct = Cardinality::default();
                a.others = (0, 0);
                a.refl = [0; REFLECTORS.len()];
                a.refl_out = 0;
            }
            self.gathered = false;
        }
        if let Some(a) = self.atk.as_deref_mut() {
            if !a.closed.is_empty() {
                a.closed.retain(|c| {
                    c.last_sec + quiet_secs(cx.s, c.kind) + CLOSED_KEEP_SECS >= watermark
                });
            }
        }
        if let Some(t) = self.tables.as_deref_mut() {
            if watermark >= t.last_sweep + SWEEP_SECS && !(t.scans.is_empty() && t.exfil.is_empty())
            {
                t.last_sweep = watermark;
                let idle = cx.s.scan_idle_secs;
                t.scans.retain(|_, p| p.last_sec + idle >= watermark);
                t.scanning = None;
                let window = cx.s.exfil_window_secs;
                t.exfil.retain(|_, e| e.start_sec + window > watermark);
                t.followed = Filter::default();
                for a in t.exfil.keys() {
                    t.followed.add(addr_key(*a));
                }
            }
        }
    }

    /// The newest second a record reached.
    pub(crate) fn newest(&self) -> u64 {
        self.newest
    }

    /// End of input: every second up to `newest` becomes final, judged on its full counts.
    pub(crate) fn finalize_all(&mut self, cx: &Ctx, newest: u64, out: &mut Vec<Alert>) {
        self.finalize(cx, newest, out);
    }

    /// Whether the watermark's moves must visit this asset as they happen: it has open
    /// alerts, a second over a limit or sources gathered for an attack that may be building.
    /// Any other asset's seconds can wait for its next record to be made final.
    pub(crate) fn needs_watch(&self) -> bool {
        !self.open.is_empty() || self.hot != 0 || self.gathered
    }

    /// Closes every open alert (end of input).
    pub(crate) fn close_all(&mut self, cx: &Ctx, out: &mut Vec<Alert>) {
        for mut o in std::mem::take(&mut self.open) {
            self.final_summary(&mut o);
            out.push(self.event(cx, &o, AlertState::Closed));
        }
    }

    /// Rewrites a summary from what the alert has gathered so far: a flood from its worst
    /// second (an amplification also from every reflector protocol seen and the in/out ratio
    /// over the whole attack), a scan from every scanner named.
    fn final_summary(&self, o: &mut Open) {
        if let Some(p) = &o.peak {
            let (refl, refl_out) = self.reflected();
            o.summary = flood_summary(o.kind, p, &refl, refl_out);
        } else if o.kind == AlertKind::Scan {
            let who: Vec<String> = o
                .named
                .iter()
                .map(|n| format!("{} ({} probes)", n.addr, n.pkts))
                .collect();
            o.summary = format!(
                "unanswered connection attempts to many ports or addresses of the asset from {}",
                who.join(", ")
            );
        }
    }

    fn event(&self, cx: &Ctx, o: &Open, state: AlertState) -> Alert {
        let asset = cx.asset;
        let top_sources = if o.named.is_empty() {
            // An amplification attack's sources are its reflectors; other traffic the asset
            // received meanwhile is not part of it.
            let part = |s: &Src| o.kind != AlertKind::UdpAmplification || s.reflector;
            let (sources, others) = match self.atk.as_deref() {
                Some(a) => (Some(&a.sources), a.others.0),
                None => (None, 0),
            };
            let sources = sources.into_iter().flatten();
            let others = if o.kind == AlertKind::UdpAmplification {
                0
            } else {
                others
            };
            let total: u64 = sources
                .clone()
                .map(|(_, s)| s)
                .filter(|s| part(s))
                .map(|s| s.pkts)
                .sum::<u64>()
                + others;
            let mut v: Vec<(&IpAddr, &Src)> = sources.filter(|(_, s)| part(s)).collect();
            v.sort_unstable_by(|a, b| b.1.pkts.cmp(&a.1.pkts).then(a.0.cmp(b.0)));
            v.into_iter()
                .take(TOP_SOURCES)
                .map(|(a, s)| TopSource {
                    addr: *a,
                    share: s.pkts as f64 / total.max(1) as f64,
                    pkts: s.pkts,
                    bytes: s.bytes,
                    reflector: s.reflector,
                })
                .collect()
        } else {
            let total: u64 = o.named.iter().map(|s| s.pkts).sum();
            o.named
                .iter()
                .map(|s| TopSource {
                    share: if total == 0 {
                        1.0 / o.named.len() as f64
                    } else {
                        s.pkts as f64 / total as f64
                    },
                    ..s.clone()
                })
                .collect()
        };
        Alert {
            id: o.id.clone(),
            state,
            kind: o.kind,
            severity: o.severity,
            asset: asset.id.clone(),
            sector: asset.sector,
            service: asset.service.clone(),
            window_start_ns: o.start_ns,
            window_end_ns: (o.last_hit_sec + 1) * NS,
            measured: o.measured,
            threshold: o.threshold.unwrap_or(asset.thresholds.total),
            baseline: o.baseline,
            impairment: o.impairment,
            top_sources,
            norms: cx
                .norms
                .for_alert(o.kind.as_str(), &asset.roles)
                .unwrap_or_default(),
            summary: o.summary.clone(),
            sources_total: self.sources_total(o),
            spoofing: self.spoofing(cx.s, o),
            raised_at_ns: None,
        }
    }

    /// How many distinct sources a flood had (the table names at most [`MAX_SOURCES`]).
    fn sources_total(&self, o: &Open) -> Option<u64> {
        if !is_flood(o.kind) || !o.named.is_empty() {
            return None;
        }
        let a = self.atk.as_deref()?;
        let counted = a.distinct.estimate().round() as u64;
        Some(counted.max(a.sources.len() as u64)).filter(|&n| n > 0)
    }

    /// Whether a flood's sources are likely forged: many sources, most seen with a single
    /// packet, and (for TCP) nearly every connection attempt left half-open — what
    /// random-source spoofing looks like and what real hosts, which retry and answer, do not.
    /// Reflection is not assessed: its sources are real reflectors.
    fn spoofing(&self, s: &Settings, o: &Open) -> Option<SpoofingAssessment> {
        if !is_flood(o.kind) || o.kind == AlertKind::UdpAmplification {
            return None;
        }
        let a = self.atk.as_deref()?;
        let tracked = a.sources.len();
        if tracked == 0 {
            return None;
        }
        let distinct = (a.distinct.estimate().round() as u64).max(tracked as u64);
        let once = a.sources.values().filter(|x| x.pkts <= 1).count();
        let seen_once_share = once as f64 / tracked as f64;
        let bogons = a.sources.keys().filter(|k| is_bogon(**k)).count();
        let bogon_share = bogons as f64 / tracked as f64;
        let half_open = o.peak.as_ref().and_then(|p| {
            (p.b.tcp_new > 0).then(|| f64::from(p.b.tcp_half_open) / f64::from(p.b.tcp_new))
        });
        let likely = distinct >= SPOOF_MIN_SOURCES
            && seen_once_share >= SPOOF_ONCE_SHARE
            && half_open.is_none_or(|h| h >= s.syn_half_open_share);
        let method = format!(
            "{distinct} distinct sources (at least {SPOOF_MIN_SOURCES} for a verdict of forged); of the {tracked} followed, {:.0} % sent one packet only (at least {:.0} %){}; {:.0} % in reserved or unallocated space",
            seen_once_share * 100.0,
            SPOOF_ONCE_SHARE * 100.0,
            half_open.map_or(String::new(), |h| format!(
                "; {:.0} % of the peak second's connection attempts left half-open (at least {:.0} %)",
                h * 100.0,
                s.syn_half_open_share * 100.0
            )),
            bogon_share * 100.0,
        );
        Some(SpoofingAssessment {
            likely_spoofed: likely,
            distinct_sources: distinct,
            one_packet_half_open_share: half_open,
            seen_once_share: Some(seen_once_share),
            bogon_share: Some(bogon_share),
            ttl_spread: None,
            method,
        })
    }
}

/// A flood is judged spoofed only with at least this many distinct sources…
const SPOOF_MIN_SOURCES: u64 = 1_000;
/// …most of them seen with a single packet (the sources followed are the attack's first, where
/// a spoofing tool's own retries cluster; hosts that flood for real send many packets each).
const SPOOF_ONCE_SHARE: f64 = 0.75;

/// Addresses no host on the Internet sends from: unspecified, loopback, private, shared,
/// link-local, documentation, benchmarking, multicast and reserved ranges (RFC 6890).
fn is_bogon(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            v.is_unspecified()
                || v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_documentation()
                || v.is_broadcast()
                || o[0] == 0
                || o[0] >= 224
                || (o[0] == 100 && o[1] & 0xc0 == 64)
                || (o[0] == 198 && o[1] & 0xfe == 18)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        }
        IpAddr::V6(v) => {
            let seg = v.segments();
            v.is_unspecified()
                || v.is_loopback()
                || v.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
        }
    }
}

/// What a rule adds to an alert besides its rates.
#[derive(Default)]
struct Extra {
    named: Option<TopSource>,
    /// A flood's second, kept when it is the worst so far: its summary is written from it.
    peak: Option<Peak>,
    baseline: Option<Measured>,
    impairment: Option<Impairment>,
    /// The limits the rule compared with, where they are not the asset's thresholds.
    threshold: Option<Rates>,
}

impl Extra {
    fn named(n: TopSource) -> Extra {
        Extra {
            named: Some(n),
            ..Extra::default()
        }
    }

    fn baseline(b: Option<Measured>) -> Extra {
        Extra {
            baseline: b,
            ..Extra::default()
        }
    }
}

/// Keeps the worst impairment seen while an alert is open: the lowest completion, else the
/// lowest response ratio.
fn worst(slot: &mut Option<Impairment>, new: Impairment) {
    let key = |i: &Impairment| {
        i.handshake_completion
            .unwrap_or(f64::INFINITY)
            .min(i.response_ratio.unwrap_or(f64::INFINITY))
    };
    if slot.as_ref().is_none_or(|old| key(&new) < key(old)) {
        *slot = Some(new);
    }
}

/// Adds or refreshes a named party, keeping the list bounded and ordered by traffic.
fn name(list: &mut Vec<TopSource>, n: TopSource) {
    if let Some(e) = list.iter_mut().find(|e| e.addr == n.addr) {
        e.pkts = e.pkts.max(n.pkts);
        e.bytes = e.bytes.max(n.bytes);
        return;
    }
    if list.len() < TOP_SOURCES {
        list.push(n);
        list.sort_by(|a, b| b.pkts.cmp(&a.pkts).then(a.addr.cmp(&b.addr)));
    }
}

fn sample(b: &Bucket) -> Sample {
    Sample {
        pkts: f64::from(b.pkts),
        bits: (b.bytes * 8) as f64,
        new_flows: f64::from(b.new_flows),
        attempts: f64::from(b.svc_att),
        established: f64::from(b.svc_est),
        svc_flows: f64::from(b.svc_flows),
        answered: f64::from(b.svc_ans),
    }
}

/// Follows per-address traffic of a multi-address asset in its latest second.
#[inline(always)]
fn spread(sp: &mut Spread, local: IpAddr, last: u64, inbound: &Added, new: bool) {
    if last != sp.cur.sec {
        if last < sp.cur.sec {
            // Late records count for their seconds' totals, not for the spread.
            return;
        }
        sp.next_second(last);
    }
    let Spread {
        direct,
        cells,
        addrs,
        cur: c,
        ..
    } = sp;
    let sec = c.sec;
    // A prefix followed directly whose cells are made: the cell at the address's offset.
    let i = match (*direct, local) {
        (Some((net, _)), IpAddr::V4(a)) => u32::from(a).wrapping_sub(net) as usize,
        _ => usize::MAX,
    };
    let cell = if i < cells.len() {
        &mut cells[i]
    } else {
        match other_cell(*direct, cells, addrs, c, local) {
            Some(cell) => cell,
            None => return,
        }
    };
    if cell.sec != sec {
        *cell = Cell {
            sec,
            ..Cell::default()
        };
        c.distinct += 1;
    }
    cell.pkts = cell
        .pkts
        .saturating_add(u32::try_from(inbound.pkts).unwrap_or(u32::MAX));
    cell.bytes += inbound.bytes;
    cell.new += u32::from(new);
    c.max_pkts = c.max_pkts.max(cell.pkts);
    c.max_bytes = c.max_bytes.max(cell.bytes);
    c.max_new = c.max_new.max(cell.new);
}

impl Spread {
    /// The latest second moves on to `last`.
    #[cold]
    fn next_second(&mut self, last: u64) {
        self.prev = if last == self.cur.sec + 1 {
            self.cur
        } else {
            SecSpread::default()
        };
        self.cur = SecSpread {
            sec: last,
            ..SecSpread::default()
        };
        if self.direct.is_none() {
            self.addrs.clear();
        }
    }
}

/// The cell of `local` where it is not a made direct cell: the direct cells are made on first
/// use; other addresses are followed by the table while it has room (beyond it they are
/// counted, and `None` returned).
#[inline(never)]
fn other_cell<'a>(
    direct: Option<(u32, u32)>,
    cells: &'a mut Vec<Cell>,
    addrs: &'a mut HashMap<IpAddr, Cell>,
    cur: &mut SecSpread,
    local: IpAddr,
) -> Option<&'a mut Cell> {
    if let (Some((net, size)), IpAddr::V4(a)) = (direct, local) {
        let i = u32::from(a).wrapping_sub(net);
        if i < size {
            if cells.is_empty() {
                *cells = vec![Cell::default(); size as usize];
            }
            return Some(&mut cells[i as usize]);
        }
    }
    let room = addrs.len() < MAX_SPREAD;
    match addrs.entry(local) {
        hashbrown::hash_map::Entry::Occupied(e) => Some(e.into_mut()),
        hashbrown::hash_map::Entry::Vacant(e) if room => Some(e.insert(Cell::default())),
        hashbrown::hash_map::Entry::Vacant(_) => {
            cur.distinct += 1;
            None
        }
    }
}

fn flood_summary(
    kind: AlertKind,
    p: &Peak,
    refl: &[u64; REFLECTORS.len()],
    refl_out: u64,
) -> String {
    let b = &p.b;
    match kind {
        AlertKind::SynFlood => format!(
            "{} new TCP flows in one second, {:.0}% never completed the handshake",
            b.tcp_new,
            f64::from(b.tcp_half_open) * 100.0 / f64::from(b.tcp_new.max(1))
        ),
        AlertKind::UdpAmplification => {
            amp_summary(u64::from(b.refl_pkts), b.refl_bytes * 8, refl, refl_out)
        }
        AlertKind::CarpetBombing => {
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

fn amp_summary(pkts: u64, bits: u64, refl: &[u64; REFLECTORS.len()], refl_out: u64) -> String {
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
    fn the_held_filter_never_forgets_an_address_and_rejects_most_others() {
        let mut h = Held::default();
        for v in 0..MAX_SOURCES as u64 {
            h.add(v * 2_654_435_761);
        }
        assert!((0..MAX_SOURCES as u64).all(|v| h.maybe(v * 2_654_435_761)));
        let false_hits = (0..100_000u64)
            .filter(|v| h.maybe(0xDEAD_0000_0000 + v * 7919))
            .count();
        assert!(false_hits < 20_000, "{false_hits}");
    }
}
