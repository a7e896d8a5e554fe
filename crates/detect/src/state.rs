//! One asset's accounting: the ring of one-second counts, the late cache, the learned
//! baseline, the sources an attack gathers and the watermark's finalisation. The rules that
//! read these counts are in `rules/`, the alert lifecycle in `alert.rs`.

use crate::alert::*;
use crate::baseline::{Baseline, Sample};
use crate::rules::*;
use crate::rules::{amplification, carpet::*, exfil::*, flood::*, ics, scan::*};
use crate::sketch::{Bounds, Cardinality};
use crate::{Footprint, Settings, NS};
use hashbrown::HashMap;
use normwatch_config::norms::NormCatalogue;
use normwatch_model::ip_proto;
use normwatch_model::{
    addr_key, Alert, AlertKind, AlertState, Asset, AssetIndex, DirStats, FlowRecord, Measured,
    PriorDir, Role, Side, Span, TcpFlags, TopSource,
};
use std::net::IpAddr;

/// Least seconds of history per asset; more when the allowed lateness needs them.
pub(crate) const MIN_RING: u64 = 16;
/// Most seconds of history per asset.
pub(crate) const MAX_RING: u64 = 64;
/// Seconds before the ring kept for late records of short flows (a flood's flows reported
/// only at their idle timeout). A power of two.
pub(crate) const LATE_SLOTS: usize = 4;
/// Sources remembered per asset while an alert may need naming them (more are counted).
pub(crate) const MAX_SOURCES: usize = 1024;
/// Event seconds between sweeps of idle scanners and expired destinations.
pub(crate) const SWEEP_SECS: u64 = 60;

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
    (s.lateness.as_secs() + 4)
        .clamp(MIN_RING, MAX_RING)
        .next_power_of_two()
}

/// One second of traffic towards the asset, as every asset counts it (40 bytes). Counts are
/// u32, saturating rather than wrapping: 4.29 billion packets, flows or handshakes in one
/// second towards one asset is beyond any link a sensor captures (a 400 Gbit/s link carries
/// under 600 M minimum-size packets a second). Bytes are u64. The second a slot holds is
/// implied by the ring's newest second: a slot is cleared when the ring advances onto it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Core {
    pub(crate) bytes: u64,
    pub(crate) pkts: u32,
    pub(crate) new_flows: u32,
    pub(crate) tcp_new: u32,
    pub(crate) tcp_half_open: u32,
    /// Service ports: TCP attempts, of them established; flows, of them answered.
    pub(crate) svc_att: u32,
    pub(crate) svc_est: u32,
    pub(crate) svc_flows: u32,
    pub(crate) svc_ans: u32,
}

/// Per-protocol and reflected counts of one second, kept only by assets with per-protocol
/// thresholds or that have received unsolicited reflector responses: other assets never read
/// them (their per-protocol limits are unset, and nothing of theirs was reflected).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Ext {
    pub(crate) tcp_bytes: u64,
    pub(crate) udp_bytes: u64,
    pub(crate) icmp_bytes: u64,
    /// Unsolicited responses from reflector ports.
    pub(crate) refl_bytes: u64,
    pub(crate) tcp_pkts: u32,
    pub(crate) udp_pkts: u32,
    pub(crate) udp_new: u32,
    pub(crate) icmp_pkts: u32,
    pub(crate) icmp_new: u32,
    pub(crate) refl_pkts: u32,
}

/// A second of the cache of late seconds: its own tag, flag and both parts.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct LateSlot {
    pub(crate) sec: u64,
    pub(crate) hot: bool,
    pub(crate) c: Core,
    pub(crate) x: Ext,
}

/// A second already over a limit when it was last judged, and the counts it must grow past
/// to be judged again.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Seen {
    pub(crate) sec: u64,
    pub(crate) next: Gate,
}

/// A second's counts when it was last judged over a limit, grown by an eighth: up to them it
/// is not judged again.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Gate {
    pub(crate) pkts: u32,
    pub(crate) new: u32,
    pub(crate) refl: u32,
}

impl Gate {
    pub(crate) fn after(b: &Bucket) -> Gate {
        let grown = |n: u32| n.saturating_add(n / 8);
        Gate {
            pkts: grown(b.pkts),
            new: grown(b.new_flows),
            refl: grown(b.refl_pkts),
        }
    }

    /// Counts still within the gate: not worth judging again.
    #[inline]
    pub(crate) fn holds(&self, c: &Core, x: Option<&Ext>) -> bool {
        c.pkts <= self.pkts && c.new_flows <= self.new && x.map_or(0, |x| x.refl_pkts) <= self.refl
    }
}

/// Seconds whose judged counts are remembered (by second modulo this; a collision only
/// costs one more judgement).
pub(crate) const SEEN_SLOTS: usize = 16;

#[inline]
pub(crate) fn add32(a: &mut u32, v: u64) {
    *a = a.saturating_add(u32::try_from(v).unwrap_or(u32::MAX));
}

/// A one-hash Bloom filter over hashed addresses (`addr_key`), `WORDS` × 64 bits: "certainly
/// not added" without probing the table it stands for.
#[derive(Debug)]
pub(crate) struct Filter<const WORDS: usize>([u64; WORDS]);

/// The filter over the addresses in a full source table: 8 bits per entry, so about one in
/// eight absent addresses still probes the table.
pub(crate) type Held = Filter<{ MAX_SOURCES * 8 / 64 }>;

/// The same over a full scan table.
pub(crate) type Scanners = Filter<{ MAX_SCANNERS * 8 / 64 }>;

impl<const WORDS: usize> Default for Filter<WORDS> {
    fn default() -> Self {
        Filter([0; WORDS])
    }
}

impl<const WORDS: usize> Filter<WORDS> {
    #[inline]
    pub(crate) fn bit(v: u64) -> usize {
        let bits = (WORDS * 64).trailing_zeros();
        (v.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits)) as usize
    }

    pub(crate) fn add(&mut self, v: u64) {
        let b = Self::bit(v);
        self.0[b / 64] |= 1 << (b % 64);
    }

    #[inline]
    pub(crate) fn maybe(&self, v: u64) -> bool {
        let b = Self::bit(v);
        self.0[b / 64] & (1 << (b % 64)) != 0
    }
}

/// What one source sent the asset while an attack may be building or is under way, and how
/// the asset answered it: what `rules::sources` tells the attack's sources from its clients
/// by. Counts saturate.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Src {
    pub(crate) pkts: u64,
    pub(crate) bytes: u64,
    /// First and last second of its records.
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// Packets of its flows the asset did not serve: unanswered, handshakes not completed,
    /// reflected.
    pub(crate) unserved: u32,
    /// Packets the asset sent it.
    pub(crate) out_pkts: u32,
    /// TCP connection attempts it made, and those that completed their handshake.
    pub(crate) attempts: u32,
    pub(crate) established: u32,
    /// Flows it began, and those the asset answered.
    pub(crate) flows: u32,
    pub(crate) answered: u32,
    pub(crate) reflector: bool,
    /// The TTLs of its packets, and its source ports (TCP, UDP), where records carry them.
    pub(crate) ttl: Bounds<u8>,
    pub(crate) port: Bounds<u16>,
}

/// How one record's flow went, for its source's entry (see [`Src`]).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Served {
    /// The first record of a flow the source began.
    pub(crate) new: bool,
    pub(crate) reflected: bool,
    pub(crate) unserved: bool,
    pub(crate) attempt: bool,
    pub(crate) established: bool,
    pub(crate) answered: bool,
}

impl Served {
    /// Judged from the record's cumulative flags and packets, and the prior report's (a
    /// handshake or answer counts once, on the record that first shows it).
    #[inline]
    pub(crate) fn of(
        proto: u8,
        side: Side,
        inbound: &DirStats,
        outbound: &DirStats,
        prior: Option<&(PriorDir, PriorDir)>,
        reflected: bool,
    ) -> Served {
        let asked = side == Side::Resp;
        let est = |i: TcpFlags, o: TcpFlags| {
            i.has(TcpFlags::SYN) && i.has(TcpFlags::ACK) && o.has(TcpFlags::SYN | TcpFlags::ACK)
        };
        let tcp_attempt = asked && proto == ip_proto::TCP && inbound.tcp_flags.has(TcpFlags::SYN);
        let est_now = tcp_attempt && est(inbound.tcp_flags, outbound.tcp_flags);
        let (est_before, answered_before) = match prior {
            Some((pi, po)) => (est(pi.tcp_flags, po.tcp_flags), po.pkts > 0),
            None => (false, false),
        };
        Served {
            new: asked && prior.is_none(),
            reflected,
            unserved: reflected || (asked && (outbound.pkts == 0 || (tcp_attempt && !est_now))),
            attempt: tcp_attempt && prior.is_none(),
            established: est_now && !est_before,
            answered: asked && outbound.pkts > 0 && !answered_before,
        }
    }
}

/// What a record says of its sender's packets for the spoofing assessment: their TTLs and
/// source port.
pub(crate) type Marks = (Option<Span<u8>>, Option<Span<u16>>);

/// Follows source `remote` for an attack that may be building or is under way: the packets
/// and bytes it sent (`din`), the packets the asset sent it, how the asset answered it (see
/// [`Src`]), their TTLs and source port (`marks`) and the seconds of the record; beyond the
/// table's room, counted.
#[inline]
pub(crate) fn gather(
    a: &mut Attack,
    remote: IpAddr,
    din: &Added,
    out_pkts: u64,
    how: &Served,
    marks: Marks,
    (first, last): (u64, u64),
) {
    let key = addr_key(remote);
    if how.unserved {
        a.unserved.insert(key);
    }
    let unserved = if how.unserved { din.pkts } else { 0 };
    // Once the table is full, a spoofed flood's sources are nearly all new: a bit per hashed
    // address says "certainly not held" without probing the table.
    let absent = a.held.as_deref().is_some_and(|h| !h.maybe(key));
    let e = if absent {
        None
    } else if let Some(e) = a.sources.get_mut(&remote) {
        Some(e)
    } else if a.sources.len() < MAX_SOURCES {
        Some(a.sources.entry(remote).or_insert(Src {
            first,
            last,
            ..Src::default()
        }))
    } else {
        None
    };
    let Some(e) = e else {
        a.others.0 += din.pkts;
        a.others.1 += din.bytes;
        a.others_unserved += unserved;
        if how.unserved {
            a.others_ttl.add(marks.0);
            a.others_port.add(marks.1);
        }
        return;
    };
    e.ttl.add(marks.0);
    e.port.add(marks.1);
    e.pkts += din.pkts;
    e.bytes += din.bytes;
    e.first = e.first.min(first);
    e.last = e.last.max(last);
    add32(&mut e.unserved, unserved);
    add32(&mut e.out_pkts, out_pkts);
    add32(&mut e.attempts, u64::from(how.attempt));
    add32(&mut e.established, u64::from(how.established));
    add32(&mut e.flows, u64::from(how.new));
    add32(&mut e.answered, u64::from(how.answered));
    e.reflector |= how.reflected;
    if a.sources.len() == MAX_SOURCES && a.held.is_none() {
        let mut h = Box::new(Held::default());
        for k in a.sources.keys() {
            h.add(addr_key(*k));
        }
        a.held = Some(h);
    }
}

/// What a record adds to a flow's earlier records in one direction: packets and IP bytes.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Added {
    pub(crate) pkts: u64,
    pub(crate) bytes: u64,
}

impl Added {
    /// Everything: the flow's first record.
    #[inline]
    pub(crate) fn all(d: &DirStats) -> Added {
        Added {
            pkts: d.pkts,
            bytes: d.ip_bytes,
        }
    }

    /// What was sent since the prior record.
    #[inline]
    pub(crate) fn since(p: &PriorDir, d: &DirStats) -> Added {
        let (pkts, bytes) = p.added(d);
        Added { pkts, bytes }
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
    pub(crate) newest: u64,
    pub(crate) finalized: u64,
    /// The total limits in force (static thresholds raised to the learned baseline).
    pub(crate) lim: Lim,
    /// Ring slots whose second crossed a limit (bit per slot; the ring has at most 64).
    pub(crate) hot: u64,
    /// Checked before `judge` is called at all (see [`Gate`]).
    pub(crate) gate: Gate,
    /// Packets counted for seconds already final, since the last finalisation (saturating).
    pub(crate) late_pkts: u32,
    pub(crate) open: Vec<Open>,
    /// The per-protocol and reflected part of each ring slot (made when needed).
    pub(crate) ext: Option<Box<[Ext; N]>>,
    /// Copied from the asset, so a record does not reach into its configuration.
    pub(crate) ports: Ports,
    pub(crate) holds_ip: bool,
    /// The asset has more than one address.
    pub(crate) multi: bool,
    /// On the detector's list of assets to visit when the watermark moves.
    pub(crate) listed: bool,
    /// Sources or reflected bytes were gathered since they were last forgotten.
    pub(crate) gathered: bool,
    /// One slot per second, `newest` and the seconds before it (see [`Core`]), in the state
    /// itself: a record's slot is found from the state's address alone, so reading it does
    /// not wait for a pointer to load. The length is a constant of the type (the detector
    /// picks the state type from the allowed lateness), so slot arithmetic has no length to
    /// read and no bounds to check.
    pub(crate) ring: [Core; N],
    /// Seconds before the ring's window that late records still reach (made on first use).
    pub(crate) late_cache: Option<Box<[LateSlot; LATE_SLOTS]>>,
    /// Per-protocol limits, where the asset sets any.
    pub(crate) plim: Option<Box<ProtoLim>>,
    /// Per-address traffic of an asset with more than one address (carpet bombing applies),
    /// made when an attack may first be building.
    pub(crate) spread: Option<Box<Spread>>,
    /// Bytes counted for seconds already final, since the last finalisation.
    pub(crate) late_bytes: u64,
    pub(crate) base: Baseline,
    /// What an attack gathers (made when the first one may be building).
    pub(crate) atk: Option<Box<Attack>>,
    /// The scan and exfiltration rules' tables (made on the first probe or upload).
    pub(crate) tables: Option<Box<Tables>>,
}

/// What an attack on the asset gathers: its sources and reflected traffic, and the counts of
/// its seconds when last judged.
#[derive(Debug, Default)]
pub(crate) struct Attack {
    pub(crate) sources: HashMap<IpAddr, Src>,
    /// Which sources the full table may hold (made when it fills).
    pub(crate) held: Option<Box<Held>>,
    /// Packets and bytes of sources beyond the table's room, and of those packets the ones
    /// the asset did not serve (see [`Src::unserved`]).
    pub(crate) others: (u64, u64),
    pub(crate) others_unserved: u64,
    /// The TTLs and source ports of traffic the asset did not serve that no held source
    /// stands for: of sources beyond the table's room, and of aggregated attempts.
    pub(crate) others_ttl: Bounds<u8>,
    pub(crate) others_port: Bounds<u16>,
    /// Reflected bytes by protocol, and bytes the asset sent in those flows, since nothing
    /// was open.
    pub(crate) refl: Vec<u64>,
    pub(crate) refl_out: u64,
    pub(crate) seen: [Seen; SEEN_SLOTS],
    /// Recently closed alerts.
    pub(crate) closed: Vec<Closed>,
    /// Hits folded into a closed alert's window (late records of its attack).
    pub(crate) late_hits: u64,
    /// Distinct sources gathered with traffic the asset did not serve, beyond the table's
    /// room too (an attack's sources are among these; the clients it served are not).
    pub(crate) unserved: Cardinality,
}

#[cold]
pub(crate) fn new_attack() -> Box<Attack> {
    Box::new(Attack {
        sources: HashMap::new(),
        held: None,
        unserved: Cardinality::default(),
        others: (0, 0),
        others_unserved: 0,
        others_ttl: Bounds::default(),
        others_port: Bounds::default(),
        refl: Vec::new(),
        refl_out: 0,
        seen: [Seen::default(); SEEN_SLOTS],
        closed: Vec::new(),
        late_hits: 0,
    })
}

/// The tables of the per-source rules.
#[derive(Debug)]
pub(crate) struct Tables {
    pub(crate) scans: HashMap<IpAddr, Probe>,
    /// Which sources the full scan table may hold (made when it is found full, dropped when
    /// a sweep may have made room): a spoofed flood's sources are nearly all new, and a bit
    /// per hashed address says "certainly not followed" without probing the table.
    pub(crate) scanning: Option<Box<Scanners>>,
    /// Destinations followed exactly, and which may be among them.
    pub(crate) exfil: HashMap<IpAddr, Outbound>,
    pub(crate) followed: Filter<4>,
    /// What every other destination may have received (made on the first upload).
    pub(crate) sent: Option<Box<Sent>>,
    pub(crate) last_sweep: u64,
}

/// The asset's service ports: the first few inline (most assets have fewer); with more, the
/// rest are read from the asset's own list.
#[derive(Debug)]
pub(crate) struct Ports {
    pub(crate) inline: [u16; 8],
    pub(crate) len: u8,
    pub(crate) more: bool,
}

impl Ports {
    pub(crate) fn new(all: &[u16]) -> Ports {
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
    pub(crate) fn contains(&self, p: u16, asset: &Asset) -> bool {
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
                    + a.refl.capacity() * size_of::<u64>()
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
                        + o.ics.as_ref().map_or(0, |t| t.heap_bytes())
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
        // More than one address: a prefix, or several single addresses.
        let multi = cx.asset.cidrs.len() > 1
            || cx
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
    pub(crate) fn limits(&self) -> Limits {
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
    pub(crate) fn advance(&mut self, to: u64) {
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
    pub(crate) fn ring_len(&self) -> usize {
        const { assert!(N.is_power_of_two() && N <= 64) };
        N
    }

    /// Whether `sec` has a slot in the ring (the newest second and those before it).
    #[inline]
    pub(crate) fn in_ring(&self, sec: u64) -> bool {
        // `sec` not after the newest and fewer than the ring's length before it.
        self.newest.wrapping_sub(sec) < self.ring_len() as u64
    }

    /// The counts of `sec` to add to: in the ring if `sec` is within its window (from
    /// `window`, up to the newest second), else in the cache of late seconds. The
    /// per-protocol part is there when the asset keeps one.
    #[inline]
    pub(crate) fn counts(&mut self, sec: u64, window: u64) -> (&mut Core, Option<&mut Ext>) {
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
    pub(crate) fn want_ext(&mut self) {
        if self.ext.is_none() {
            self.ext = Some(Box::new([Ext::default(); N]));
        }
    }

    /// Second `sec` in full, if the ring or the late cache holds it.
    pub(crate) fn get(&self, sec: u64) -> Option<Bucket> {
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
    pub(crate) fn is_hot(&self, sec: u64) -> bool {
        if self.in_ring(sec) {
            return self.hot >> (sec as usize & (self.ring_len() - 1)) & 1 != 0;
        }
        self.late_cache.as_ref().is_some_and(|c| {
            c[sec as usize & (LATE_SLOTS - 1)].sec == sec && c[sec as usize & (LATE_SLOTS - 1)].hot
        })
    }

    pub(crate) fn set_hot(&mut self, sec: u64) {
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
    pub(crate) fn atk(&mut self) -> &mut Attack {
        self.atk.get_or_insert_with(new_attack)
    }

    pub(crate) fn tables(&mut self, sec: u64) -> &mut Tables {
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
    pub(crate) fn reflected(&self) -> (Vec<u64>, u64) {
        self.atk
            .as_ref()
            .map_or((Vec::new(), 0), |a| (a.refl.clone(), a.refl_out))
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
        let reflector = amplification::reflected(cx.s, proto, remote_port, inbound, outbound);
        let reflected = reflector.is_some();
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
                        ip_proto::TCP => {
                            add32(&mut x.tcp_pkts, p);
                            x.tcp_bytes += b;
                        }
                        ip_proto::UDP => {
                            add32(&mut x.udp_pkts, p);
                            x.udp_bytes += b;
                        }
                        ip_proto::ICMP | ip_proto::ICMPV6 => {
                            add32(&mut x.icmp_pkts, p);
                            x.icmp_bytes += b;
                        }
                        _ => {}
                    }
                    if reflected {
                        add32(&mut x.refl_pkts, p);
                        x.refl_bytes += b;
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
        let half_open = proto == ip_proto::TCP
            && side == Side::Resp
            && inbound_flags.has(TcpFlags::SYN)
            && !inbound_flags.has(TcpFlags::ACK);
        let service = side == Side::Resp && self.ports.contains(local_port, cx.asset);
        // Connections the record stands for: its aggregated attempts, else one.
        let conns = r
            .attempts
            .as_ref()
            .map_or(1, |at| u32::try_from(at.count).unwrap_or(u32::MAX));
        if let Some((pi, po)) = &prior {
            // What an earlier record of this connection left open and this one settles is
            // counted in the second the connection began, if that is not final yet.
            let start = r.first_ns / NS;
            let completed = proto == ip_proto::TCP
                && side == Side::Resp
                && pi.tcp_flags.has(TcpFlags::SYN)
                && !pi.tcp_flags.has(TcpFlags::ACK)
                && inbound_flags.has(TcpFlags::ACK);
            let answered = service && po.pkts == 0 && outbound.pkts > 0;
            let established = service
                && proto == ip_proto::TCP
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
            // new-flow thresholds compare like with like; a record of a sensor's aggregated
            // attempts for its count of them.
            let flows = match &r.export {
                Some(e) if r.attempts.is_none() => e.sampling_rate.max(1),
                _ => conns,
            };
            let (bk, x) = self.counts(from, window);
            bk.new_flows = bk.new_flows.saturating_add(flows);
            match proto {
                ip_proto::TCP => {
                    bk.tcp_new = bk.tcp_new.saturating_add(flows);
                    if half_open {
                        bk.tcp_half_open = bk.tcp_half_open.saturating_add(flows);
                    }
                }
                ip_proto::UDP => {
                    if let Some(x) = x {
                        x.udp_new = x.udp_new.saturating_add(flows);
                    }
                }
                ip_proto::ICMP | ip_proto::ICMPV6 => {
                    if let Some(x) = x {
                        x.icmp_new = x.icmp_new.saturating_add(flows);
                    }
                }
                _ => {}
            }
            if service {
                bk.svc_flows = bk.svc_flows.saturating_add(conns);
                bk.svc_ans += u32::from(outbound.pkts > 0);
                if proto == ip_proto::TCP && inbound_flags.has(TcpFlags::SYN) {
                    bk.svc_att = bk.svc_att.saturating_add(conns);
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
        if let Some(i) = reflector {
            let a = self.atk();
            if a.refl.len() <= i {
                a.refl.resize(i + 1, 0);
            }
            a.refl[i] += din.bytes;
            a.refl_out += dout.bytes;
            self.gathered = true;
        }
        if armed && din.pkts > 0 {
            self.gathered = true;
            let how = Served::of(proto, side, inbound, outbound, prior.as_ref(), reflected);
            let a = self.atk();
            match r.attempts.as_deref() {
                // Aggregated one-packet attempts: their sources' sketch, and a fair sample of
                // them followed as their own records would have been (one unanswered,
                // half-open attempt each); the rest counted among the others.
                Some(at) => {
                    a.unserved.merge(&at.sources);
                    a.others_ttl.add(at.ttl);
                    a.others_port.add(at.sport);
                    let each = din.bytes / at.count.max(1);
                    let (mut pkts, mut bytes) = (din.pkts, din.bytes);
                    let attempt = Served {
                        new: true,
                        unserved: true,
                        attempt: true,
                        ..Served::default()
                    };
                    for &src in at.sample.iter().take(pkts as usize) {
                        let one = Added {
                            pkts: 1,
                            bytes: each,
                        };
                        gather(a, src, &one, 0, &attempt, (None, None), (first, last));
                        pkts -= 1;
                        bytes = bytes.saturating_sub(each);
                    }
                    a.others.0 += pkts;
                    a.others.1 += bytes;
                    a.others_unserved += pkts;
                }
                None => {
                    // The sender's TTLs (of the side that sent to the asset) and its port,
                    // where the protocol has ports.
                    let ttl = match side {
                        Side::Resp => r.orig_ttl,
                        Side::Orig => r.resp_ttl,
                    };
                    let port = matches!(proto, ip_proto::TCP | ip_proto::UDP)
                        .then(|| Span::of(remote_port));
                    gather(a, remote, &din, dout.pkts, &how, (ttl, port), (first, last))
                }
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
            spread(
                sp,
                local,
                last,
                &din,
                if new && from == first { conns } else { 0 },
            );
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
    pub(crate) fn late_mass(&mut self, pkts: u64, bytes: u64) {
        add32(&mut self.late_pkts, pkts);
        self.late_bytes += bytes;
    }

    /// The rules that do not use the per-second buckets: ICS commands, scans, exfiltration.
    /// Inlined: most records need none of them, and the tests are cheaper than the call.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub(crate) fn side_rules(
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
            let cmds = ics::added(all, prior_in.map_or([0; 4], |p| p.commands));
            if ics::severity(&cmds).is_some() && !cx.asset.allows(remote) {
                self.ics(cx, r, remote, local, inbound, &cmds, last, out);
            }
        }
        // A connection attempt is judged a probe once its flow has ended: an interim report
        // may come before the answer. In a second already over a limit, a flood's (often
        // spoofed) sources would fill the scan table one probe each: only sources the scan
        // rule already follows are followed further then (a fast scan crosses a new-flow
        // limit itself, and its later probes must still count).
        if side == Side::Resp
            && r.end_reason.is_final()
            && r.attempts.is_none()
            && is_probe(r.ip_proto, inbound, outbound, remote_port, &cx.s.reflectors)
            && (!self.is_hot(last) || self.follows(remote))
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

    /// Checks second `sec` against the rate rules.
    pub(crate) fn evaluate(&mut self, cx: &Ctx, sec: u64, out: &mut Vec<Alert>) {
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
    pub(crate) fn gated(&self, sec: u64) -> bool {
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
    pub(crate) fn gated_earlier(&self, sec: u64) -> bool {
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
    pub(crate) fn near_sec(&self, s: &Settings, sec: u64) -> bool {
        match self.parts(sec) {
            Some((c, x)) => self.near(s, c, x),
            None => false,
        }
    }

    /// The stored counts of `sec`, in the ring or the late cache.
    #[inline]
    pub(crate) fn parts(&self, sec: u64) -> Option<(&Core, Option<&Ext>)> {
        if self.in_ring(sec) {
            let i = sec as usize & (self.ring_len() - 1);
            return Some((&self.ring[i], self.ext.as_deref().map(|x| &x[i])));
        }
        let b = &self.late_cache.as_ref()?[sec as usize & (LATE_SLOTS - 1)];
        (b.sec == sec).then_some((&b.c, Some(&b.x)))
    }

    #[inline(always)]
    pub(crate) fn near(&self, s: &Settings, c: &Core, x: Option<&Ext>) -> bool {
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
            || q(x.refl_pkts, s.amplification_pps)
            || qb(x.refl_bytes, s.amplification_bps)
    }

    pub(crate) fn baseline_now(&self, s: &Settings) -> Option<Measured> {
        let m = self.base.mean();
        (self.base.seconds >= s.baseline_warmup.as_secs()).then_some(Measured {
            pps: m.pkts,
            bps: m.bits,
            new_flows_per_s: m.new_flows,
        })
    }

    /// Makes seconds up to `upto` final: quiet ones feed the baseline, each is checked for
    /// service impairment.
    pub(crate) fn finalize(&mut self, cx: &Ctx, upto: u64, out: &mut Vec<Alert>) {
        if upto <= self.finalized {
            return;
        }
        let s = cx.s;
        let alpha = 1.0 / s.baseline_window.as_secs().max(1) as f64;
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
        if self.base.seconds >= s.baseline_warmup.as_secs() {
            self.lim = total_limit(&cx.asset.thresholds.total, &self.base, s);
        }
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
                    self.final_summary(&mut o, &cx.s.reflectors);
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
                a.unserved = Cardinality::default();
                a.others = (0, 0);
                a.others_unserved = 0;
                a.others_ttl = Bounds::default();
                a.others_port = Bounds::default();
                a.refl.clear();
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
                let idle = cx.s.scan_idle.as_secs();
                t.scans.retain(|_, p| p.last_sec + idle >= watermark);
                t.scanning = None;
                let window = cx.s.exfil_window.as_secs();
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
}

pub(crate) fn sample(b: &Bucket) -> Sample {
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
