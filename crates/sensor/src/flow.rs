//! The bidirectional flow table.
//!
//! One entry per connection, keyed by the canonical 5-tuple. The originator is the side Zeek
//! calls the originator (the SYN sender, or by likely server ports for connections seen
//! mid-stream), TCP endpoint states follow Zeek's TCP analyzer so that `conn_state` matches
//! conn.log, and flows leave the table on Zeek's timers (attempt, close linger, idle) or on
//! the active timeout, eviction when full, or end of input. Event time comes only from the
//! packets.
//!
//! Memory: entries live in a slab indexed by a `hashbrown::HashTable<u32>`, so the hash index
//! costs 5 bytes per bucket and an entry is stored once.

use crate::attempts::{AggKey, Aggregates, Attempt, Counted, Endpoints, Held, Known};
use crate::decode::{self, ChecksumSettings, DropReason, Fragment, LinkType, Packet};
use crate::ics;
use crate::stats::SensorStats;
use hashbrown::{DefaultHashBuilder, HashMap, HashTable};
use normwatch_model::ip_proto;
use normwatch_model::{
    AssetIndex, AssetMatch, ConnState, DirStats, EndReason, FlowRecord, IcsProto, IcsSummary,
    Prior, PriorDir, Side, Span, TcpFlags,
};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

const NS: u64 = 1_000_000_000;
/// How long an incomplete fragment group is remembered.
const FRAG_TIMEOUT_NS: u64 = 30 * NS;
/// Fragment groups tracked at once.
const MAX_FRAG_GROUPS: usize = 65_536;
/// Flows the table has room for before it first grows.
const INITIAL_CAPACITY: usize = 16_384;
/// Slot hints kept (a power of two): recently used flows found without the hash index.
const HINT_BITS: u32 = 8;
/// Slots sampled to choose an eviction victim when the table is full.
const EVICTION_SAMPLE: usize = 8;
/// Packets since a flow's last record that make its next interim report due at once.
const URGENT_PKTS: u32 = 8;
/// A trickling flow's interim reports are at most 2^this report intervals apart.
const MAX_BACKOFF: u8 = 3;
/// One-packet attempts held at most (64 bytes each, and 16 of index): the attempt timeout's
/// worth up to 200 000 SYNs a second, the last second's at a million a second (answers come
/// within it; a SYN retried later than that counts as another attempt).
const MAX_HELD_ATTEMPTS: usize = 1 << 20;
/// Aggregates of attempts counted at once (responder addresses and ports within a report
/// interval); an attempt beyond them becomes a flow.
const MAX_AGGREGATES: usize = 4096;
/// How long a source whose attempt became a flow is remembered (one to two of these).
const KNOWN_NS: u64 = 60 * NS;
/// Seconds the timer wheel spans (a power of two); a later deadline waits in its bucket for
/// another turn of the wheel.
const WHEEL_SECS: usize = 64;

/// Flow-table settings (built from the validated config).
#[derive(Clone, Debug)]
pub struct FlowConfig {
    pub sensor_id: Arc<str>,
    /// Most flows held at once; beyond it the least recently seen of a sample is evicted.
    pub max_flows: usize,
    pub tcp_idle_ns: u64,
    pub udp_idle_ns: u64,
    pub icmp_idle_ns: u64,
    pub other_idle_ns: u64,
    /// Long flows are reported every `active_ns` (a continuation record follows); `None` = never.
    pub active_ns: Option<u64>,
    /// Every `report_ns` of event time, each flow with traffic since its last record is
    /// reported in an interim record ([`EndReason::Interim`]), so consumers hear of traffic
    /// while it happens, not when its flow ends; `None` = only final records.
    pub report_ns: Option<u64>,
    /// An unanswered SYN is given up this long after it was first seen.
    pub tcp_attempt_ns: u64,
    /// While more than this many TCP SYNs a second (this event second or the one before)
    /// would start a connection, a SYN from a source not seen before is held as a one-packet
    /// attempt, counted into one record per responder address and port and report interval
    /// ([`EndReason::Attempts`]), and becomes a flow only when it is answered or its source
    /// sends again. `None`: every connection is a flow of its own (Zeek's conn.log). Only
    /// with interim reports (`report_ns`), which send those records.
    pub attempts_above: Option<u64>,
    /// A closed or reset TCP connection lingers this long for late packets.
    pub tcp_linger_ns: u64,
    pub checksums: ChecksumSettings,
    /// Ports that mark the server side of a connection first seen mid-stream.
    pub likely_server_ports: Vec<u16>,
    pub assets: Arc<AssetIndex>,
}

/// Service ports Zeek's default scripts add to its `likely_server_ports` (client-side ports
/// such as DHCP's 68 are deliberately absent), plus the industrial protocols watched here.
pub const DEFAULT_LIKELY_SERVER_PORTS: &[u16] = &[
    21, 22, 23, 25, 53, 67, 69, 80, 81, 88, 102, 110, 111, 123, 135, 137, 139, 143, 161, 162, 179,
    389, 443, 445, 465, 502, 513, 514, 563, 585, 587, 614, 631, 636, 989, 990, 992, 993, 995, 1080,
    1194, 1434, 1812, 1813, 1883, 2049, 2123, 2152, 2404, 2811, 3128, 3268, 3306, 3389, 3544, 4789,
    5060, 5072, 5222, 5223, 5269, 5353, 5355, 5432, 5683, 6081, 6379, 6666, 6667, 6668, 6669, 8000,
    8080, 8883, 8888, 20000, 44818, 47808,
];

impl Default for FlowConfig {
    /// Zeek's default timeouts and checksum behaviour, a million flows.
    fn default() -> Self {
        FlowConfig {
            sensor_id: Arc::from("normwatch-sensor"),
            max_flows: 1_000_000,
            tcp_idle_ns: 300 * NS,
            udp_idle_ns: 60 * NS,
            icmp_idle_ns: 60 * NS,
            other_idle_ns: 60 * NS,
            active_ns: Some(1800 * NS),
            report_ns: None,
            tcp_attempt_ns: 5 * NS,
            attempts_above: None,
            tcp_linger_ns: 5 * NS,
            checksums: ChecksumSettings {
                verify: true,
                ignore_src: Vec::new(),
            },
            likely_server_ports: DEFAULT_LIKELY_SERVER_PORTS.to_vec(),
            assets: Arc::new(AssetIndex::default()),
        }
    }
}

/// Canonical connection key: the lower (address, port) first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Key {
    lo: [u8; 16],
    hi: [u8; 16],
    lo_port: u16,
    hi_port: u16,
    proto: u8,
    v6: bool,
}

impl std::hash::Hash for Key {
    /// Three integer writes instead of one call per field: this runs for every packet.
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u128(u128::from_ne_bytes(self.lo));
        h.write_u128(u128::from_ne_bytes(self.hi));
        h.write_u64(
            u64::from(self.lo_port)
                | u64::from(self.hi_port) << 16
                | u64::from(self.proto) << 32
                | u64::from(self.v6) << 40,
        );
    }
}

impl Key {
    /// The key and whether the packet's source is the `lo` side.
    #[inline]
    fn of(p: &Packet<'_>) -> (Key, bool) {
        // Big-endian integers order as the bytes do, in two compares instead of a memcmp.
        let (s, d) = (u128::from_be_bytes(p.src), u128::from_be_bytes(p.dst));
        let src_lo = s < d || (s == d && p.sport <= p.dport);
        let (lo, lo_port, hi, hi_port) = if src_lo {
            (p.src, p.sport, p.dst, p.dport)
        } else {
            (p.dst, p.dport, p.src, p.sport)
        };
        (
            Key {
                lo,
                hi,
                lo_port,
                hi_port,
                proto: p.proto,
                v6: p.v6,
            },
            src_lo,
        )
    }
}

/// A cheap hash of a packet's connection for the [`FlowTable`] slot hints, the same in both
/// directions (each pair of fields is folded with XOR, so it needs no ordering) and computed
/// beside the key rather than from it.
/// The hint's place, and a tag of more bits kept beside the slot so that a hint of another
/// connection is told apart without reading its flow (under a flood of new connections
/// nearly every hint is another's, and its flow far out of cache).
#[inline(always)]
fn hint_of(p: &Packet<'_>) -> (usize, u32) {
    let (s, d) = (u128::from_ne_bytes(p.src), u128::from_ne_bytes(p.dst));
    let x = s ^ d;
    let x =
        (x as u64) ^ ((x >> 64) as u64) ^ u64::from(p.sport ^ p.dport) << 16 ^ u64::from(p.proto);
    let h = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    ((h >> (64 - HINT_BITS)) as usize, (h >> 24) as u32)
}

/// Whether TCP flags `f` are those of a connection's first SYN.
#[inline(always)]
fn is_syn_only(f: u8) -> bool {
    f & (TcpFlags::SYN | TcpFlags::ACK | TcpFlags::FIN | TcpFlags::RST) == TcpFlags::SYN
}

/// The index's hash of a key: the upper half of its 64-bit hash, twice, so that an index
/// entry ([`entry`]) holds all of its hash and the index grows without reading a flow.
#[inline(always)]
fn key_hash(hasher: &DefaultHashBuilder, key: &Key) -> u64 {
    let h = hasher.hash_one(key);
    h & !0xffff_ffff | h >> 32
}

/// The hash of the key behind an index entry.
#[inline(always)]
fn entry_hash(e: &u64) -> u64 {
    e & !0xffff_ffff | e >> 32
}

/// The index entry of the flow in `slot` whose key hashes to `hash`.
#[inline(always)]
fn entry(hash: u64, slot: u32) -> u64 {
    hash & !0xffff_ffff | u64::from(slot)
}

/// By IP protocol, how long after its last packet a flow with no TCP timer pending surely
/// goes on: the shorter of the close linger (and a nanosecond) and its idle timeout.
type Quiet = [u64; 256];

fn quiet_of(cfg: &FlowConfig) -> Box<Quiet> {
    let mut q = Box::new([0; 256]);
    for (proto, slot) in (0..=u8::MAX).zip(q.iter_mut()) {
        *slot = cfg.tcp_linger_ns.saturating_add(1).min(idle_ns(proto, cfg));
    }
    q
}

/// The idle timeout of a flow of IP protocol `proto`.
fn idle_ns(proto: u8, cfg: &FlowConfig) -> u64 {
    match proto {
        ip_proto::TCP => cfg.tcp_idle_ns,
        ip_proto::UDP => cfg.udp_idle_ns,
        ip_proto::ICMP | ip_proto::ICMPV6 => cfg.icmp_idle_ns,
        _ => cfg.other_idle_ns,
    }
}

/// Zeek's TCP endpoint states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[repr(u8)]
enum Ep {
    #[default]
    Inactive,
    SynSent,
    SynAckSent,
    Partial,
    Established,
    Closed,
    Reset,
}

/// Per-direction counters. Kept apart from [`Dir`] so neither struct pads.
#[derive(Clone, Copy, Debug, Default)]
struct Cnt {
    pkts: u64,
    ip_bytes: u64,
    payload: u64,
}

/// Per-direction TCP endpoint state and flags.
#[derive(Clone, Copy, Debug, Default)]
struct Dir {
    start_seq: u32,
    flags: u8,
    state: Ep,
    prev_state: Ep,
    did_close: bool,
    /// UDP/ICMP/other: sent at least one valid packet.
    active: bool,
    /// History letters recorded (Zeek's CheckHistory mask), one bit per letter.
    hist: u8,
    /// The greatest IP TTL of the side's packets, and the least one's complement (`!ttl`,
    /// so that the zero of a side with no packet yet reads as least 255 above greatest 0,
    /// and each packet is two `max`es without a branch). In the struct's padding.
    ttl_max: u8,
    ttl_min_not: u8,
}

impl Dir {
    #[inline]
    fn set_state(&mut self, s: Ep) {
        self.prev_state = self.state;
        self.state = s;
    }

    /// Counts a packet's TTL into the side's least and greatest.
    #[inline(always)]
    fn ttl(&mut self, ttl: u8) {
        self.ttl_max = self.ttl_max.max(ttl);
        self.ttl_min_not = self.ttl_min_not.max(!ttl);
    }

    /// The side's least and greatest TTL, if it sent a packet.
    fn ttl_span(&self) -> Option<Span<u8>> {
        let min = !self.ttl_min_not;
        (min <= self.ttl_max).then_some(Span {
            min,
            max: self.ttl_max,
        })
    }
}

const H_SYN: u8 = 1;
const H_SYNACK: u8 = 2;
const H_ACK: u8 = 4;
const H_DATA: u8 = 8;
const H_FIN: u8 = 16;
const H_RST: u8 = 32;
const H_MULTI: u8 = 64;

#[derive(Debug)]
struct Flow {
    key: Key,
    /// Whether the originator is the key's `lo` side.
    orig_is_lo: bool,
    /// The first history letter of the connection was the originator's SYN.
    hist_starts_orig_syn: bool,
    /// The originator sent H/A/F/I/Q before its first RST (rules out RSTOS0).
    orig_haf_before_rst: bool,
    /// The record is a continuation after an active-timeout report.
    continuation: bool,
    /// Flags of each side as of the flow's last record.
    rep_flags: [u8; 2],
    /// Records emitted for this flow so far (saturating).
    reports: u8,
    /// Packets seen, bad checksums included, saturating (only small values matter).
    seen: u8,
    ics_proto: Option<IcsProto>,
    /// The ICS server port is on the responder side.
    ics_server_resp: bool,
    asset_side: Side,
    asset: u32,
    first_ns: u64,
    last_ns: u64,
    /// When the pending TCP timer fires (0 = none): the attempt timeout after the first SYN,
    /// replaced by the linger deadline once the close completes.
    timer_at: u64,
    timer: Timer,
    /// The event second of the wheel bucket holding this flow's live entry (entries in other
    /// buckets are stale and dropped when met).
    wheel_sec: u32,
    flow_id: u64,
    /// Its entry in the table's list of flows with traffic since their last record
    /// ([`NOT_PENDING`]: none), which holds that traffic: only flows busy since the last report
    /// pay for it.
    pending: u32,
    cnt: [Cnt; 2],
    dir: [Dir; 2],
    ics: Option<Box<IcsState>>,
}

/// A flow with traffic since its last record: its slot and that traffic.
#[derive(Clone, Copy, Debug)]
struct Pending {
    slot: u32,
    /// The first packet since the last record (event time).
    first_ns: u64,
    /// By the key's side (lo, hi), so a flip of the roles leaves it as it is.
    sent: [Pend; 2],
}

const NOT_PENDING: u32 = u32::MAX;

/// One side's traffic since the flow's last record.
#[derive(Clone, Copy, Debug, Default)]
struct Pend {
    pkts: u32,
    ip_bytes: u32,
}

impl Pend {
    #[inline]
    fn add(&mut self, pkts: u32, bytes: u64) {
        self.pkts = self.pkts.saturating_add(pkts);
        self.ip_bytes = self
            .ip_bytes
            .saturating_add(u32::try_from(bytes).unwrap_or(u32::MAX));
    }
}

/// Industrial-protocol state of a flow, boxed so that only ICS flows pay for it.
#[derive(Debug)]
struct IcsState {
    summary: IcsSummary,
    /// Per direction, the TCP sequence number just past the last payload inspected; a segment
    /// ending at or before it is a retransmission and its commands were already counted.
    next_seq: [Option<u32>; 2],
    /// Per direction, the commands (write, control, stop/restart, program) as of the last record.
    reported: [[u32; 4]; 2],
}

/// Write, control, stop/restart and program/firmware commands counted.
fn commands_of(c: &normwatch_model::IcsCounts) -> [u32; 4] {
    [c.write, c.control, c.stop_restart, c.program_firmware]
}

const NO_ASSET: u32 = u32::MAX;

/// What [`FlowTable::attempt`] made of a packet.
enum Attempted {
    /// Held as a one-packet attempt.
    Held,
    /// A held attempt became a flow (the packet's own, maybe).
    Promoted,
    /// Nothing: the packet goes to a flow as usual.
    No,
}

/// Which TCP timer `timer_at` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Timer {
    None,
    Attempt,
    Close,
}

impl Flow {
    /// Why the flow has ended by `now`, if it has.
    #[inline(always)]
    fn expiry(&self, now: u64, cfg: &FlowConfig, quiet: &Quiet) -> Option<EndReason> {
        // Most packets come well inside every timer: with no TCP timer pending, a flow seen
        // within the close linger and its idle timeout has not ended.
        if self.timer == Timer::None
            && now
                < self
                    .last_ns
                    .saturating_add(quiet[usize::from(self.key.proto)])
        {
            return None;
        }
        self.expiry_slow(now, cfg)
    }

    #[inline(never)]
    fn expiry_slow(&self, now: u64, cfg: &FlowConfig) -> Option<EndReason> {
        if now >= self.last_ns.saturating_add(idle_ns(self.key.proto, cfg)) {
            return Some(EndReason::IdleTimeout);
        }
        if self.key.proto == ip_proto::TCP {
            let [o, r] = &self.dir;
            if self.timer == Timer::Close && now >= self.timer_at {
                return Some(EndReason::TcpClosed);
            }
            if self.timer == Timer::Attempt
                && now >= self.timer_at
                && matches!(o.state, Ep::SynSent | Ep::SynAckSent)
                && r.state == Ep::Inactive
            {
                return Some(EndReason::TcpClosed);
            }
            let lingered = now > self.last_ns.saturating_add(cfg.tcp_linger_ns);
            if lingered
                && (o.did_close || r.did_close)
                && ((o.did_close && r.did_close)
                    || o.state == Ep::Reset
                    || r.state == Ep::Reset
                    || o.state == Ep::Inactive
                    || r.state == Ep::Inactive)
            {
                return Some(EndReason::TcpClosed);
            }
            if lingered && o.state == Ep::Inactive && r.state == Ep::Inactive {
                return Some(EndReason::TcpClosed);
            }
        }
        None
    }

    /// The earliest event time at which [`Flow::expiry`] can end the flow or its active
    /// timeout fall due, if no packet comes first: never later than either (the timer wheel
    /// looks at the flow then). A packet can make it earlier only by changing the TCP state,
    /// and such packets reschedule the flow.
    fn deadline(&self, cfg: &FlowConfig) -> u64 {
        let mut d = self.last_ns.saturating_add(idle_ns(self.key.proto, cfg));
        if let Some(a) = cfg.active_ns {
            d = d.min(self.first_ns.saturating_add(a));
        }
        if self.key.proto == ip_proto::TCP {
            let [o, r] = &self.dir;
            match self.timer {
                Timer::Close => d = d.min(self.timer_at),
                Timer::Attempt
                    if matches!(o.state, Ep::SynSent | Ep::SynAckSent)
                        && r.state == Ep::Inactive =>
                {
                    d = d.min(self.timer_at)
                }
                _ => {}
            }
            let closing = (o.did_close || r.did_close)
                && ((o.did_close && r.did_close)
                    || o.state == Ep::Reset
                    || r.state == Ep::Reset
                    || o.state == Ep::Inactive
                    || r.state == Ep::Inactive);
            if closing || (o.state == Ep::Inactive && r.state == Ep::Inactive) {
                d = d.min(
                    self.last_ns
                        .saturating_add(cfg.tcp_linger_ns)
                        .saturating_add(1),
                );
            }
        }
        d
    }

    fn active_due(&self, now: u64, cfg: &FlowConfig) -> bool {
        cfg.active_ns
            .is_some_and(|a| now >= self.first_ns.saturating_add(a))
    }

    fn conn_state(&self) -> ConnState {
        let [o, r] = &self.dir;
        match self.key.proto {
            ip_proto::TCP => tcp_conn_state(self, o, r),
            ip_proto::UDP => match (o.active, r.active) {
                (true, true) => ConnState::SF,
                (true, false) => ConnState::S0,
                (false, true) => ConnState::SHR,
                (false, false) => ConnState::OTH,
            },
            _ => ConnState::OTH,
        }
    }

    /// Swaps originator and responder (Zeek's FlipRoles), and with them the side the
    /// protected asset is on.
    fn flip(&mut self) {
        self.orig_is_lo = !self.orig_is_lo;
        self.dir.swap(0, 1);
        self.cnt.swap(0, 1);
        self.rep_flags.swap(0, 1);
        self.ics_server_resp = !self.ics_server_resp;
        self.asset_side = match self.asset_side {
            Side::Orig => Side::Resp,
            Side::Resp => Side::Orig,
        };
        if let Some(ics) = self.ics.as_deref_mut() {
            std::mem::swap(&mut ics.summary.orig, &mut ics.summary.resp);
            ics.next_seq.swap(0, 1);
            ics.reported.swap(0, 1);
        }
    }

    /// What the flow's earlier records reported, for the next one (`None` before the first).
    /// `tracked`: whether the traffic since the last record was followed (interim reports
    /// on; `pending` is that traffic, if any); without them the only earlier records are
    /// active-timeout reports, after which the counts start again from zero.
    fn prior(&self, tracked: bool, pending: Option<&Pending>) -> Option<Prior> {
        if self.reports == 0 {
            return None;
        }
        let none = [Pend::default(); 2];
        let sent = pending.map_or(&none, |p| &p.sent);
        let side = |i: usize| {
            // Direction `i` (originator, responder) is the key's side `k`.
            let k = usize::from((i == 0) != self.orig_is_lo);
            let (c, p) = (&self.cnt[i], &sent[k]);
            let (pkts, ip_bytes) = if tracked {
                (
                    c.pkts.saturating_sub(u64::from(p.pkts)),
                    c.ip_bytes.saturating_sub(u64::from(p.ip_bytes)),
                )
            } else {
                (0, 0)
            };
            PriorDir {
                pkts,
                ip_bytes,
                tcp_flags: TcpFlags(self.rep_flags[i]),
                commands: self.ics.as_deref().map_or([0; 4], |s| s.reported[i]),
            }
        };
        let since_ns = match (tracked, pending) {
            (true, Some(p)) => p.first_ns.clamp(self.first_ns, self.last_ns),
            (true, None) => self.last_ns,
            (false, _) => self.first_ns,
        };
        Some(Prior {
            reports: u32::from(self.reports),
            since_ns,
            orig: side(0),
            resp: side(1),
        })
    }

    /// Whether an interim report is due at report tick `tick` (the count of report intervals
    /// since the epoch). A flow's first report, a burst (at least [`URGENT_PKTS`] packets since
    /// the last record) and a new industrial write, control, stop or program command go out
    /// at once; otherwise a flow that keeps trickling (a polling session) is reported on every
    /// second, fourth, then eighth tick ([`MAX_BACKOFF`]) as its records add up.
    #[inline]
    fn report_due(&self, tick: u64, pending: &Pending) -> bool {
        self.reports == 0
            || pending.sent[0].pkts.saturating_add(pending.sent[1].pkts) >= URGENT_PKTS
            || self.ics.as_deref().is_some_and(|s| {
                s.reported[0] != commands_of(&s.summary.orig)
                    || s.reported[1] != commands_of(&s.summary.resp)
            })
            || tick.trailing_zeros() >= u32::from(self.reports.min(MAX_BACKOFF))
    }

    /// A record was emitted: what it reported becomes the prior of the next one.
    fn reported(&mut self) {
        self.reports = self.reports.saturating_add(1);
        self.pending = NOT_PENDING;
        self.rep_flags = [self.dir[0].flags, self.dir[1].flags];
        if let Some(ics) = self.ics.as_deref_mut() {
            ics.reported = [
                commands_of(&ics.summary.orig),
                commands_of(&ics.summary.resp),
            ];
        }
    }
}

/// Zeek's `conn_state` for TCP (base/protocols/conn/main.zeek).
fn tcp_conn_state(f: &Flow, o: &Dir, r: &Dir) -> ConnState {
    use Ep::*;
    let o_inactive = matches!(o.state, Inactive | Partial);
    let r_inactive = matches!(r.state, Inactive | Partial);
    if r.state == Reset {
        if matches!(o.state, SynSent | SynAckSent)
            || (o.state == Reset && f.cnt[0].payload == 0 && f.cnt[1].payload == 0)
        {
            ConnState::REJ
        } else if o_inactive {
            ConnState::RSTRH
        } else {
            ConnState::RSTR
        }
    } else if o.state == Reset {
        if r_inactive {
            if f.hist_starts_orig_syn && !f.orig_haf_before_rst {
                ConnState::RSTOS0
            } else {
                ConnState::OTH
            }
        } else {
            ConnState::RSTO
        }
    } else if r.state == Closed && o.state == Closed {
        ConnState::SF
    } else if o.state == Closed {
        if r_inactive {
            ConnState::SH
        } else {
            ConnState::S2
        }
    } else if r.state == Closed {
        if o_inactive {
            ConnState::SHR
        } else {
            ConnState::S3
        }
    } else if o.state == SynSent && r.state == Inactive {
        ConnState::S0
    } else if o.state == Established && r.state == Established {
        ConnState::S1
    } else {
        ConnState::OTH
    }
}

/// Bookkeeping for one IP fragment group.
#[derive(Debug)]
struct FragGroup {
    /// The flow slot and flow id the first fragment went to, and the sender's direction.
    flow: Option<(u32, u64, usize)>,
    /// Bytes of later fragments seen before the first one.
    pending: u64,
    seen_ns: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FragKey {
    src: [u8; 16],
    dst: [u8; 16],
    id: u32,
    proto: u8,
}

/// The flow table. Feed it frames in capture order; it appends finished flows to `out`.
#[derive(Debug)]
pub struct FlowTable {
    cfg: FlowConfig,
    hasher: DefaultHashBuilder,
    /// Each flow's `tag << 32 | slot`, the tag the upper half of its key's hash: a probe
    /// that meets another flow's entry tells it apart without reading the flow (under a flood
    /// of new connections every lookup misses, and the slab is far out of cache).
    index: HashTable<u64>,
    slab: Vec<Option<Flow>>,
    free: Vec<u32>,
    server_ports: Box<[u64; 1024]>,
    frags: HashMap<FragKey, FragGroup>,
    /// Slots of recently used flows, by [`hint_of`]: a packet of a busy connection finds
    /// its flow with a cheap hash and one key comparison. Hints only, checked against the key.
    /// Each `tag << 32 | slot` (see [`hint_of`]).
    hints: Box<[u64; 1 << HINT_BITS]>,
    quiet: Box<Quiet>,
    now: u64,
    next_sweep: u64,
    /// The timer wheel: by event second (modulo [`WHEEL_SECS`]), the slots of flows to look
    /// at then (see [`Flow::deadline`]); a flow is in the bucket of its `wheel_sec`.
    wheel: Vec<Vec<u32>>,
    /// The latest second whose bucket was looked at.
    swept_sec: u64,
    /// Flows due at this sweep (kept for its allocation).
    due: Vec<u32>,
    /// Flows with traffic since their last record (an entry whose flow no longer points to it
    /// is stale and dropped at the next report).
    pending: Vec<Pending>,
    /// When the next interim report is due (event time; `u64::MAX`: never).
    next_report: u64,
    next_flow_id: u64,
    rng: u64,
    /// One-packet attempts held under a SYN flood, and what they were counted into
    /// (`attempts_above`; `None` when it is off).
    held: Option<Box<(Held, Aggregates, Known)>>,
    /// How many flows have each (hashed) address as an endpoint, while attempts are held.
    endpoints: Option<Endpoints>,
    /// The responder address last looked up for an attempt, and its asset.
    attempt_resp: Option<([u8; 16], bool, Option<u32>)>,
    /// SYNs that would start a connection: in the event second `.0`, and the one before.
    syn_rate: (u64, u64, u64),
    stats: SensorStats,
}

impl FlowTable {
    pub fn new(cfg: FlowConfig) -> Self {
        let mut server_ports = Box::new([0u64; 1024]);
        for p in &cfg.likely_server_ports {
            server_ports[usize::from(*p >> 6)] |= 1 << (p & 63);
        }
        let initial = cfg.max_flows.min(INITIAL_CAPACITY);
        let quiet = quiet_of(&cfg);
        let cfg_reports = cfg.report_ns.is_some_and(|r| r > 0);
        let held = (cfg_reports && cfg.attempts_above.is_some()).then(|| {
            Box::new((
                Held::new(MAX_HELD_ATTEMPTS),
                Aggregates::new(MAX_AGGREGATES),
                Known::new(KNOWN_NS.max(cfg.tcp_attempt_ns)),
            ))
        });
        let endpoints = held.is_some().then(Endpoints::new);
        FlowTable {
            cfg,
            hasher: DefaultHashBuilder::default(),
            index: HashTable::with_capacity(initial),
            slab: Vec::with_capacity(initial),
            free: Vec::new(),
            server_ports,
            frags: HashMap::new(),
            hints: Box::new([0; 1 << HINT_BITS]),
            quiet,
            now: 0,
            next_sweep: 0,
            wheel: vec![Vec::new(); WHEEL_SECS],
            swept_sec: 0,
            due: Vec::new(),
            pending: Vec::new(),
            next_report: if cfg_reports { 0 } else { u64::MAX },
            next_flow_id: 1,
            rng: 0x9e37_79b9_7f4a_7c15,
            held,
            endpoints,
            attempt_resp: None,
            syn_rate: (0, 0, 0),
            stats: SensorStats::default(),
        }
    }

    /// The settings in force.
    pub fn config(&self) -> &FlowConfig {
        &self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> &SensorStats {
        &self.stats
    }

    /// Flows currently held.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether no flow is held.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Bytes held by the table's own structures (slab, index, free list, hints), for the
    /// bytes-per-flow figure. Boxed ICS summaries are not included.
    pub fn memory_bytes(&self) -> usize {
        self.slab.capacity() * size_of::<Option<Flow>>()
            + self.index.capacity() * (size_of::<u64>() + 1)
            + self.free.capacity() * 4
            + self.pending.capacity() * size_of::<Pending>()
            + self.wheel.iter().map(Vec::capacity).sum::<usize>() * 4
            + self.due.capacity() * 4
            + self.held.as_ref().map_or(0, |h| h.0.memory_bytes())
            + self.endpoints.as_ref().map_or(0, Endpoints::memory_bytes)
            + size_of_val(&*self.hints)
    }

    #[inline]
    fn is_server_port(&self, p: u16) -> bool {
        self.server_ports[usize::from(p >> 6)] & (1 << (p & 63)) != 0
    }

    /// Asks for the memory that processing the frame `data` will need, without waiting for
    /// it: called for a frame a few ahead of the one processed (see [`Frame::ahead`]), so the
    /// random accesses of one frame overlap the work on those before it. Only a hint: it
    /// changes nothing, and it looks only at what a SYN flood makes slow (the index line and
    /// the remembered mark of a held attempt's source, for an Ethernet/IPv4 frame).
    ///
    /// [`Frame::ahead`]: crate::capture::Frame::ahead
    #[inline]
    pub fn prefetch(&self, link: LinkType, data: &[u8]) {
        let Some(h) = self.held.as_deref() else {
            return;
        };
        if link != LinkType::Ethernet || h.0.is_empty() {
            return;
        }
        if let Some(src) = decode::ethernet_ipv4_src(data) {
            h.0.prefetch(&src);
            h.2.prefetch(&src);
            if let Some(e) = &self.endpoints {
                e.prefetch(&src);
            }
        }
    }

    /// Processes one captured frame with event time `ts_ns` and original length `wire_len`.
    pub fn process_frame(
        &mut self,
        link: LinkType,
        data: &[u8],
        wire_len: usize,
        ts_ns: u64,
        out: &mut Vec<FlowRecord>,
    ) {
        self.stats.packets += 1;
        self.stats.bytes += data.len() as u64;
        if data.is_empty() || wire_len < data.len() {
            self.stats.drop(DropReason::BadRecord);
            return;
        }
        self.advance(ts_ns, out);
        let missing = wire_len - data.len();
        let mut pkt = Packet::default();
        match decode::decode_into(link, data, wire_len, &self.cfg.checksums, &mut pkt) {
            Ok(inner) => {
                self.account(&pkt, ts_ns, out, true);
                if let Some(inner) = inner {
                    match decode::decode_inner(inner, missing, &self.cfg.checksums, &mut pkt) {
                        Ok(_) => {
                            self.account(&pkt, ts_ns, out, true);
                        }
                        Err(r) => self.stats.drop(r),
                    }
                }
            }
            Err(r) => self.stats.drop(r),
        }
    }

    /// Lets event time pass without a packet (a quiet live link), ending flows that expire.
    pub fn advance_to(&mut self, ts_ns: u64, out: &mut Vec<FlowRecord>) {
        self.advance(ts_ns, out);
    }

    /// Moves event time forward and runs the periodic sweep when due.
    #[inline]
    fn advance(&mut self, ts_ns: u64, out: &mut Vec<FlowRecord>) {
        if ts_ns > self.now {
            self.now = ts_ns;
        }
        if self.now >= self.next_sweep {
            if self.next_sweep != 0 {
                self.sweep(out);
            } else {
                self.swept_sec = (self.now / NS).saturating_sub(1);
            }
            self.next_sweep = self.now + NS;
        }
        if self.now >= self.next_report {
            self.report(out);
        }
    }

    /// Interim records: every flow with traffic since its last record reports it now.
    #[cold]
    #[inline(never)]
    fn report(&mut self, out: &mut Vec<FlowRecord>) {
        let every = self.cfg.report_ns.unwrap_or(u64::MAX).max(1);
        self.emit_aggregates(out);
        if self.next_report != 0 {
            let tick = self.now / every;
            let mut keep = 0;
            for i in 0..self.pending.len() {
                let e = self.pending[i];
                let Some(f) = self.slab.get(e.slot as usize).and_then(Option::as_ref) else {
                    continue;
                };
                if f.pending != i as u32 {
                    continue;
                }
                if !f.report_due(tick, &e) {
                    // Looked at again next time, from its new place in the list. (Entries
                    // before `i` are done with, so `record` still finds this one at `i`.)
                    self.pending[keep] = e;
                    if let Some(f) = self.slab[e.slot as usize].as_mut() {
                        f.pending = keep as u32;
                    }
                    keep += 1;
                    continue;
                }
                out.push(self.record(f, EndReason::Interim));
                self.stats.ended(EndReason::Interim);
                if let Some(f) = self.slab[e.slot as usize].as_mut() {
                    f.reported();
                }
            }
            self.pending.truncate(keep);
        }
        // On multiples of the interval, so every sensor reports at the same event times.
        self.next_report = (self.now / every).saturating_add(1).saturating_mul(every);
    }

    /// Emits every flow that has expired by the current event time, and reports those whose
    /// active timeout is due: the flows in the timer wheel's buckets up to this second, in
    /// slot order (as a walk of the whole table would meet them). A flow looked at and not
    /// ended goes back in the bucket of its next deadline.
    #[cold]
    #[inline(never)]
    fn sweep(&mut self, out: &mut Vec<FlowRecord>) {
        let now = self.now;
        let now_sec = now / NS;
        let from = (self.swept_sec + 1).max(now_sec.saturating_sub(WHEEL_SECS as u64 - 1));
        let mut due = std::mem::take(&mut self.due);
        for sec in from..=now_sec {
            let b = sec as usize & (WHEEL_SECS - 1);
            let mut bucket = std::mem::take(&mut self.wheel[b]);
            let mut kept = 0;
            for i in 0..bucket.len() {
                let slot = bucket[i];
                let Some(f) = self.slab.get(slot as usize).and_then(Option::as_ref) else {
                    continue;
                };
                if f.wheel_sec as usize & (WHEEL_SECS - 1) != b {
                    continue;
                }
                if u64::from(f.wheel_sec) <= now_sec {
                    due.push(slot);
                } else {
                    // A later turn of the wheel.
                    bucket[kept] = slot;
                    kept += 1;
                }
            }
            bucket.truncate(kept);
            self.wheel[b] = bucket;
        }
        self.swept_sec = now_sec;
        due.sort_unstable();
        due.dedup();
        for &slot in &due {
            let Some(f) = self.slab[slot as usize].as_ref() else {
                continue;
            };
            if let Some(reason) = f.expiry(now, &self.cfg, &self.quiet) {
                self.remove(slot, reason, out);
                continue;
            }
            if f.active_due(now, &self.cfg) {
                self.report_active(slot, out);
            }
            if let Some(f) = self.slab[slot as usize].as_mut() {
                // Out of the wheel until `schedule` puts it back.
                f.wheel_sec = u32::MAX;
            }
            self.schedule(slot);
        }
        due.clear();
        self.due = due;
        self.frags.retain(|_, g| {
            let keep = now < g.seen_ns + FRAG_TIMEOUT_NS;
            if !keep && g.flow.is_none() {
                self.stats.fragments_orphaned += 1;
            }
            keep
        });
        if let Some(h) = self.held.as_deref_mut() {
            // Unanswered for the attempt timeout: over, as Zeek ends an attempt.
            h.0.expire(now.saturating_sub(self.cfg.tcp_attempt_ns));
            h.2.rotate(now);
        }
        self.give_back();
    }

    /// Puts the flow in `slot` in the wheel bucket of its deadline, unless it already waits in
    /// an earlier one (which looks at it again then). Never a bucket already looked at.
    #[inline]
    fn schedule(&mut self, slot: u32) {
        let Some(f) = self.slab[slot as usize].as_mut() else {
            return;
        };
        let sec = (f.deadline(&self.cfg) / NS)
            .max(self.swept_sec + 1)
            .min(u64::from(u32::MAX - 1)) as u32;
        if sec < f.wheel_sec {
            f.wheel_sec = sec;
            self.wheel[sec as usize & (WHEEL_SECS - 1)].push(slot);
        }
    }

    /// After a flood, memory goes back to the allocator: once the table holds under a
    /// quarter of its slots, the flows in the upper part move down into free slots and the
    /// slab, its free list and the index shrink to twice the flows held.
    fn give_back(&mut self) {
        let held = self.index.len();
        if self.slab.len() <= INITIAL_CAPACITY || held >= self.slab.len() / 4 {
            return;
        }
        let target = (held * 2).max(INITIAL_CAPACITY);
        // Every free slot is on the free list; below `target` there are at least
        // `target - held >= held` of them, room for every flow above it.
        let mut holes: Vec<u32> = self
            .free
            .iter()
            .copied()
            .filter(|&s| (s as usize) < target)
            .collect();
        holes.sort_unstable_by(|a, b| b.cmp(a));
        let mut moved: Vec<(u32, u32)> = Vec::new();
        for old in target..self.slab.len() {
            let Some(f) = self.slab[old].take() else {
                continue;
            };
            let new = holes.pop().expect("room below the target");
            let (old, hash) = (old as u32, key_hash(&self.hasher, &f.key));
            if let Some(e) = self.index.find_mut(hash, |&e| e as u32 == old) {
                *e = entry(hash, new);
            }
            if let Some(e) = self.pending.get_mut(f.pending as usize) {
                e.slot = new;
            }
            self.slab[new as usize] = Some(f);
            moved.push((old, new));
        }
        for g in self.frags.values_mut() {
            if let Some((slot, _, _)) = g.flow.as_mut() {
                if let Ok(k) = moved.binary_search_by_key(slot, |m| m.0) {
                    *slot = moved[k].1;
                }
            }
        }
        self.hints.fill(0);
        self.slab.truncate(target);
        self.slab.shrink_to_fit();
        holes.reverse();
        self.free = holes;
        self.free.shrink_to_fit();
        self.index.shrink_to(held, entry_hash);
        for b in &mut self.wheel {
            b.retain(|&s| (s as usize) < target);
            b.shrink_to(b.len().max(64));
        }
        for (_, new) in moved {
            if let Some(f) = self.slab[new as usize].as_mut() {
                f.wheel_sec = u32::MAX;
            }
            self.schedule(new);
        }
        self.pending.shrink_to(self.pending.len().max(64));
        self.due.shrink_to(64);
    }

    /// Ends the input: every flow still held is emitted into `out`.
    pub fn flush(&mut self, out: &mut Vec<FlowRecord>) {
        self.flush_each(out, usize::MAX, |_| {});
    }

    /// Ends the input as [`FlowTable::flush`] does, streamed: each time `out` holds `batch`
    /// records it is handed to `emit` (which takes them), so no list of every open flow is
    /// built; what is left at the end stays in `out`.
    pub fn flush_each(
        &mut self,
        out: &mut Vec<FlowRecord>,
        batch: usize,
        mut emit: impl FnMut(&mut Vec<FlowRecord>),
    ) {
        self.emit_aggregates(out);
        if let Some(h) = self.held.as_deref_mut() {
            h.0.clear();
        }
        if out.len() >= batch {
            emit(out);
        }
        for slot in 0..self.slab.len() {
            let Some(flow) = self.slab[slot].take() else {
                continue;
            };
            if flow.continuation && flow.cnt[0].pkts == 0 && flow.cnt[1].pkts == 0 {
                continue;
            }
            self.stats.ended(EndReason::EndOfInput);
            out.push(self.record(&flow, EndReason::EndOfInput));
            if out.len() >= batch {
                emit(out);
            }
        }
        self.slab.clear();
        self.index.clear();
        if let Some(e) = self.endpoints.as_mut() {
            e.clear();
        }
        self.free.clear();
        self.pending.clear();
        for b in &mut self.wheel {
            b.clear();
        }
        self.hints.fill(0);
        self.stats.flows_active = 0;
        let orphans = self.frags.values().filter(|g| g.flow.is_none()).count();
        self.stats.fragments_orphaned += orphans as u64;
        self.frags.clear();
    }

    fn find(&self, key: &Key, hash: u64) -> Option<u32> {
        let slab = &self.slab;
        let tag = entry(hash, 0);
        self.index
            .find(hash, |&e| {
                e & !0xffff_ffff == tag
                    && slab[e as u32 as usize]
                        .as_ref()
                        .is_some_and(|f| f.key == *key)
            })
            .map(|&e| e as u32)
    }

    #[inline(never)]
    fn remove(&mut self, slot: u32, reason: EndReason, out: &mut Vec<FlowRecord>) {
        let Some(flow) = self.slab[slot as usize].take() else {
            return;
        };
        let hash = key_hash(&self.hasher, &flow.key);
        if let Ok(e) = self.index.find_entry(hash, |&e| e as u32 == slot) {
            e.remove();
        }
        if let Some(e) = self.endpoints.as_mut() {
            e.remove(&flow.key.lo);
            e.remove(&flow.key.hi);
        }
        self.free.push(slot);
        self.stats.flows_active = self.index.len() as u64;
        if flow.continuation && flow.cnt[0].pkts == 0 && flow.cnt[1].pkts == 0 {
            return;
        }
        self.stats.ended(reason);
        out.push(self.record(&flow, reason));
    }

    /// Active timeout: report what the flow did so far and start a continuation record.
    #[inline(never)]
    fn report_active(&mut self, slot: u32, out: &mut Vec<FlowRecord>) {
        let rec = {
            let f = self.slab[slot as usize].as_ref().expect("occupied");
            self.record(f, EndReason::ActiveTimeout)
        };
        self.stats.ended(EndReason::ActiveTimeout);
        out.push(rec);
        let f = self.slab[slot as usize].as_mut().expect("occupied");
        f.reported();
        f.cnt = [Cnt::default(); 2];
        if let Some(ics) = f.ics.as_deref_mut() {
            ics.summary.orig = Default::default();
            ics.summary.resp = Default::default();
        }
        f.first_ns = self.now;
        f.continuation = true;
    }

    fn record(&self, f: &Flow, reason: EndReason) -> FlowRecord {
        let to_ip = |a: &[u8; 16]| ip_of(a, f.key.v6);
        let (oa, op, ra, rp) = if f.orig_is_lo {
            (f.key.lo, f.key.lo_port, f.key.hi, f.key.hi_port)
        } else {
            (f.key.hi, f.key.hi_port, f.key.lo, f.key.lo_port)
        };
        let dir = |i: usize| DirStats {
            pkts: f.cnt[i].pkts,
            ip_bytes: f.cnt[i].ip_bytes,
            payload_bytes: f.cnt[i].payload,
            tcp_flags: TcpFlags(f.dir[i].flags),
        };
        let asset = (f.asset != NO_ASSET).then(|| AssetMatch {
            id: self.cfg.assets.get(f.asset).id.clone(),
            side: f.asset_side,
        });
        FlowRecord {
            sensor_id: self.cfg.sensor_id.clone(),
            flow_id: f.flow_id,
            orig_addr: to_ip(&oa),
            orig_port: op,
            resp_addr: to_ip(&ra),
            resp_port: rp,
            ip_proto: f.key.proto,
            first_ns: f.first_ns,
            last_ns: f.last_ns,
            orig: dir(0),
            resp: dir(1),
            conn_state: f.conn_state(),
            asset,
            ics: f.ics.as_ref().map(|s| Box::new(s.summary.clone())),
            end_reason: reason,
            export: None,
            attempts: None,
            orig_ttl: f.dir[0].ttl_span(),
            resp_ttl: f.dir[1].ttl_span(),
            prior: f.prior(
                self.next_report != u64::MAX,
                (f.pending != NOT_PENDING).then(|| &self.pending[f.pending as usize]),
            ),
        }
    }

    /// Creates a flow for `p`, whose sender is the originator unless Zeek's rules flip it;
    /// `hash` is the key's hash when the caller has it.
    #[inline(never)]
    fn create(
        &mut self,
        key: Key,
        hash: Option<u64>,
        src_lo: bool,
        p: &Packet<'_>,
        ts: u64,
        out: &mut Vec<FlowRecord>,
    ) -> u32 {
        if self.index.len() >= self.cfg.max_flows {
            self.evict_one(out);
        }
        let flip = match p.proto {
            ip_proto::TCP => {
                let f = p.tcp_flags;
                let partial = f & TcpFlags::SYN == 0 || f & TcpFlags::ACK != 0;
                partial
                    && self.is_server_port(p.sport)
                    && (!self.is_server_port(p.dport)
                        || (f & TcpFlags::SYN == 0 && p.sport < p.dport))
            }
            // A datagram to a broadcast or multicast group is a request or an announcement,
            // whatever its ports say.
            ip_proto::UDP => {
                self.is_server_port(p.sport)
                    && !self.is_server_port(p.dport)
                    && !is_group_address(&p.dst, p.v6)
            }
            _ => false,
        };
        let orig_is_lo = src_lo != flip;
        let (orig, resp) = if flip { (p.dst, p.src) } else { (p.src, p.dst) };
        let (oport, rport) = if flip {
            (p.dport, p.sport)
        } else {
            (p.sport, p.dport)
        };
        let to_ip = |a: [u8; 16]| ip_of(&a, p.v6);
        let (asset, asset_side) = if self.cfg.assets.is_empty() {
            (NO_ASSET, Side::Resp)
        } else if let Some((i, _)) = self.cfg.assets.lookup(to_ip(resp)) {
            (i, Side::Resp)
        } else if let Some((i, _)) = self.cfg.assets.lookup(to_ip(orig)) {
            (i, Side::Orig)
        } else {
            (NO_ASSET, Side::Resp)
        };
        let udp = p.proto == ip_proto::UDP;
        let (ics_proto, ics_server_resp) = if p.proto == ip_proto::TCP || udp {
            match ics::proto_for_port(rport, udp) {
                Some(x) => (Some(x), true),
                None => (ics::proto_for_port(oport, udp), false),
            }
        } else {
            (None, true)
        };
        let flow = Flow {
            key,
            orig_is_lo,
            hist_starts_orig_syn: false,
            orig_haf_before_rst: false,
            continuation: false,
            rep_flags: [0; 2],
            reports: 0,
            seen: 0,
            ics_proto,
            ics_server_resp,
            asset_side,
            asset,
            first_ns: ts,
            last_ns: ts,
            timer_at: 0,
            timer: Timer::None,
            wheel_sec: u32::MAX,
            flow_id: self.next_flow_id,
            pending: NOT_PENDING,
            cnt: [Cnt::default(); 2],
            dir: [Dir::default(); 2],
            ics: None,
        };
        self.next_flow_id += 1;
        self.stats.flows_created += 1;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = Some(flow);
                s
            }
            None => {
                self.slab.push(Some(flow));
                (self.slab.len() - 1) as u32
            }
        };
        let hash = hash.unwrap_or_else(|| key_hash(&self.hasher, &key));
        self.index
            .insert_unique(hash, entry(hash, slot), entry_hash);
        if let Some(e) = self.endpoints.as_mut() {
            e.add(&key.lo);
            e.add(&key.hi);
        }
        self.stats.flows_active = self.index.len() as u64;
        slot
    }

    /// Evicts the least recently seen flow among a few sampled slots.
    fn evict_one(&mut self, out: &mut Vec<FlowRecord>) {
        let n = self.slab.len();
        if n == 0 {
            return;
        }
        let mut victim: Option<(u64, u32)> = None;
        let mut tries = 0;
        while tries < EVICTION_SAMPLE * 4 {
            // xorshift64: cheap, deterministic, good enough to spread the samples.
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let slot = (self.rng % n as u64) as u32;
            tries += 1;
            if let Some(f) = self.slab[slot as usize].as_ref() {
                if victim.is_none_or(|(t, _)| f.last_ns < t) {
                    victim = Some((f.last_ns, slot));
                }
                if tries >= EVICTION_SAMPLE && victim.is_some() {
                    break;
                }
            }
        }
        let slot = match victim {
            Some((_, s)) => s,
            None => match self.slab.iter().position(Option::is_some) {
                Some(s) => s as u32,
                None => return,
            },
        };
        self.remove(slot, EndReason::Evicted, out);
    }

    /// Counts one decoded IP packet into its flow (or, with `hold`, as a one-packet attempt
    /// under a SYN flood); the flow's slot.
    fn account(
        &mut self,
        p: &Packet<'_>,
        ts: u64,
        out: &mut Vec<FlowRecord>,
        hold: bool,
    ) -> Option<u32> {
        if let Fragment::Later { id, bytes } = p.frag {
            self.later_fragment(p, id, bytes);
            return None;
        }
        let (key, src_lo) = Key::of(p);
        let (hint, tag) = hint_of(p);
        let hinted = self.hints[hint];
        let mut hash = None;
        // The tag first: the flow is read only when the hint is likely this connection's.
        let hit = ((hinted >> 32) as u32 == tag)
            .then_some(hinted as u32)
            .filter(|&s| matches!(self.slab.get(s as usize), Some(Some(f)) if f.key == key));
        let mut slot = match hit {
            Some(s) => Some(s),
            // Under a flood of new sources: a SYN from an address no flow has is no flow's.
            None if hold
                && is_syn_only(p.tcp_flags)
                && self.endpoints.as_ref().is_some_and(|e| e.none(&p.src)) =>
            {
                None
            }
            None => {
                let h = key_hash(&self.hasher, &key);
                hash = Some(h);
                self.find(&key, h)
            }
        };
        if slot.is_none() && hold && self.held.is_some() {
            match self.attempt(p, ts, out) {
                Attempted::Held => return None,
                Attempted::Promoted => {
                    // The flow this packet belongs to may have just been made.
                    let h = hash.unwrap_or_else(|| key_hash(&self.hasher, &key));
                    hash = Some(h);
                    slot = self.find(&key, h);
                }
                Attempted::No => {}
            }
        }
        if let Some(s) = slot {
            let f = self.slab[s as usize].as_ref().expect("indexed slot");
            if let Some(reason) = f.expiry(ts.max(f.last_ns), &self.cfg, &self.quiet) {
                self.remove(s, reason, out);
                slot = None;
            } else if p.proto == ip_proto::TCP && is_reuse(f, p, src_lo) {
                self.remove(s, EndReason::TcpClosed, out);
                slot = None;
            } else if f.active_due(ts, &self.cfg) {
                self.report_active(s, out);
            }
        }
        let slot = match slot {
            Some(s) => s,
            None => self.create(key, hash, src_lo, p, ts, out),
        };
        self.hints[hint] = u64::from(tag) << 32 | u64::from(slot);
        let f = self.slab[slot as usize].as_mut().expect("indexed slot");
        f.seen = f.seen.saturating_add(1);
        if p.bad_checksum {
            self.stats.drop(DropReason::BadTransportChecksum);
            if f.wheel_sec == u32::MAX {
                self.schedule(slot);
            }
            return Some(slot);
        }
        let is_orig = src_lo == f.orig_is_lo;
        // A new flow, or a TCP packet that may have set a timer or changed the state: its
        // deadline may now be earlier than the wheel bucket it waits in.
        // (A packet older than the flow's first moves its active timeout earlier.)
        let unscheduled = f.wheel_sec == u32::MAX || ts < f.first_ns;
        let reschedule = if p.proto == ip_proto::TCP {
            tcp_update(f, is_orig, p, ts, &self.cfg) || unscheduled
        } else {
            update_times(f, ts);
            unscheduled
        };
        // Zeek's rules may have just made the other side the originator.
        let d = usize::from(src_lo != f.orig_is_lo);
        let cnt = &mut f.cnt[d];
        cnt.pkts += 1;
        cnt.ip_bytes += u64::from(p.ip_len);
        if p.tcp_flags & TcpFlags::RST == 0 {
            cnt.payload += u64::from(p.payload_len);
        }
        if self.next_report != u64::MAX {
            if f.pending == NOT_PENDING {
                f.pending = u32::try_from(self.pending.len()).unwrap_or(NOT_PENDING - 1);
                self.pending.push(Pending {
                    slot,
                    first_ns: ts,
                    sent: [Pend::default(); 2],
                });
            }
            if let Some(e) = self.pending.get_mut(f.pending as usize) {
                e.sent[usize::from(!src_lo)].add(1, u64::from(p.ip_len));
            }
        }
        let dir = &mut f.dir[d];
        dir.flags |= p.tcp_flags;
        dir.ttl(p.ttl);
        dir.active = true;
        if let Some(proto) = f.ics_proto {
            if !p.payload.is_empty() {
                self.stats.ics_malformed += ics_payload(f, proto, p, d);
            }
        }
        if let Fragment::First { id } = p.frag {
            self.first_fragment(p, id, slot, d);
        }
        if reschedule {
            self.schedule(slot);
        }
        Some(slot)
    }

    /// Under a SYN flood (`attempts_above`), what becomes of a packet of no flow: a SYN from
    /// a source not seen before is held as a one-packet attempt; a packet from the source of
    /// a held attempt, or from its responder to it, makes that attempt a flow first.
    #[inline(never)]
    fn attempt(&mut self, p: &Packet<'_>, ts: u64, out: &mut Vec<FlowRecord>) -> Attempted {
        let Some(h) = self.held.as_deref_mut() else {
            return Attempted::No;
        };
        if !h.0.is_empty() {
            let mut promoted = None;
            if let Some(a) = h.0.take(&p.src) {
                // Its source sends again.
                promoted = Some(a);
            } else if h.0.get(&p.dst).is_some_and(|a| a.dst == p.src) {
                // Answered.
                promoted = h.0.take(&p.dst);
            }
            if let Some(a) = promoted {
                h.2.mark(&a.src);
                self.promote(a, out);
                return Attempted::Promoted;
            }
        }
        let syn_only = is_syn_only(p.tcp_flags);
        if p.proto != ip_proto::TCP
            || !syn_only
            || p.payload_len != 0
            || p.bad_checksum
            || !matches!(p.frag, Fragment::None)
        {
            return Attempted::No;
        }
        let sec = ts / NS;
        let rate = &mut self.syn_rate;
        if sec > rate.0 {
            rate.2 = if sec == rate.0 + 1 { rate.1 } else { 0 };
            rate.1 = 0;
            rate.0 = sec;
        }
        rate.1 += 1;
        let above = self.cfg.attempts_above.unwrap_or(u64::MAX);
        if rate.1.max(rate.2) <= above || h.2.contains(&p.src) {
            return Attempted::No;
        }
        // The responder's asset (looked up once for a run of SYNs to one address, as a
        // flood's are); a SYN from a protected asset makes a flow.
        let asset = if self.cfg.assets.is_empty() {
            NO_ASSET
        } else {
            let resp = match self.attempt_resp {
                Some((dst, v6, asset)) if dst == p.dst && v6 == p.v6 => asset,
                _ => {
                    let asset = self.cfg.assets.lookup(ip_of(&p.dst, p.v6)).map(|(i, _)| i);
                    self.attempt_resp = Some((p.dst, p.v6, asset));
                    asset
                }
            };
            match resp {
                Some(i) => i,
                None if self.cfg.assets.lookup(ip_of(&p.src, p.v6)).is_some() => {
                    return Attempted::No;
                }
                None => NO_ASSET,
            }
        };
        let key = AggKey {
            dst: p.dst,
            dport: p.dport,
            v6: p.v6,
        };
        let src = ip_of(&p.src, p.v6);
        loop {
            let h = self.held.as_deref_mut().expect("held");
            match h.1.count(key, asset, src, p, ts, sec) {
                Counted::In(gen) => {
                    h.0.insert(Attempt::new(
                        p.src,
                        p.dst,
                        p.v6,
                        p.sport,
                        p.dport,
                        p.tcp_flags,
                        p.ttl,
                        p.seq,
                        p.ip_len,
                        ts,
                        gen,
                    ));
                    self.stats.attempts_held += 1;
                    return Attempted::Held;
                }
                Counted::Closed(agg) => {
                    let r = self.aggregate_record(*agg);
                    out.push(r);
                }
                Counted::Full => return Attempted::No,
            }
        }
    }

    /// A held attempt becomes a flow: its SYN counted as the flow's first packet and as
    /// already reported (its aggregate goes out first if still open), so the flow's records
    /// add only what came after it.
    #[inline(never)]
    fn promote(&mut self, a: Attempt, out: &mut Vec<FlowRecord>) {
        self.stats.attempts_promoted += 1;
        let key = AggKey {
            dst: a.dst,
            dport: a.dport,
            v6: a.v6,
        };
        if let Some(agg) = self.held.as_deref_mut().and_then(|h| h.1.take(&key, a.agg)) {
            let r = self.aggregate_record(agg);
            out.push(r);
        }
        let pkt = Packet {
            src: a.src,
            dst: a.dst,
            v6: a.v6,
            proto: 6,
            sport: a.sport,
            dport: a.dport,
            ip_len: a.ip_len,
            tcp_flags: a.flags,
            ttl: a.ttl,
            seq: a.seq,
            ..Packet::default()
        };
        if let Some(slot) = self.account(&pkt, a.ts, out, false) {
            if let Some(f) = self.slab[slot as usize].as_mut() {
                f.reported();
            }
        }
    }

    /// Every open aggregate of attempts goes out.
    fn emit_aggregates(&mut self, out: &mut Vec<FlowRecord>) {
        let Some(mut h) = self.held.take() else {
            return;
        };
        if !h.1.is_empty() {
            for agg in h.1.drain() {
                out.push(self.aggregate_record(agg));
            }
        }
        self.held = Some(h);
    }

    /// The record of an aggregate of attempts.
    fn aggregate_record(&mut self, agg: crate::attempts::Agg) -> FlowRecord {
        self.stats.ended(EndReason::Attempts);
        let flow_id = self.next_flow_id;
        self.next_flow_id += 1;
        let v6 = agg.key.v6;
        let asset = (agg.asset != NO_ASSET).then(|| AssetMatch {
            id: self.cfg.assets.get(agg.asset).id.clone(),
            side: Side::Resp,
        });
        FlowRecord {
            sensor_id: self.cfg.sensor_id.clone(),
            flow_id,
            orig_addr: ip_of(&[0; 16], v6),
            orig_port: 0,
            resp_addr: ip_of(&agg.key.dst, v6),
            resp_port: agg.key.dport,
            ip_proto: 6,
            first_ns: agg.first_ns,
            last_ns: agg.last_ns,
            orig: DirStats {
                pkts: agg.count,
                ip_bytes: agg.ip_bytes,
                payload_bytes: 0,
                tcp_flags: TcpFlags(agg.flags),
            },
            resp: DirStats::default(),
            conn_state: ConnState::S0,
            asset,
            ics: None,
            end_reason: EndReason::Attempts,
            export: None,
            prior: None,
            attempts: Some(Box::new(agg.attempts())),
            // The SYNs' TTLs are the aggregate's ([`Attempts::ttl`]): no one originator's.
            orig_ttl: None,
            resp_ttl: None,
        }
    }

    #[inline(never)]
    fn first_fragment(&mut self, p: &Packet<'_>, id: u32, slot: u32, d: usize) {
        self.stats.fragments += 1;
        let fk = FragKey {
            src: p.src,
            dst: p.dst,
            id,
            proto: p.proto,
        };
        let flow_id = self.slab[slot as usize].as_ref().map_or(0, |f| f.flow_id);
        if let Some(g) = self.frags.get_mut(&fk) {
            let pending = std::mem::take(&mut g.pending);
            g.flow = Some((slot, flow_id, d));
            if let Some(f) = self.slab[slot as usize].as_mut() {
                f.cnt[d].ip_bytes += pending;
                let k = usize::from((d == 0) != f.orig_is_lo);
                if let Some(e) = self.pending.get_mut(f.pending as usize) {
                    e.sent[k].add(0, pending);
                }
            }
        } else if self.frags.len() < MAX_FRAG_GROUPS {
            self.frags.insert(
                fk,
                FragGroup {
                    flow: Some((slot, flow_id, d)),
                    pending: 0,
                    seen_ns: self.now,
                },
            );
        } else {
            self.stats.fragments_overflow += 1;
        }
    }

    #[inline(never)]
    fn later_fragment(&mut self, p: &Packet<'_>, id: u32, bytes: u32) {
        self.stats.fragments += 1;
        let fk = FragKey {
            src: p.src,
            dst: p.dst,
            id,
            proto: p.proto,
        };
        if let Some(g) = self.frags.get_mut(&fk) {
            match g.flow {
                Some((slot, flow_id, d)) => {
                    match self.slab.get_mut(slot as usize).and_then(Option::as_mut) {
                        Some(f) if f.flow_id == flow_id => {
                            f.cnt[d].ip_bytes += u64::from(bytes);
                            let k = usize::from((d == 0) != f.orig_is_lo);
                            if let Some(e) = self.pending.get_mut(f.pending as usize) {
                                e.sent[k].add(0, u64::from(bytes));
                            }
                        }
                        _ => g.pending += u64::from(bytes),
                    }
                }
                None => g.pending += u64::from(bytes),
            }
        } else if self.frags.len() < MAX_FRAG_GROUPS {
            self.frags.insert(
                fk,
                FragGroup {
                    flow: None,
                    pending: u64::from(bytes),
                    seen_ns: self.now,
                },
            );
        } else {
            self.stats.fragments_overflow += 1;
        }
    }
}

/// Industrial-protocol commands in a payload sent by direction `d`, unless a TCP segment
/// repeats what was already inspected; the malformed PDUs found.
#[inline(never)]
fn ics_payload(f: &mut Flow, proto: IcsProto, p: &Packet<'_>, d: usize) -> u64 {
    // d == 0: the originator sent it; towards the server when the server is the responder.
    let to_server = (d == 0) == f.ics_server_resp;
    let ics = f.ics.get_or_insert_with(|| {
        Box::new(IcsState {
            summary: IcsSummary::new(proto),
            next_seq: [None; 2],
            reported: [[0; 4]; 2],
        })
    });
    if p.proto == ip_proto::TCP {
        let end = p.seq.wrapping_add(p.payload_len);
        // A segment ending at or before what was inspected is a retransmission.
        if ics.next_seq[d].is_some_and(|next| (end.wrapping_sub(next) as i32) <= 0) {
            return 0;
        }
        ics.next_seq[d] = Some(end);
    }
    let s = &mut ics.summary;
    let counts = if d == 0 { &mut s.orig } else { &mut s.resp };
    let before = counts.malformed;
    ics::inspect(proto, p.payload, to_server, counts);
    u64::from(counts.malformed - before)
}

/// The address in a 16-byte key slot (IPv4 is stored mapped into IPv6).
fn ip_of(a: &[u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(*a))
    } else {
        IpAddr::V4(Ipv4Addr::new(a[12], a[13], a[14], a[15]))
    }
}

/// Broadcast (255.255.255.255) or multicast (224.0.0.0/4, ff00::/8).
fn is_group_address(a: &[u8; 16], v6: bool) -> bool {
    if v6 {
        a[0] == 0xff
    } else {
        a[12] >= 224
    }
}

#[inline]
fn update_times(f: &mut Flow, ts: u64) {
    if ts > f.last_ns {
        f.last_ns = ts;
    }
    if ts < f.first_ns {
        f.first_ns = ts;
    }
}

/// Zeek's IsReuse: a new SYN on a tuple whose connection is over (or has another ISN) starts a
/// new connection.
fn is_reuse(f: &Flow, p: &Packet<'_>, src_lo: bool) -> bool {
    let flags = p.tcp_flags;
    if flags & TcpFlags::SYN == 0 {
        return false;
    }
    let [o, r] = &f.dir;
    let conn_orig = if flags & TcpFlags::ACK != 0 {
        if o.state != Ep::Inactive {
            return false;
        }
        r
    } else {
        o
    };
    let closed = o.did_close || r.did_close;
    if !closed {
        if p.seq == conn_orig.start_seq {
            return false;
        }
        // The SYN/SYN-ACK arrived reversed: the state machine flips, this is no reuse.
        if flags & TcpFlags::ACK == 0
            && conn_orig.state == Ep::SynAckSent
            && r.state == Ep::Inactive
            && p.seq == r.start_seq
        {
            return false;
        }
        // A SYN from the responder side of an attempt is a simultaneous open, not a reuse.
        let from_orig = src_lo == f.orig_is_lo;
        if !from_orig && flags & TcpFlags::ACK == 0 && conn_orig.state == Ep::Inactive {
            return false;
        }
    }
    true
}

/// Zeek's TCP endpoint state machine for one packet from `is_orig`'s side.
/// Whether the packet took the full path (its state or timers may have changed).
#[inline]
fn tcp_update(f: &mut Flow, is_orig: bool, p: &Packet<'_>, ts: u64, cfg: &FlowConfig) -> bool {
    // Steady state (most packets of a connection): no SYN, FIN or RST, both endpoints past
    // Inactive, and the history letter already recorded. Then no sequence start, history,
    // role or endpoint state changes, and only the times move.
    let flags = p.tcp_flags;
    if flags & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST) == 0
        && f.dir[0].state != Ep::Inactive
        && f.dir[1].state != Ep::Inactive
    {
        let letter = if p.payload_len > 0 {
            H_DATA
        } else if flags & TcpFlags::ACK != 0 {
            H_ACK
        } else {
            0
        };
        let ei = usize::from(!is_orig);
        if letter == 0 || f.dir[ei].hist & letter != 0 {
            if !(f.dir[0].did_close && f.dir[1].did_close) {
                update_times(f, ts);
            } else if ts < f.first_ns {
                f.first_ns = ts;
            }
            return false;
        }
    }
    tcp_update_full(f, is_orig, p, ts, cfg);
    true
}

#[inline(never)]
fn tcp_update_full(f: &mut Flow, is_orig: bool, p: &Packet<'_>, ts: u64, cfg: &FlowConfig) {
    let flags = p.tcp_flags;
    let syn = flags & TcpFlags::SYN != 0;
    let fin = flags & TcpFlags::FIN != 0;
    let rst = flags & TcpFlags::RST != 0;
    let ack = flags & TcpFlags::ACK != 0;
    let len = p.payload_len;
    let (ei, pi) = if is_orig { (0, 1) } else { (1, 0) };

    // Sequence-space starts (init_endpoint / init_peer), needed by the reuse and flip rules.
    {
        let ep = &mut f.dir[ei];
        match ep.state {
            Ep::Inactive => ep.start_seq = if syn { p.seq } else { p.seq.wrapping_sub(1) },
            Ep::SynSent | Ep::SynAckSent | Ep::Established | Ep::Partial if syn => {
                ep.start_seq = p.seq
            }
            Ep::Reset if syn && ep.prev_state == Ep::Inactive => ep.start_seq = p.seq,
            _ => {}
        }
    }
    if ack && f.dir[pi].state == Ep::Inactive {
        f.dir[pi].start_seq = p.ack.wrapping_sub(1);
    }

    history(f, ei, flags, len);

    let both_closed = f.dir[0].did_close && f.dir[1].did_close;
    if !both_closed {
        update_times(f, ts);
    } else if ts < f.first_ns {
        f.first_ns = ts;
    }

    let mut is_orig = is_orig;
    let (mut ei, mut pi) = (ei, pi);
    // A connection that began with a SYN-ACK is flipped when the very next packet is an ACK
    // or data segment, in either direction: a stealth scan's SYN-ACK draws a RST or nothing,
    // never those. The SYN-ACK sender is the server, and the handshake counts as established.
    if f.seen == 2
        && flags & (TcpFlags::SYN | TcpFlags::FIN | TcpFlags::RST) == 0
        && (ack || len > 0)
        && f.dir[0].state == Ep::SynAckSent
        && f.dir[1].state == Ep::Inactive
    {
        f.flip();
        f.dir[1].set_state(Ep::Established);
        if f.timer == Timer::Attempt {
            f.timer = Timer::None;
        }
        is_orig = !is_orig;
        std::mem::swap(&mut ei, &mut pi);
    }
    let mut do_close = false;
    match f.dir[ei].state {
        Ep::Inactive => {
            if syn {
                if is_orig {
                    let s = if ack { Ep::SynAckSent } else { Ep::SynSent };
                    f.dir[ei].set_state(s);
                    if cfg.tcp_attempt_ns > 0 {
                        f.timer_at = ts + cfg.tcp_attempt_ns;
                        f.timer = Timer::Attempt;
                    }
                } else {
                    if !ack && f.dir[pi].state == Ep::SynAckSent && p.seq == f.dir[ei].start_seq {
                        // SYN and SYN-ACK seen reversed: flip and establish.
                        f.flip();
                        is_orig = true;
                        std::mem::swap(&mut ei, &mut pi);
                        f.dir[pi].set_state(Ep::Established);
                    }
                    if f.dir[pi].state == Ep::SynSent {
                        f.dir[pi].set_state(Ep::Established);
                    }
                    f.dir[ei].set_state(Ep::Established);
                }
            }
            if fin {
                f.dir[ei].set_state(Ep::Closed);
                do_close = true;
            }
            if rst {
                f.dir[ei].set_state(Ep::Reset);
                do_close = true;
            }
            if f.dir[ei].state == Ep::Inactive {
                if !is_orig && len == 0 && f.dir[0].state == Ep::SynSent {
                    // An ACK of the SYN before the SYN-ACK: not yet a partial connection.
                } else if ack && f.dir[pi].state == Ep::Established {
                    f.dir[ei].set_state(Ep::Established);
                } else {
                    f.dir[ei].set_state(Ep::Partial);
                }
            }
        }
        Ep::SynSent | Ep::SynAckSent => {
            if fin {
                f.dir[ei].set_state(Ep::Closed);
                do_close = true;
            }
            if rst {
                f.dir[ei].set_state(Ep::Reset);
                do_close = true;
            }
        }
        Ep::Established | Ep::Partial => {
            if syn && f.dir[ei].state == Ep::Partial && f.dir[pi].state == Ep::Inactive && !ack {
                f.dir[ei].set_state(Ep::SynSent);
            }
            if fin && !rst {
                f.dir[ei].set_state(Ep::Closed);
                if f.dir[pi].state == Ep::Reset && f.dir[pi].prev_state == Ep::Closed {
                    // FIN then RST from the peer was a normal close after all.
                    f.dir[pi].set_state(Ep::Closed);
                }
                do_close = true;
            }
            if rst {
                f.dir[ei].set_state(Ep::Reset);
                do_close = true;
            }
        }
        Ep::Closed => {
            if rst && f.dir[pi].state != Ep::Closed {
                f.dir[ei].set_state(Ep::Reset);
                if !f.dir[ei].did_close {
                    do_close = true;
                }
                // A RST after a FIN: Zeek removes the connection after the reset delay.
                f.timer_at = ts + cfg.tcp_linger_ns;
                f.timer = Timer::Close;
            }
        }
        Ep::Reset => {}
    }

    if do_close {
        connection_closed(f, ei, pi, cfg);
    }
}

/// Zeek's ConnectionClosed: once the close is complete the connection lingers, then goes.
fn connection_closed(f: &mut Flow, ei: usize, pi: usize, cfg: &FlowConfig) {
    if f.dir[ei].did_close {
        return;
    }
    f.dir[ei].did_close = true;
    let complete =
        f.dir[ei].state == Ep::Reset || f.dir[pi].did_close || f.dir[pi].state == Ep::Inactive;
    if complete {
        f.timer_at = f.last_ns + cfg.tcp_linger_ns;
        f.timer = Timer::Close;
    }
}

/// Records Zeek's history letters (once per letter and direction) as far as `conn_state`
/// needs them: whether the connection began with the originator's SYN, and whether the
/// originator sent a handshake, ACK or FIN before its first RST.
fn history(f: &mut Flow, ei: usize, flags: u8, len: u32) {
    let syn = flags & TcpFlags::SYN != 0;
    let fin = flags & TcpFlags::FIN != 0;
    let rst = flags & TcpFlags::RST != 0;
    let bits = u8::from(syn) + u8::from(fin) + u8::from(rst);
    let letter = if bits > 1 {
        H_MULTI
    } else if syn {
        if flags & TcpFlags::ACK != 0 {
            H_SYNACK
        } else {
            H_SYN
        }
    } else if fin {
        H_FIN
    } else if rst {
        H_RST
    } else if len > 0 {
        H_DATA
    } else if flags & TcpFlags::ACK != 0 {
        H_ACK
    } else {
        return;
    };
    let first_letter = f.dir[0].hist == 0 && f.dir[1].hist == 0;
    let d = &mut f.dir[ei];
    if d.hist & letter != 0 {
        return;
    }
    d.hist |= letter;
    if first_letter {
        f.hist_starts_orig_syn = ei == 0 && letter == H_SYN;
    }
    if ei == 0 && f.dir[0].hist & H_RST == 0 && letter & (H_SYNACK | H_ACK | H_FIN | H_MULTI) != 0 {
        f.orig_haf_before_rst = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds an Ethernet/IPv4/TCP frame with a valid IP checksum and no TCP checksum check.
    fn tcp(
        src: [u8; 4],
        sport: u16,
        dst: [u8; 4],
        dport: u16,
        flags: u8,
        seq: u32,
        data: usize,
    ) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = 40 + data;
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ];
        ip.extend_from_slice(&src);
        ip.extend_from_slice(&dst);
        let c = !crate::checksum::ones_complement(0, &ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend(std::iter::repeat_n(0u8, data));
        f
    }

    fn table() -> FlowTable {
        let mut cfg = FlowConfig::default();
        cfg.checksums.verify = false;
        FlowTable::new(cfg)
    }

    const C: [u8; 4] = [192, 0, 2, 1];
    const S: [u8; 4] = [198, 51, 100, 2];
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FIN: u8 = 0x01;
    const RST: u8 = 0x04;

    fn run(frames: &[(Vec<u8>, u64)]) -> Vec<FlowRecord> {
        let mut t = table();
        let mut out = Vec::new();
        for (f, ts) in frames {
            t.process_frame(LinkType::Ethernet, f, f.len(), *ts, &mut out);
        }
        t.flush(&mut out);
        out
    }

    #[test]
    fn full_handshake_and_close_is_sf() {
        let out = run(&[
            (tcp(C, 40000, S, 80, SYN, 100, 0), NS),
            (tcp(S, 80, C, 40000, SYN | ACK, 500, 0), NS + 1),
            (tcp(C, 40000, S, 80, ACK, 101, 0), NS + 2),
            (tcp(C, 40000, S, 80, ACK, 101, 10), NS + 3),
            (tcp(S, 80, C, 40000, FIN | ACK, 501, 0), NS + 4),
            (tcp(C, 40000, S, 80, FIN | ACK, 111, 0), NS + 5),
        ]);
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!(r.conn_state, ConnState::SF);
        assert_eq!((r.orig.pkts, r.resp.pkts), (4, 2));
        assert_eq!((r.orig.ip_bytes, r.resp.ip_bytes), (170, 80));
        assert_eq!(r.orig_port, 40000);
    }

    #[test]
    fn unanswered_syn_is_s0_and_rejected_is_rej() {
        let out = run(&[(tcp(C, 40000, S, 80, SYN, 1, 0), NS)]);
        assert_eq!(out[0].conn_state, ConnState::S0);
        let out = run(&[
            (tcp(C, 40000, S, 80, SYN, 1, 0), NS),
            (tcp(S, 80, C, 40000, RST | ACK, 0, 0), NS + 1),
        ]);
        assert_eq!(out[0].conn_state, ConnState::REJ);
    }

    #[test]
    fn midstream_flow_takes_server_port_as_responder() {
        // First packet seen goes from the server (port 80) to the client.
        let out = run(&[
            (tcp(S, 80, C, 40000, ACK, 1, 100), NS),
            (tcp(C, 40000, S, 80, ACK, 1, 0), NS + 1),
        ]);
        assert_eq!(out[0].resp_port, 80);
        assert_eq!(out[0].orig.pkts, 1);
        assert_eq!(out[0].resp.pkts, 1);
        assert_eq!(out[0].conn_state, ConnState::OTH);
    }

    #[test]
    fn packet_that_flips_the_roles_counts_for_its_new_side() {
        // A SYN-ACK seen first between two ports that name no server: its sender is taken as
        // the originator until the next packet, an ACK from the other side, shows it is the
        // server. That ACK is the new originator's packet.
        let out = run(&[
            (tcp(S, 40001, C, 50002, SYN | ACK, 500, 0), NS),
            (tcp(C, 50002, S, 40001, ACK, 101, 0), NS + 1),
        ]);
        assert_eq!(out.len(), 1);
        let r = &out[0];
        assert_eq!((r.orig_port, r.resp_port), (50002, 40001));
        assert_eq!((r.orig.pkts, r.resp.pkts), (1, 1));
        assert_eq!((r.orig.tcp_flags.0, r.resp.tcp_flags.0), (ACK, SYN | ACK));
    }

    #[test]
    fn a_flipped_flow_keeps_the_protected_asset_on_its_own_side() {
        // The protected server (S) is first seen sending a SYN-ACK from a port on no list;
        // the client's ACK flips the roles. The asset was matched as the first packet's
        // originator, so after the flip it is the responder.
        use normwatch_model::{Asset, AssetId, Rates, Sector, Thresholds};
        let server = Asset {
            id: AssetId(Arc::from("srv")),
            name: "srv".into(),
            operator: "op".into(),
            sector: Sector::Energy,
            service: "svc".into(),
            cidrs: vec!["198.51.100.2/32".parse().unwrap()],
            roles: vec![],
            service_ports: vec![],
            thresholds: Thresholds {
                total: Rates::default(),
                ..Thresholds::default()
            },
            allow: vec![],
        };
        let mut cfg = FlowConfig::default();
        cfg.checksums.verify = false;
        cfg.assets = Arc::new(AssetIndex::new(vec![server]).unwrap());
        let mut t = FlowTable::new(cfg);
        let mut out = Vec::new();
        for (f, ts) in [
            (tcp(S, 40001, C, 50002, SYN | ACK, 500, 0), NS),
            (tcp(C, 50002, S, 40001, ACK, 101, 0), NS + 1),
        ] {
            t.process_frame(LinkType::Ethernet, &f, f.len(), ts, &mut out);
        }
        t.flush(&mut out);
        let r = &out[0];
        assert_eq!(r.resp_addr, IpAddr::from(S));
        let m = r.asset.as_ref().expect("matched");
        assert_eq!(
            m.side,
            Side::Resp,
            "the asset is the responder after the flip"
        );
    }

    #[test]
    fn interim_reports_carry_what_each_adds_and_the_final_record_the_totals() {
        let mut cfg = FlowConfig::default();
        cfg.checksums.verify = false;
        cfg.report_ns = Some(NS / 10);
        let mut t = FlowTable::new(cfg);
        let mut out = Vec::new();
        let t0 = 1_000 * NS;
        let frames = [
            (tcp(C, 40000, S, 80, SYN, 100, 0), t0),
            (tcp(S, 80, C, 40000, SYN | ACK, 500, 0), t0 + 1_000),
            (tcp(C, 40000, S, 80, ACK, 101, 0), t0 + 2_000),
            // Data after the first report (t0 + 100 ms).
            (tcp(C, 40000, S, 80, ACK, 101, 100), t0 + 150_000_000),
            (tcp(C, 40000, S, 80, ACK, 201, 100), t0 + 160_000_000),
            // A packet of another flow moves time past the second report; then a quiet spell.
            (tcp(C, 40001, S, 80, SYN, 7, 0), t0 + 250_000_000),
            (tcp(C, 40000, S, 80, FIN | ACK, 301, 0), t0 + 5 * NS),
            (tcp(S, 80, C, 40000, FIN | ACK, 501, 0), t0 + 5 * NS + 1_000),
        ];
        for (f, ts) in &frames {
            t.process_frame(LinkType::Ethernet, f, f.len(), *ts, &mut out);
        }
        t.flush(&mut out);
        let first: Vec<_> = out.iter().filter(|r| r.orig_port == 40000).collect();
        assert_eq!(
            first.iter().map(|r| r.end_reason).collect::<Vec<_>>(),
            [
                EndReason::Interim,
                EndReason::Interim,
                EndReason::EndOfInput
            ]
        );
        // The first report: everything so far, no prior.
        assert_eq!(first[0].prior, None);
        assert_eq!((first[0].orig.pkts, first[0].resp.pkts), (2, 1));
        // The second adds the two data segments, from the first of them.
        let p = first[1].prior.expect("prior");
        assert_eq!(p.reports, 1);
        assert_eq!(p.since_ns, t0 + 150_000_000);
        assert_eq!(p.orig.added(&first[1].orig), (2, 280));
        assert_eq!(p.resp.added(&first[1].resp), (0, 0));
        assert_eq!(p.orig.tcp_flags.0, SYN | ACK);
        // The final record adds the close (no report came between it and the end).
        let p = first[2].prior.expect("prior");
        assert_eq!(p.reports, 2);
        assert_eq!(p.since_ns, t0 + 5 * NS);
        assert_eq!(p.orig.added(&first[2].orig), (1, 40));
        assert_eq!(p.resp.added(&first[2].resp), (1, 40));
        assert_eq!(first[2].orig.pkts, 5);
        assert_eq!(first[2].resp.pkts, 2);
        // The totals are those of a table that does not report (Zeek's).
        let plain = run(&frames);
        let whole = plain.iter().find(|r| r.orig_port == 40000).unwrap();
        assert_eq!(
            (whole.orig, whole.resp, whole.conn_state),
            (first[2].orig, first[2].resp, first[2].conn_state)
        );
    }

    #[test]
    fn active_timeout_continuations_are_not_new_connections() {
        let mut cfg = FlowConfig::default();
        cfg.checksums.verify = false;
        cfg.active_ns = Some(NS);
        let mut t = FlowTable::new(cfg);
        let mut out = Vec::new();
        let mut frames = vec![
            (tcp(C, 40000, S, 80, SYN, 100, 0), NS),
            (tcp(S, 80, C, 40000, SYN | ACK, 500, 0), NS + 1),
        ];
        for k in 0..30u64 {
            frames.push((tcp(C, 40000, S, 80, ACK, 101, 10), NS + 2 + k * NS / 10));
        }
        for (f, ts) in &frames {
            t.process_frame(LinkType::Ethernet, f, f.len(), *ts, &mut out);
        }
        t.flush(&mut out);
        assert!(out.len() >= 3, "{out:?}");
        assert!(out[0].is_first_report());
        assert!(out[1..].iter().all(|r| !r.is_first_report()));
        // Each continuation counts from its own start; the prior says nothing was sent yet.
        let p = out[1].prior.unwrap();
        assert_eq!((p.orig.pkts, p.resp.pkts), (0, 0));
        assert_eq!(
            out.iter().map(|r| r.orig.pkts + r.resp.pkts).sum::<u64>(),
            frames.len() as u64
        );
    }

    #[test]
    fn a_trickling_session_backs_off_while_a_burst_is_reported_every_interval() {
        let mut cfg = FlowConfig::default();
        cfg.checksums.verify = false;
        cfg.report_ns = Some(NS / 10);
        let mut t = FlowTable::new(cfg);
        let mut out = Vec::new();
        let t0 = 1_000 * NS;
        t.process_frame(
            LinkType::Ethernet,
            &tcp(C, 40000, S, 80, SYN, 1, 0),
            54,
            t0,
            &mut out,
        );
        // One packet every 100 ms for 30 s on one connection; from the 10th second on, a
        // second connection sends 50 packets every 100 ms.
        for k in 1..300u64 {
            let ts = t0 + k * NS / 10;
            let f = tcp(C, 40000, S, 80, ACK, 2, 10);
            t.process_frame(LinkType::Ethernet, &f, f.len(), ts, &mut out);
            if k >= 100 {
                for j in 0..50u64 {
                    let f = tcp(C, 40001, S, 80, ACK, 2, 10);
                    t.process_frame(LinkType::Ethernet, &f, f.len(), ts + j * 1_000, &mut out);
                }
            }
        }
        let interim = |port: u16| {
            out.iter()
                .filter(|r| r.orig_port == port && r.end_reason == EndReason::Interim)
                .count()
        };
        let trickle = interim(40000);
        assert!((20..50).contains(&trickle), "{trickle} reports in 30 s");
        let burst = interim(40001);
        assert!(burst >= 195, "{burst} reports in 20 s");
    }

    #[test]
    fn attempt_timeout_splits_retransmissions_after_five_seconds() {
        let out = run(&[
            (tcp(C, 40000, S, 80, SYN, 1, 0), NS),
            (tcp(C, 40000, S, 80, SYN, 1, 0), 2 * NS),
            (tcp(C, 40000, S, 80, SYN, 1, 0), 7 * NS),
        ]);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].orig.pkts, 2);
        assert_eq!(out[1].orig.pkts, 1);
    }

    #[test]
    fn syn_with_new_isn_after_close_is_a_new_connection() {
        let out = run(&[
            (tcp(C, 40000, S, 80, SYN, 100, 0), NS),
            (tcp(S, 80, C, 40000, RST | ACK, 0, 0), NS + 1),
            (tcp(C, 40000, S, 80, SYN, 9000, 0), NS + 2),
        ]);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn table_is_bounded_and_evictions_are_counted() {
        let mut cfg = FlowConfig::default();
        cfg.checksums.verify = false;
        cfg.max_flows = 100;
        let mut t = FlowTable::new(cfg);
        let mut out = Vec::new();
        for i in 0..1000u16 {
            let f = tcp(C, 1024 + i, S, 80, SYN, 1, 0);
            t.process_frame(LinkType::Ethernet, &f, f.len(), NS + u64::from(i), &mut out);
            assert!(t.len() <= 100);
        }
        assert_eq!(t.stats().evictions(), 900);
        t.flush(&mut out);
        assert_eq!(
            out.len(),
            1000,
            "no flow is lost: evicted flows are emitted"
        );
    }

    impl FlowTable {
        /// Flows the last sweep should have ended or reported and did not.
        fn overdue(&self) -> usize {
            let now = self.now;
            self.slab
                .iter()
                .flatten()
                .filter(|f| {
                    f.expiry(now, &self.cfg, &self.quiet).is_some() || f.active_due(now, &self.cfg)
                })
                .count()
        }
    }

    /// A mix of connections with every kind of timer: attempts, rejected and closed ones,
    /// established ones going idle, long ones crossing the active timeout, UDP.
    fn mixed(n: u32, t0: u64) -> Vec<(Vec<u8>, u64)> {
        let mut v = Vec::new();
        for i in 0..n {
            let c = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            let ts = t0 + u64::from(i) * 7_000_000;
            let port = 1024 + (i % 50_000) as u16;
            match i % 5 {
                0 => v.push((tcp(c, port, S, 80, SYN, i, 0), ts)),
                1 => {
                    v.push((tcp(c, port, S, 80, SYN, i, 0), ts));
                    v.push((tcp(S, 80, c, port, RST | ACK, 0, 0), ts + 1_000));
                }
                2 => {
                    v.push((tcp(c, port, S, 80, SYN, i, 0), ts));
                    v.push((tcp(S, 80, c, port, SYN | ACK, 7, 0), ts + 1_000));
                    v.push((tcp(c, port, S, 80, ACK, i + 1, 10), ts + 2_000));
                }
                3 => {
                    v.push((tcp(c, port, S, 80, SYN, i, 0), ts));
                    v.push((tcp(S, 80, c, port, SYN | ACK, 7, 0), ts + 1_000));
                    v.push((tcp(c, port, S, 80, FIN | ACK, i + 1, 0), ts + 2_000));
                    v.push((tcp(S, 80, c, port, FIN | ACK, 8, 0), ts + 3_000));
                }
                _ => v.push((tcp(c, port, S, 80, ACK, i, 10), ts)),
            }
        }
        v.sort_by_key(|f| f.1);
        v
    }

    #[test]
    fn the_timer_wheel_ends_every_flow_at_the_first_sweep_past_its_deadline() {
        let mut cfg = FlowConfig::default();
        cfg.checksums.verify = false;
        cfg.tcp_idle_ns = 20 * NS;
        cfg.active_ns = Some(30 * NS);
        let mut t = FlowTable::new(cfg);
        let mut out = Vec::new();
        let t0 = 1_000 * NS;
        let frames = mixed(6_000, t0);
        let mut sweeps = 0;
        for (f, ts) in &frames {
            let before = t.next_sweep;
            t.process_frame(LinkType::Ethernet, f, f.len(), *ts, &mut out);
            if t.next_sweep != before {
                sweeps += 1;
                assert_eq!(t.overdue(), 0, "at {ts}");
            }
        }
        // A long connection keeps going past the active timeout.
        let last = frames.last().unwrap().1;
        for k in 0..100u64 {
            let ts = last + k * NS / 2;
            let f = tcp(C, 40000, S, 443, ACK, 1, 10);
            let before = t.next_sweep;
            t.process_frame(LinkType::Ethernet, &f, f.len(), ts, &mut out);
            if t.next_sweep != before {
                sweeps += 1;
                assert_eq!(t.overdue(), 0, "at {ts}");
            }
        }
        // Time passing without packets ends everything.
        for k in 0..400u64 {
            let before = t.next_sweep;
            t.advance_to(last + 50 * NS + k * NS / 4, &mut out);
            if t.next_sweep != before {
                sweeps += 1;
                assert_eq!(t.overdue(), 0);
            }
        }
        assert!(sweeps > 30);
        assert_eq!(t.len(), 0, "every flow went idle");
        let active = out
            .iter()
            .filter(|r| r.end_reason == EndReason::ActiveTimeout)
            .count();
        assert!(active >= 1);
        let packets: u64 = out.iter().map(|r| r.orig.pkts + r.resp.pkts).sum();
        assert_eq!(
            packets,
            frames.len() as u64 + 100,
            "every packet reported once"
        );
    }

    #[test]
    fn the_slab_gives_memory_back_after_a_flood() {
        let mut t = table();
        let mut out = Vec::new();
        let t0 = 1_000 * NS;
        // One long connection before the flood, in a low slot; another after it.
        let keep = tcp(C, 40000, S, 443, ACK, 1, 10);
        t.process_frame(LinkType::Ethernet, &keep, keep.len(), t0, &mut out);
        for i in 0..200_000u32 {
            let src = [10, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            let f = tcp(src, 1024, S, 80, SYN, i, 0);
            t.process_frame(
                LinkType::Ethernet,
                &f,
                f.len(),
                t0 + u64::from(i) * 5_000,
                &mut out,
            );
        }
        let peak = t.memory_bytes();
        let after = tcp(C, 40001, S, 443, ACK, 1, 10);
        t.process_frame(
            LinkType::Ethernet,
            &after,
            after.len(),
            t0 + 2 * NS,
            &mut out,
        );
        // The flood's attempts time out; the two connections go on.
        for k in 0..20u64 {
            let ts = t0 + 3 * NS + k * NS;
            t.process_frame(LinkType::Ethernet, &keep, keep.len(), ts, &mut out);
            t.process_frame(LinkType::Ethernet, &after, after.len(), ts, &mut out);
        }
        assert_eq!(t.len(), 2);
        assert!(
            t.memory_bytes() < peak / 8,
            "{} bytes after, {peak} at the peak",
            t.memory_bytes()
        );
        t.flush(&mut out);
        let ports: Vec<_> = out
            .iter()
            .filter(|r| r.resp_port == 443)
            .map(|r| (r.orig_port, r.orig.pkts))
            .collect();
        assert_eq!(ports.len(), 2, "{ports:?}");
        assert!(ports.contains(&(40000, 21)) && ports.contains(&(40001, 21)));
        assert_eq!(out.len(), 200_002, "no flow lost");
    }

    #[test]
    fn the_end_of_input_flush_hands_on_batches() {
        let mut t = table();
        let mut out = Vec::new();
        for i in 0..1_000u16 {
            let f = tcp(C, 1024 + i, S, 80, SYN, 1, 0);
            t.process_frame(LinkType::Ethernet, &f, f.len(), NS, &mut out);
        }
        let mut batches = Vec::new();
        t.flush_each(&mut out, 64, |b| batches.push(std::mem::take(b)));
        assert!(batches.iter().all(|b| b.len() == 64));
        assert_eq!(batches.len() * 64 + out.len(), 1_000);
        assert!(t.is_empty());
    }

    fn flood_table(above: Option<u64>) -> FlowTable {
        let mut cfg = FlowConfig::default();
        cfg.checksums.verify = false;
        cfg.report_ns = Some(NS / 10);
        cfg.attempts_above = above;
        FlowTable::new(cfg)
    }

    fn feed(t: &mut FlowTable, frames: &[(Vec<u8>, u64)]) -> Vec<FlowRecord> {
        let mut out = Vec::new();
        for (f, ts) in frames {
            t.process_frame(LinkType::Ethernet, f, f.len(), *ts, &mut out);
        }
        t.flush(&mut out);
        out
    }

    /// New connections, packets, bytes and half-open attempts towards `S` as a consumer
    /// counts them (each record's addition to its flow's earlier ones).
    fn consumer_counts(recs: &[FlowRecord]) -> (u64, u64, u64, u64) {
        let (mut new, mut pkts, mut bytes, mut half) = (0, 0, 0, 0);
        for r in recs.iter().filter(|r| r.resp_addr == IpAddr::from(S)) {
            let n = r.attempts.as_ref().map_or(1, |a| a.count);
            match &r.prior {
                None => {
                    new += n;
                    pkts += r.orig.pkts;
                    bytes += r.orig.ip_bytes;
                    if r.orig.tcp_flags.has(TcpFlags::SYN) && !r.orig.tcp_flags.has(TcpFlags::ACK) {
                        half += n;
                    }
                }
                Some(p) => {
                    let (a, b) = p.orig.added(&r.orig);
                    pkts += a;
                    bytes += b;
                    if p.orig.tcp_flags.has(TcpFlags::SYN)
                        && !p.orig.tcp_flags.has(TcpFlags::ACK)
                        && r.orig.tcp_flags.has(TcpFlags::ACK)
                    {
                        half -= 1;
                    }
                }
            }
        }
        (new, pkts, bytes, half)
    }

    /// `f` with IP TTL `ttl` (its header checksum is not verified in these tables).
    fn with_ttl(mut f: Vec<u8>, ttl: u8) -> Vec<u8> {
        f[14 + 8] = ttl;
        f
    }

    /// SYNs from `n` sources, source ports 1 024 up, TTLs 40 to 139.
    fn random_source_flood(n: u32, t0: u64) -> Vec<(Vec<u8>, u64)> {
        (0..n)
            .map(|i| {
                let x = i.wrapping_mul(2_654_435_761) | 1;
                let src = [
                    (x >> 24) as u8 | 1,
                    (x >> 16) as u8,
                    (x >> 8) as u8,
                    x as u8,
                ];
                let syn = tcp(src, 1024 + (i % 60_000) as u16, S, 80, SYN, x, 0);
                (
                    with_ttl(syn, 40 + (i % 100) as u8),
                    t0 + u64::from(i) * 20_000,
                )
            })
            .collect()
    }

    /// The least and greatest TTL and source port of the SYNs towards `S` the records
    /// report, from flows and aggregated attempts alike.
    fn syn_spans(recs: &[FlowRecord]) -> (Option<Span<u8>>, Option<Span<u16>>) {
        let (mut ttl, mut port) = (None, None);
        for r in recs.iter().filter(|r| r.resp_addr == IpAddr::from(S)) {
            match r.attempts.as_deref() {
                Some(a) => {
                    ttl = Span::either(ttl, a.ttl);
                    port = Span::either(port, a.sport);
                }
                None => {
                    ttl = Span::either(ttl, r.orig_ttl);
                    port = Span::either(port, Some(Span::of(r.orig_port)));
                }
            }
        }
        (ttl, port)
    }

    #[test]
    fn each_side_s_ttls_are_reported_and_follow_a_change_of_roles() {
        // The client's TTL changes mid-connection (a route change), the server's does not.
        let out = run(&[
            (with_ttl(tcp(C, 40000, S, 80, SYN, 100, 0), 64), NS),
            (
                with_ttl(tcp(S, 80, C, 40000, SYN | ACK, 500, 0), 128),
                NS + 1,
            ),
            (with_ttl(tcp(C, 40000, S, 80, ACK, 101, 0), 57), NS + 2),
            (with_ttl(tcp(C, 40000, S, 80, ACK, 101, 9), 61), NS + 3),
        ]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].orig_ttl, Some(Span { min: 57, max: 64 }));
        assert_eq!(out[0].resp_ttl, Some(Span::of(128)));
        // Only the SYN-ACK seen first: the sender is the responder by its port, the roles
        // flip when the client's ACK comes, and the TTLs go with their sides.
        let out = run(&[
            (with_ttl(tcp(S, 80, C, 40000, SYN | ACK, 500, 0), 255), NS),
            (with_ttl(tcp(C, 40000, S, 80, ACK, 101, 0), 1), NS + 1),
        ]);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].orig_addr, IpAddr::from(C));
        assert_eq!(out[0].orig_ttl, Some(Span::of(1)));
        assert_eq!(out[0].resp_ttl, Some(Span::of(255)));
        // A side that sent nothing has no TTL.
        let out = run(&[(with_ttl(tcp(C, 40000, S, 80, SYN, 100, 0), 0), NS)]);
        assert_eq!(
            (out[0].orig_ttl, out[0].resp_ttl),
            (Some(Span::of(0)), None)
        );
    }

    /// Within the design's 200 bytes per active flow: the TTLs live in `Dir`'s padding.
    #[test]
    fn a_flow_is_no_larger_for_its_ttls() {
        assert_eq!(size_of::<Dir>(), 12);
        assert!(
            size_of::<Option<Flow>>() <= 176,
            "{}",
            size_of::<Option<Flow>>()
        );
    }

    #[test]
    fn a_flood_of_one_packet_syns_gives_the_same_counts_in_few_records() {
        let t0 = 1_000 * NS;
        // 100 000 SYNs from as many sources in 2 s, and one client that completes.
        let mut frames = random_source_flood(100_000, t0);
        frames.push((tcp(C, 40000, S, 80, SYN, 100, 0), t0 + NS / 2));
        frames.push((tcp(S, 80, C, 40000, SYN | ACK, 500, 0), t0 + NS / 2 + 1_000));
        frames.push((tcp(C, 40000, S, 80, ACK, 101, 10), t0 + NS / 2 + 2_000));
        frames.sort_by_key(|f| f.1);
        let plain = feed(&mut flood_table(None), &frames);
        let mut t = flood_table(Some(1_000));
        let compact = feed(&mut t, &frames);
        assert_eq!(consumer_counts(&compact), consumer_counts(&plain));
        assert_eq!(
            consumer_counts(&plain),
            (100_001, 100_002, 4_000_090, 100_000)
        );
        assert!(t.stats().attempts_held > 98_000, "{:?}", t.stats());
        // Two seconds, ten reports each: a record per report interval, not one per SYN.
        assert!(compact.len() < 3_000, "{} records", compact.len());
        assert!(plain.len() >= 100_000);
        // The SYNs' TTLs and source ports spread as far in the aggregates as in the flows.
        let spans = syn_spans(&compact);
        assert_eq!(spans, syn_spans(&plain));
        assert_eq!(
            spans,
            (
                Some(Span { min: 40, max: 139 }),
                Some(Span {
                    min: 1024,
                    max: 61_023
                })
            )
        );
        // The attempts' sources: their number within the sketch's error, a full sample.
        let agg: Vec<_> = compact
            .iter()
            .filter_map(|r| r.attempts.as_deref())
            .collect();
        let mut all = normwatch_model::Cardinality::default();
        for a in &agg {
            all.merge(&a.sources);
            assert!(!a.sample.is_empty() && a.sample.len() <= normwatch_model::Attempts::SAMPLE);
        }
        let est = all.estimate();
        assert!((90_000.0..110_000.0).contains(&est), "{est}");
        // The client's connection is reported as a flow.
        let client: Vec<_> = compact.iter().filter(|r| r.orig_port == 40000).collect();
        assert!(!client.is_empty());
        let last = client.last().unwrap();
        assert_eq!(
            (last.orig.pkts, last.resp.pkts, last.conn_state),
            (2, 1, ConnState::S1)
        );
    }

    #[test]
    fn an_answered_attempt_becomes_a_flow_whose_records_follow_its_syn() {
        let t0 = 1_000 * NS;
        let frames = [
            (with_ttl(tcp(C, 40000, S, 80, SYN, 100, 0), 50), t0),
            (tcp(S, 80, C, 40000, SYN | ACK, 500, 0), t0 + 1_000),
            (tcp(C, 40000, S, 80, ACK, 101, 0), t0 + 2_000),
            (tcp(C, 40000, S, 80, FIN | ACK, 101, 0), t0 + 3_000),
            (tcp(S, 80, C, 40000, FIN | ACK, 501, 0), t0 + 4_000),
        ];
        let mut t = flood_table(Some(0));
        let out = feed(&mut t, &frames);
        assert_eq!(t.stats().attempts_held, 1);
        assert_eq!(t.stats().attempts_promoted, 1);
        // The attempt's record comes first, then the connection's, which adds to its SYN.
        assert_eq!(out[0].attempts.as_ref().map(|a| a.count), Some(1));
        assert_eq!(
            out[0].attempts.as_ref().and_then(|a| a.ttl),
            Some(Span::of(50))
        );
        let last = out.last().unwrap();
        assert_eq!(last.conn_state, ConnState::SF);
        // The flow keeps its held SYN's TTL beside those of the packets after it.
        assert_eq!(last.orig_ttl, Some(Span { min: 50, max: 64 }));
        assert_eq!((last.orig.pkts, last.resp.pkts), (3, 2));
        let p = out[1].prior.expect("the SYN was reported");
        assert_eq!((p.orig.pkts, p.orig.tcp_flags.0), (1, SYN));
        assert_eq!(consumer_counts(&out), consumer_counts(&run(&frames)));
    }

    #[test]
    fn a_syn_of_a_connection_in_the_table_is_counted_in_its_flow_under_a_flood() {
        let t0 = 1_000 * NS;
        let mut frames = random_source_flood(1_000, t0);
        let t1 = frames.last().map_or(t0, |f| f.1);
        frames.push((tcp(C, 40000, S, 443, SYN, 7, 0), t1 + 1_000));
        frames.push((tcp(S, 443, C, 40000, SYN | ACK, 9, 0), t1 + 2_000));
        frames.push((tcp(C, 40000, S, 443, ACK, 8, 0), t1 + 3_000));
        // Other connections' packets, so that the client's flow is found through the index.
        for i in 0..2_000u32 {
            let src = [10, 1, (i >> 8) as u8, i as u8];
            let ts = t1 + 4_000 + u64::from(i);
            frames.push((tcp(src, 2000, S, 80, ACK, i, 10), ts));
        }
        // The same SYN again, late: its connection's packet, not an attempt of its own.
        frames.push((tcp(C, 40000, S, 443, SYN, 7, 0), t1 + 10_000));
        let mut t = flood_table(Some(0));
        let out = feed(&mut t, &frames);
        // The flood's SYNs and the client's first.
        assert_eq!(t.stats().attempts_held, 1_001);
        assert_eq!(t.stats().attempts_promoted, 1);
        let client = out
            .iter()
            .filter(|r| r.orig_port == 40000 && r.attempts.is_none())
            .map(|r| r.orig.pkts)
            .max();
        assert_eq!(client, Some(3));
        assert_eq!(consumer_counts(&out), consumer_counts(&run(&frames)));
    }

    #[test]
    fn a_source_that_sends_again_becomes_a_flow() {
        let t0 = 1_000 * NS;
        // A scanner: one source, many ports; and a client retransmitting its SYN.
        let mut frames: Vec<_> = (0..50u16)
            .map(|i| {
                (
                    tcp(C, 40000, S, 1 + i, SYN, 7, 0),
                    t0 + u64::from(i) * 1_000,
                )
            })
            .collect();
        let d = [198, 51, 100, 9];
        frames.push((tcp(d, 50000, S, 443, SYN, 9, 0), t0 + NS));
        frames.push((tcp(d, 50000, S, 443, SYN, 9, 0), t0 + 2 * NS));
        let mut t = flood_table(Some(0));
        let out = feed(&mut t, &frames);
        let flows: Vec<_> = out.iter().filter(|r| r.attempts.is_none()).collect();
        // Every probe is a flow: the first became one when the second came.
        let mut ports: Vec<_> = flows
            .iter()
            .filter(|r| r.orig_port == 40000)
            .map(|r| r.resp_port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        assert_eq!(ports.len(), 50);
        let retried = flows.iter().rfind(|r| r.orig_port == 50000).unwrap();
        assert_eq!(retried.orig.pkts, 2);
        assert_eq!(t.stats().attempts_promoted, 2);
        assert_eq!(consumer_counts(&out), consumer_counts(&run(&frames)));
    }

    #[test]
    fn below_the_limit_and_without_reports_every_syn_is_a_flow() {
        let frames = random_source_flood(2_000, 1_000 * NS);
        // 2 000 SYNs in 40 ms: under 10 000 a second.
        let mut t = flood_table(Some(10_000));
        let out = feed(&mut t, &frames);
        assert!(out.iter().all(|r| r.attempts.is_none()));
        assert_eq!(t.stats().attempts_held, 0);
        let mut cfg = FlowConfig::default();
        cfg.checksums.verify = false;
        cfg.attempts_above = Some(0);
        let mut t = FlowTable::new(cfg);
        let out = feed(&mut t, &frames);
        assert_eq!(
            out.len(),
            2_000,
            "one record per connection without interim reports"
        );
    }

    #[test]
    fn idle_timeout_emits_flow() {
        let mut t = table();
        let mut out = Vec::new();
        let f = tcp(C, 40000, S, 80, ACK, 1, 10);
        t.process_frame(LinkType::Ethernet, &f, f.len(), NS, &mut out);
        let g = tcp(C, 40001, S, 80, ACK, 1, 10);
        t.process_frame(LinkType::Ethernet, &g, g.len(), 400 * NS, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end_reason, EndReason::IdleTimeout);
        assert_eq!(t.len(), 1);
    }
}
