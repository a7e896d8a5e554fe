//! The flow record: one bidirectional connection as the sensor saw it.

use crate::asset::AssetMatch;
use crate::ics::IcsSummary;
use crate::sketch::Cardinality;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

/// IANA IP protocol numbers, named where the code tells protocols apart.
pub mod ip_proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ICMPV6: u8 = 58;
    pub const SCTP: u8 = 132;
    pub const UDPLITE: u8 = 136;
}

/// TCP flags as the bits of the TCP header's flags byte (FIN = 0x01 … CWR = 0x80).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TcpFlags(pub u8);

impl TcpFlags {
    pub const FIN: u8 = 0x01;
    pub const SYN: u8 = 0x02;
    pub const RST: u8 = 0x04;
    pub const PSH: u8 = 0x08;
    pub const ACK: u8 = 0x10;
    pub const URG: u8 = 0x20;
    pub const ECE: u8 = 0x40;
    pub const CWR: u8 = 0x80;

    /// Whether every bit of `mask` is set.
    #[inline]
    pub const fn has(self, mask: u8) -> bool {
        self.0 & mask == mask
    }
}

impl fmt::Debug for TcpFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [char; 8] = ['F', 'S', 'R', 'P', 'A', 'U', 'E', 'C'];
        let s: String = NAMES
            .iter()
            .enumerate()
            .filter(|(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, c)| *c)
            .collect();
        write!(f, "TcpFlags({s})")
    }
}

/// Zeek's connection state summary (`conn_state` in conn.log), with Zeek's meanings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnState {
    /// Connection attempt seen, no reply.
    S0,
    /// Connection established, not terminated.
    S1,
    /// Normal establishment and termination.
    SF,
    /// Connection attempt rejected.
    REJ,
    /// Established, close attempt by originator seen (but no reply from responder).
    S2,
    /// Established, close attempt by responder seen (but no reply from originator).
    S3,
    /// Established, originator aborted (sent a RST).
    RSTO,
    /// Responder sent a RST.
    RSTR,
    /// Originator sent a SYN followed by a RST, never saw a SYN-ACK from the responder.
    RSTOS0,
    /// Responder sent a SYN-ACK followed by a RST, never saw a SYN from the originator.
    RSTRH,
    /// Originator sent a SYN followed by a FIN, never saw a SYN-ACK from the responder.
    SH,
    /// Responder sent a SYN-ACK followed by a FIN, never saw a SYN from the originator.
    SHR,
    /// No SYN seen, just midstream traffic (or a protocol without states).
    OTH,
}

impl ConnState {
    /// Zeek's spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnState::S0 => "S0",
            ConnState::S1 => "S1",
            ConnState::SF => "SF",
            ConnState::REJ => "REJ",
            ConnState::S2 => "S2",
            ConnState::S3 => "S3",
            ConnState::RSTO => "RSTO",
            ConnState::RSTR => "RSTR",
            ConnState::RSTOS0 => "RSTOS0",
            ConnState::RSTRH => "RSTRH",
            ConnState::SH => "SH",
            ConnState::SHR => "SHR",
            ConnState::OTH => "OTH",
        }
    }
}

impl fmt::Display for ConnState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the sensor stopped tracking a flow and emitted its record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EndReason {
    /// No packet for the protocol's idle timeout.
    IdleTimeout,
    /// The flow lived longer than the active timeout; a later record continues it.
    ActiveTimeout,
    /// TCP closed (FIN both ways or RST) and the linger time passed, or a new SYN reused the tuple.
    TcpClosed,
    /// The flow table was full and this flow was the least recently used of a sample.
    Evicted,
    /// The capture ended (end of file or capture stopped).
    EndOfInput,
    /// The flow goes on: an interim report of its traffic so far, sent every report interval
    /// while it has new traffic. A later record of the same flow follows.
    Interim,
    /// Not one flow but one-packet connection attempts counted together
    /// ([`FlowRecord::attempts`]).
    Attempts,
}

impl EndReason {
    /// Every reason, in declaration order: a reason's place here is [`EndReason::index`] (and
    /// its variant index on the wire).
    pub const ALL: [EndReason; 7] = [
        EndReason::IdleTimeout,
        EndReason::ActiveTimeout,
        EndReason::TcpClosed,
        EndReason::Evicted,
        EndReason::EndOfInput,
        EndReason::Interim,
        EndReason::Attempts,
    ];

    /// The reason's place in [`EndReason::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the record ends its flow (every reason but [`EndReason::Interim`] and
    /// [`EndReason::ActiveTimeout`], whose flows go on).
    pub const fn is_final(self) -> bool {
        !matches!(self, EndReason::Interim | EndReason::ActiveTimeout)
    }
}

/// Packets and bytes sent by one side of a flow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirStats {
    /// Packets sent (Zeek's `orig_pkts` / `resp_pkts`).
    pub pkts: u64,
    /// Sum of the IP total lengths of those packets (Zeek's `orig_ip_bytes` / `resp_ip_bytes`).
    pub ip_bytes: u64,
    /// Transport payload bytes (after the TCP/UDP/ICMP header).
    pub payload_bytes: u64,
    /// OR of the TCP flags sent (zero for other protocols).
    pub tcp_flags: TcpFlags,
}

/// One bidirectional connection, as the sensor saw it. Times are event time from the packets,
/// in nanoseconds since the Unix epoch, never the wall clock.
///
/// Every field is always serialized (absent ones as `null`): the compact wire encoding is not
/// self-describing, so a field may not be skipped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRecord {
    /// The sensor that observed the flow (from `sensor.id` in its config).
    #[serde(deserialize_with = "crate::intern::sensor")]
    pub sensor_id: Arc<str>,
    /// Unique per sensor run; consecutive records of one long flow (active timeout) share it.
    pub flow_id: u64,
    pub orig_addr: IpAddr,
    pub orig_port: u16,
    pub resp_addr: IpAddr,
    pub resp_port: u16,
    /// IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, others as carried). For ICMP the
    /// ports are Zeek's: type as the originator port, the counterpart type (or code) as the
    /// responder port.
    pub ip_proto: u8,
    pub first_ns: u64,
    pub last_ns: u64,
    pub orig: DirStats,
    pub resp: DirStats,
    pub conn_state: ConnState,
    /// The protected asset this flow touches, if any.
    #[serde(default)]
    pub asset: Option<AssetMatch>,
    /// Industrial-protocol commands, for flows on an ICS port.
    #[serde(default)]
    pub ics: Option<Box<IcsSummary>>,
    pub end_reason: EndReason,
    /// Where the counts come from when a router or switch exported the flow (NetFlow, IPFIX,
    /// sFlow): protocol, exporter and sampling rate (counts are already scaled by it).
    /// `None`: the sensor's own packets, every packet counted.
    #[serde(default)]
    pub export: Option<ExportOrigin>,
    /// What earlier records of the same flow already reported (interim reports, active-timeout
    /// records): the part this record adds is its counts minus these. `None` on a flow's first
    /// record, which reports everything from its first packet and counts the connection as new.
    #[serde(default)]
    pub prior: Option<Prior>,
    /// Set on a record that stands for many one-packet connection attempts rather than one
    /// connection (a sensor's answer to a random-source SYN flood): `orig` holds their packets
    /// and bytes, `orig_addr` is unspecified and `orig_port` 0; `None` on every other record.
    #[serde(default)]
    pub attempts: Option<Box<Attempts>>,
    /// The least and greatest IP TTL (IPv6 hop limit) of the originator's packets over the
    /// flow; `None` where the counts do not come from packets the sensor saw (flow exports).
    #[serde(default)]
    pub orig_ttl: Option<Span<u8>>,
    /// The same of the responder's packets; `None` also when it sent none.
    #[serde(default)]
    pub resp_ttl: Option<Span<u8>>,
}

/// The least and the greatest of the values seen (IP TTLs, ports): what a spoofing
/// assessment reads, in a few bytes whatever the number of packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Span<T> {
    pub min: T,
    pub max: T,
}

impl<T: Copy + Ord> Span<T> {
    /// One value.
    #[inline]
    pub fn of(v: T) -> Self {
        Span { min: v, max: v }
    }

    /// Both spans' values together.
    #[inline]
    #[must_use]
    pub fn merge(self, other: Span<T>) -> Self {
        Span {
            min: self.min.min(other.min),
            max: self.max.max(other.max),
        }
    }

    /// `a` and `b` together, either of which may be absent.
    #[inline]
    pub fn either(a: Option<Span<T>>, b: Option<Span<T>>) -> Option<Span<T>> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.merge(b)),
            (a, b) => a.or(b),
        }
    }
}

impl<T: Copy + Ord + std::ops::Sub<Output = T>> Span<T> {
    /// The greatest minus the least.
    #[inline]
    pub fn spread(self) -> T {
        self.max - self.min.min(self.max)
    }
}

/// One-packet TCP connection attempts a sensor counted together instead of reporting each:
/// SYNs, each from a source it had not seen before, to one responder address and port within
/// one event second, whose source neither sent again nor was answered before the record was
/// made (an attempt that is answered, or whose source sends again, becomes a flow of its own
/// whose records carry a `prior` of its SYN). A consumer counts each as a new, half-open
/// connection attempt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempts {
    /// Attempts counted (one SYN each).
    pub count: u64,
    /// Their distinct sources: a HyperLogLog of [`crate::addr_key`] of each source address.
    pub sources: Cardinality,
    /// A fair sample of the sources: each attempt was equally likely to be kept, at most
    /// [`Attempts::SAMPLE`] of them.
    pub sample: Vec<IpAddr>,
    /// The least and greatest IP TTL (IPv6 hop limit) of the SYNs; `None` where not seen.
    #[serde(default)]
    pub ttl: Option<Span<u8>>,
    /// The least and greatest of their source ports; `None` where not seen.
    #[serde(default)]
    pub sport: Option<Span<u16>>,
}

impl Attempts {
    /// Most sources a record samples.
    pub const SAMPLE: usize = 64;
}

/// What the records before this one reported of the same flow. The counts of a record are the
/// flow's totals (since its first packet, or since an active-timeout report); a consumer that
/// adds up traffic counts the difference, spread over `since_ns ..= last_ns`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prior {
    /// Records of this flow before this one (the sensor's count saturates at 255).
    pub reports: u32,
    /// The first packet after the previous record: where the part this record adds begins.
    pub since_ns: u64,
    /// The originator's counts and flags as of the previous record.
    pub orig: PriorDir,
    /// The responder's counts and flags as of the previous record.
    pub resp: PriorDir,
}

/// One direction's counts as of a flow's previous record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorDir {
    pub pkts: u64,
    pub ip_bytes: u64,
    pub tcp_flags: TcpFlags,
    /// Industrial commands counted by then: write, control, stop/restart, program/firmware.
    pub commands: [u32; 4],
}

impl PriorDir {
    /// What a direction sent since the previous record: packets and IP bytes.
    #[inline]
    pub fn added(&self, now: &DirStats) -> (u64, u64) {
        (
            now.pkts.saturating_sub(self.pkts),
            now.ip_bytes.saturating_sub(self.ip_bytes),
        )
    }
}

impl FlowRecord {
    /// Zeek's `proto` column: `tcp`, `udp`, `icmp` (v4 and v6) or `unknown_transport`.
    pub fn zeek_proto(&self) -> &'static str {
        match self.ip_proto {
            ip_proto::TCP => "tcp",
            ip_proto::UDP => "udp",
            ip_proto::ICMP | ip_proto::ICMPV6 => "icmp",
            _ => "unknown_transport",
        }
    }

    /// Duration in nanoseconds.
    pub fn duration_ns(&self) -> u64 {
        self.last_ns.saturating_sub(self.first_ns)
    }

    /// Whether this record starts its flow (no earlier record reported any of it): the
    /// connection is counted as new once, on this record.
    #[inline]
    pub fn is_first_report(&self) -> bool {
        self.prior.is_none()
    }

    /// Where the part of the flow this record adds begins (ns): its first packet, or the first
    /// packet after the previous record.
    #[inline]
    pub fn added_since_ns(&self) -> u64 {
        self.prior.map_or(self.first_ns, |p| p.since_ns)
    }
}

/// Where a flow record's counts come from: packets the sensor saw itself, or a flow export
/// from a router or switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordSource {
    /// The sensor's own flow table over captured packets (every packet counted).
    Packets,
    /// Cisco NetFlow version 5.
    NetflowV5,
    /// NetFlow version 9 (RFC 3954).
    NetflowV9,
    /// IPFIX (RFC 7011).
    Ipfix,
    /// sFlow version 5: sampled packet headers aggregated by the sensor's flow table.
    Sflow,
}

impl RecordSource {
    pub const fn as_str(self) -> &'static str {
        match self {
            RecordSource::Packets => "packets",
            RecordSource::NetflowV5 => "netflow-v5",
            RecordSource::NetflowV9 => "netflow-v9",
            RecordSource::Ipfix => "ipfix",
            RecordSource::Sflow => "sflow",
        }
    }
}

/// How an exported flow reached the sensor: the protocol, the exporting device and the
/// sampling the device applied. Packet and byte counts of a record carrying it are already
/// scaled by `sampling_rate`, so thresholds compare like with like; the rate says how coarse
/// the estimate is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExportOrigin {
    pub source: RecordSource,
    /// The exporter's address (the UDP source, or the sFlow agent address).
    pub exporter: IpAddr,
    /// NetFlow v9 source id, IPFIX observation domain, sFlow sub-agent and source id.
    pub domain: u32,
    /// One in `sampling_rate` packets was counted (1: every packet).
    pub sampling_rate: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_merge_and_spread() {
        let a = Span::of(64u8).merge(Span::of(52));
        assert_eq!(a, Span { min: 52, max: 64 });
        assert_eq!(a.spread(), 12);
        assert_eq!(
            Span::either(Some(a), Some(Span::of(250))).unwrap().spread(),
            198
        );
        assert_eq!(Span::either(None, Some(a)), Some(a));
        assert_eq!(Span::<u16>::either(None, None), None);
        // A span read from elsewhere with its ends swapped spreads over nothing, not past zero.
        assert_eq!(Span { min: 9u16, max: 3 }.spread(), 0);
    }
}
