//! Packet decoding: link layer → (tunnels) → IP → transport, zero-copy and allocation-free.
//!
//! The decoder reads only what the flow table needs (addresses, ports, lengths, TCP flags and
//! sequence numbers, payload) and follows Zeek's accounting rules: the IP byte count is the
//! header's total length (not the captured length), a packet whose wire length is shorter than
//! that is truncated and dropped, and checksums are only verified over fully captured packets.

use crate::checksum;
use normwatch_model::ip_proto;

/// Link-layer framing of a capture, by pcap `LINKTYPE_*` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
// As wide as the loads that read it back out of a `Frame`: a byte-wide store read by a wider
// load cannot be forwarded and stalls the per-packet call.
#[repr(u32)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_NULL (0): BSD loopback, 4-byte address family in the capturing host's order.
    Null,
    /// LINKTYPE_LOOP (108): OpenBSD loopback, address family in network order.
    Loop,
    /// LINKTYPE_RAW (101, also 12 and 14 on some systems) and LINKTYPE_IPV4/IPV6 (228/229).
    Raw,
    /// LINKTYPE_LINUX_SLL (113): Linux cooked capture v1.
    LinuxSll,
    /// LINKTYPE_LINUX_SLL2 (276): Linux cooked capture v2.
    LinuxSll2,
    /// LINKTYPE_FDDI (10): FDDI frame control + MACs + 802.2 LLC/SNAP.
    Fddi,
    /// LINKTYPE_PPP (9): PPP with HDLC-like address/control or bare protocol.
    Ppp,
}

impl LinkType {
    /// Maps a pcap link-type number to a supported framing.
    pub fn from_linktype(value: i32) -> Option<LinkType> {
        Some(match value {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            9 => LinkType::Ppp,
            10 => LinkType::Fddi,
            12 | 14 | 101 | 228 | 229 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            _ => return None,
        })
    }
}

/// Why a packet (or a layer of it) was not turned into a flow update. Counted, never fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DropReason {
    /// The link-layer header is shorter than its type requires.
    TruncatedLink,
    /// A non-IP protocol (ARP, LLDP, STP, …): not an error, but no flow.
    NonIp,
    /// An encapsulation the decoder does not follow.
    UnsupportedEncapsulation,
    /// The IP header is shorter than its minimum or its stated header length.
    TruncatedIp,
    /// IP version field is neither 4 nor 6 (or disagrees with the link layer).
    BadIpVersion,
    /// IPv4 header length < 20 or total length < header length.
    BadIpHeader,
    /// IPv4 header checksum wrong (only when checksums are verified).
    BadIpChecksum,
    /// The packet on the wire was shorter than the IP total length.
    TruncatedOnWire,
    /// IPv6 extension header chain runs past the packet.
    BadIpv6Extension,
    /// Transport header shorter than its minimum, or TCP data offset < 5.
    TruncatedTransport,
    /// TCP/UDP/ICMP checksum wrong (the flow is created, the packet not counted, as in Zeek).
    BadTransportChecksum,
    /// Tunnels nested deeper than the decoder follows.
    TunnelTooDeep,
    /// The capture record itself was unusable (zero length, larger than the snap length).
    BadRecord,
}

impl DropReason {
    /// Every reason, in counter order.
    pub const ALL: [DropReason; 13] = [
        DropReason::TruncatedLink,
        DropReason::NonIp,
        DropReason::UnsupportedEncapsulation,
        DropReason::TruncatedIp,
        DropReason::BadIpVersion,
        DropReason::BadIpHeader,
        DropReason::BadIpChecksum,
        DropReason::TruncatedOnWire,
        DropReason::BadIpv6Extension,
        DropReason::TruncatedTransport,
        DropReason::BadTransportChecksum,
        DropReason::TunnelTooDeep,
        DropReason::BadRecord,
    ];

    /// Metric label / log value.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::TruncatedLink => "truncated_link",
            DropReason::NonIp => "non_ip",
            DropReason::UnsupportedEncapsulation => "unsupported_encapsulation",
            DropReason::TruncatedIp => "truncated_ip",
            DropReason::BadIpVersion => "bad_ip_version",
            DropReason::BadIpHeader => "bad_ip_header",
            DropReason::BadIpChecksum => "bad_ip_checksum",
            DropReason::TruncatedOnWire => "truncated_on_wire",
            DropReason::BadIpv6Extension => "bad_ipv6_extension",
            DropReason::TruncatedTransport => "truncated_transport",
            DropReason::BadTransportChecksum => "bad_transport_checksum",
            DropReason::TunnelTooDeep => "tunnel_too_deep",
            DropReason::BadRecord => "bad_record",
        }
    }
}

/// Fragmentation state of an IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not a fragment.
    None,
    /// The first fragment (offset 0, more fragments follow): carries the transport header.
    First { id: u32 },
    /// A later fragment: only payload bytes; `bytes` is what it adds to the reassembled packet.
    Later { id: u32, bytes: u32 },
}

/// One IP packet's worth of what the flow table needs. Addresses are 16 bytes, IPv4 mapped
/// into `::ffff:a.b.c.d`, so one key type serves both families.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub v6: bool,
    /// IP protocol of the transport (after IPv6 extension headers).
    pub proto: u8,
    /// Source and destination ports; for ICMP the type and the counterpart type (or code).
    pub sport: u16,
    pub dport: u16,
    /// Zeek's IP length: the IPv4 total length, or 40 + the IPv6 payload length (less the
    /// fragment header for a first fragment, as after reassembly).
    pub ip_len: u32,
    /// Transport payload length by the headers (may exceed the captured `payload`).
    pub payload_len: u32,
    /// Captured transport payload.
    pub payload: &'a [u8],
    pub tcp_flags: u8,
    /// The IPv4 TTL or IPv6 hop limit (of the innermost IP header, after decapsulation).
    pub ttl: u8,
    pub seq: u32,
    pub ack: u32,
    pub frag: Fragment,
    /// Transport checksum verified bad (only when verification is on and the packet is whole).
    pub bad_checksum: bool,
}

impl Default for Packet<'_> {
    /// No packet yet: zero addresses and fields, to be written by [`decode_into`].
    fn default() -> Self {
        Packet::ip([0; 16], [0; 16], false, 0, 0, 0, Fragment::None)
    }
}

impl Packet<'_> {
    /// An IP packet whose transport fields are still to be read.
    fn ip(
        src: [u8; 16],
        dst: [u8; 16],
        v6: bool,
        proto: u8,
        ttl: u8,
        ip_len: u32,
        frag: Fragment,
    ) -> Self {
        Packet {
            src,
            dst,
            v6,
            proto,
            sport: 0,
            dport: 0,
            ip_len,
            payload_len: 0,
            payload: &[],
            tcp_flags: 0,
            ttl,
            seq: 0,
            ack: 0,
            frag,
            bad_checksum: false,
        }
    }
}

/// Checksum verification settings.
#[derive(Clone, Debug, Default)]
pub struct ChecksumSettings {
    /// Verify IPv4 header and transport checksums; bad packets are dropped as Zeek does.
    pub verify: bool,
    /// Source prefixes whose packets skip transport checksum verification:
    /// (network bits, mask) over the 16-byte address.
    pub ignore_src: Vec<(u128, u128)>,
}

impl ChecksumSettings {
    fn skip_for(&self, src: &[u8; 16]) -> bool {
        if self.ignore_src.is_empty() {
            return false;
        }
        let a = u128::from_be_bytes(*src);
        self.ignore_src.iter().any(|(net, mask)| a & mask == *net)
    }
}

/// What follows an IP packet that the caller must decode as a new, inner packet: UDP tunnels
/// keep their outer flow (Zeek logs the VXLAN/Geneve UDP connection) and carry an inner frame.
#[derive(Clone, Copy, Debug)]
pub struct Inner<'a> {
    pub link: LinkType,
    pub data: &'a [u8],
}

const VXLAN_PORT: u16 = 4789;
const GENEVE_PORT: u16 = 6081;
const TEREDO_PORT: u16 = 3544;
const MAX_DEPTH: u8 = 4;

/// What decoding a frame into a caller's packet returns besides the packet: an inner frame
/// for UDP tunnels, or why the frame is dropped.
pub type Found<'a> = Result<Option<Inner<'a>>, DropReason>;

/// Decodes one frame into `out`: the IP packet found (after any GRE/IP-in-IP decapsulation).
/// `wire_len` is the original length on the wire (pcap `orig_len`); after an error `out`
/// holds nothing meaningful. The packet is written once, field by field, where the caller
/// reads it, instead of being built and then copied out in wide moves that cannot take their
/// data from the narrower stores still in flight; every decoding step below writes into it
/// the same way.
#[inline]
pub fn decode_into<'a>(
    link: LinkType,
    data: &'a [u8],
    wire_len: usize,
    cks: &ChecksumSettings,
    out: &mut Packet<'a>,
) -> Found<'a> {
    // Bytes missing from the capture (snap length) are the same at every layer: the wire
    // length of an inner layer is its captured length plus this.
    let missing = wire_len.saturating_sub(data.len());
    if link == LinkType::Ethernet && ethernet_ipv4_fast(data, missing, cks, out).is_some() {
        return Ok(None);
    }
    decode_link(&mut Decoding { missing, cks, out }, link, data, 0)
}

/// The source address of an Ethernet frame carrying IPv4 (as the decoder writes it), if it
/// is one; a hint for prefetching, nothing checked beyond the types.
#[inline]
pub(crate) fn ethernet_ipv4_src(data: &[u8]) -> Option<[u8; 16]> {
    let (eth, p) = data.split_first_chunk::<14>()?;
    let h = p.first_chunk::<20>()?;
    (eth[12..14] == [0x08, 0x00] && h[0] >> 4 == 4).then(|| v4_mapped(&h[12..16]))
}

/// The common case in one pass: Ethernet, an IPv4 header without options, not a fragment,
/// TCP or UDP (not a tunnel port), written into `pkt`. `None` sends the frame down the general
/// path, which also decides every error; what this writes is exactly what the general path
/// would return.
#[inline(always)]
fn ethernet_ipv4_fast<'a>(
    data: &'a [u8],
    missing: usize,
    cks: &ChecksumSettings,
    pkt: &mut Packet<'a>,
) -> Option<()> {
    let (eth, p) = data.split_first_chunk::<14>()?;
    let h = p.first_chunk::<20>()?;
    if eth[12..14] != [0x08, 0x00] || h[0] != 0x45 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    // A zero total length (segmentation offload), a bad one, a fragment: the general path.
    if total < 20 || p.len() + missing < total || u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0 {
        return None;
    }
    if cks.verify && checksum::ones_complement(0, h) != 0xffff {
        return None;
    }
    let proto = h[9];
    let body = p.get(20..p.len().min(total))?;
    let body_len = (total - 20) as u32;
    *pkt = Packet::ip(
        v4_mapped(&h[12..16]),
        v4_mapped(&h[16..20]),
        false,
        proto,
        h[8],
        total as u32,
        Fragment::None,
    );
    let verify = cks.verify && body.len() as u32 == body_len && !cks.skip_for(&pkt.src);
    match proto {
        ip_proto::TCP => tcp(pkt, body, body_len, verify)?,
        ip_proto::UDP => {
            let u = body.first_chunk::<8>()?;
            pkt.sport = u16::from_be_bytes([u[0], u[1]]);
            pkt.dport = u16::from_be_bytes([u[2], u[3]]);
            if [pkt.sport, pkt.dport].contains(&TEREDO_PORT)
                || pkt.dport == VXLAN_PORT
                || pkt.dport == GENEVE_PORT
            {
                return None;
            }
            pkt.payload_len = body_len.checked_sub(8)?;
            pkt.payload = &body[8..];
            if verify && u16::from_be_bytes([u[6], u[7]]) != 0 {
                pkt.bad_checksum = !checksum::transport_ok(pkt, ip_proto::UDP, body);
            }
        }
        _ => return None,
    }
    Some(())
}

/// One frame on the general path: what every decoding step shares.
struct Decoding<'a, 'o> {
    /// Bytes missing from the capture (snap length), the same at every layer.
    missing: usize,
    cks: &'o ChecksumSettings,
    /// Where the packet found is written (a tunnel's inner packet over its outer one).
    out: &'o mut Packet<'a>,
}

fn decode_link<'a>(
    d: &mut Decoding<'a, '_>,
    link: LinkType,
    data: &'a [u8],
    depth: u8,
) -> Found<'a> {
    if depth > MAX_DEPTH {
        return Err(DropReason::TunnelTooDeep);
    }
    match link {
        LinkType::Ethernet => {
            let et = data.get(12..14).ok_or(DropReason::TruncatedLink)?;
            ethertype(d, u16::from_be_bytes([et[0], et[1]]), &data[14..], depth)
        }
        LinkType::Null | LinkType::Loop => {
            let h = data.get(..4).ok_or(DropReason::TruncatedLink)?;
            let h = [h[0], h[1], h[2], h[3]];
            // The family is in the capturing host's byte order for NULL; accept either.
            let fam = if link == LinkType::Loop {
                u32::from_be_bytes(h)
            } else {
                let le = u32::from_le_bytes(h);
                if le < 256 {
                    le
                } else {
                    u32::from_be_bytes(h)
                }
            };
            match fam {
                2 => ip(d, &data[4..], depth, Some(4)),
                // AF_INET6 differs by OS: Linux 10, BSDs 24, FreeBSD 28, macOS 30.
                10 | 24 | 28 | 30 => ip(d, &data[4..], depth, Some(6)),
                _ => Err(DropReason::NonIp),
            }
        }
        LinkType::Raw => ip(d, data, depth, None),
        LinkType::LinuxSll => {
            let et = data.get(14..16).ok_or(DropReason::TruncatedLink)?;
            ethertype(d, u16::from_be_bytes([et[0], et[1]]), &data[16..], depth)
        }
        LinkType::LinuxSll2 => {
            let et = data.get(0..2).ok_or(DropReason::TruncatedLink)?;
            if data.len() < 20 {
                return Err(DropReason::TruncatedLink);
            }
            ethertype(d, u16::from_be_bytes([et[0], et[1]]), &data[20..], depth)
        }
        LinkType::Fddi => {
            // 1 byte frame control, 6 + 6 MAC bytes, then 802.2 LLC.
            let llc = data.get(13..).ok_or(DropReason::TruncatedLink)?;
            llc_snap(d, llc, depth)
        }
        LinkType::Ppp => {
            let mut p = data;
            if p.first() == Some(&0xff) && p.get(1) == Some(&0x03) {
                p = &p[2..];
            }
            ppp(d, p, depth)
        }
    }
}

fn llc_snap<'a>(d: &mut Decoding<'a, '_>, llc: &'a [u8], depth: u8) -> Found<'a> {
    let h = llc.get(..8).ok_or(DropReason::TruncatedLink)?;
    if h[0] == 0xaa && h[1] == 0xaa && h[2] == 0x03 {
        ethertype(d, u16::from_be_bytes([h[6], h[7]]), &llc[8..], depth)
    } else {
        Err(DropReason::NonIp)
    }
}

fn ppp<'a>(d: &mut Decoding<'a, '_>, p: &'a [u8], depth: u8) -> Found<'a> {
    let proto = p.get(..2).ok_or(DropReason::TruncatedLink)?;
    match u16::from_be_bytes([proto[0], proto[1]]) {
        0x0021 => ip(d, &p[2..], depth, Some(4)),
        0x0057 => ip(d, &p[2..], depth, Some(6)),
        _ => Err(DropReason::NonIp),
    }
}

fn ethertype<'a>(d: &mut Decoding<'a, '_>, mut et: u16, mut p: &'a [u8], depth: u8) -> Found<'a> {
    loop {
        match et {
            0x0800 => return ip(d, p, depth, Some(4)),
            0x86dd => return ip(d, p, depth, Some(6)),
            // 802.1Q, 802.1ad (QinQ) and the pre-standard 0x9100 tag.
            0x8100 | 0x88a8 | 0x9100 => {
                let h = p.get(..4).ok_or(DropReason::TruncatedLink)?;
                et = u16::from_be_bytes([h[2], h[3]]);
                p = &p[4..];
            }
            // MPLS unicast/multicast: pop labels to bottom of stack, then guess IP by version.
            0x8847 | 0x8848 => {
                loop {
                    let l = p.get(..4).ok_or(DropReason::TruncatedLink)?;
                    let bottom = l[2] & 0x01 != 0;
                    p = &p[4..];
                    if bottom {
                        break;
                    }
                }
                return match p.first().map(|b| b >> 4) {
                    Some(4) => ip(d, p, depth, Some(4)),
                    Some(6) => ip(d, p, depth, Some(6)),
                    // Pseudowire with control word + Ethernet is ambiguous; Zeek also stops.
                    Some(_) => Err(DropReason::UnsupportedEncapsulation),
                    None => Err(DropReason::TruncatedLink),
                };
            }
            // PPPoE session: 6-byte header, then PPP protocol.
            0x8864 => {
                let body = p.get(6..).ok_or(DropReason::TruncatedLink)?;
                return ppp(d, body, depth);
            }
            // Ethernet length field (802.3) with LLC/SNAP.
            len if len <= 1500 => return llc_snap(d, p, depth),
            _ => return Err(DropReason::NonIp),
        }
    }
}

#[inline]
fn v4_mapped(b: &[u8]) -> [u8; 16] {
    // Built as one integer, so it is stored whole: byte-wise stores read back as one
    // 16-byte value stall the load.
    let v4 = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (0xffff_u128 << 32 | u128::from(v4)).to_be_bytes()
}

/// Decodes an IP packet at `p`. `expect` is the version the link layer announced, if any.
fn ip<'a>(d: &mut Decoding<'a, '_>, p: &'a [u8], depth: u8, expect: Option<u8>) -> Found<'a> {
    let first = *p.first().ok_or(DropReason::TruncatedIp)?;
    let version = first >> 4;
    if let Some(e) = expect {
        if e != version {
            return Err(DropReason::BadIpVersion);
        }
    }
    match version {
        4 => ipv4(d, p, depth),
        6 => ipv6(d, p, depth),
        _ => Err(DropReason::BadIpVersion),
    }
}

fn ipv4<'a>(d: &mut Decoding<'a, '_>, p: &'a [u8], depth: u8) -> Found<'a> {
    let h = p.get(..20).ok_or(DropReason::TruncatedIp)?;
    let ihl = usize::from(h[0] & 0x0f) * 4;
    if ihl < 20 {
        return Err(DropReason::BadIpHeader);
    }
    let hdr = p.get(..ihl).ok_or(DropReason::TruncatedIp)?;
    let mut total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    let wire = p.len() + d.missing;
    if total == 0 {
        // TCP segmentation offload leaves the length zero; take it from the frame.
        total = wire;
    }
    if total < ihl {
        return Err(DropReason::BadIpHeader);
    }
    if wire < total {
        return Err(DropReason::TruncatedOnWire);
    }
    if d.cks.verify && checksum::ones_complement(0, hdr) != 0xffff {
        return Err(DropReason::BadIpChecksum);
    }
    let frag_field = u16::from_be_bytes([h[6], h[7]]);
    let more = frag_field & 0x2000 != 0;
    let offset = frag_field & 0x1fff;
    let id = u32::from(u16::from_be_bytes([h[4], h[5]]));
    let proto = h[9];
    let ttl = h[8];
    let src = v4_mapped(&h[12..16]);
    let dst = v4_mapped(&h[16..20]);
    // Captured IP payload, without Ethernet padding.
    let body = &p[ihl..p.len().min(total)];
    let body_len = (total - ihl) as u32;
    let frag = if offset != 0 {
        Fragment::Later {
            id,
            bytes: body_len,
        }
    } else if more {
        Fragment::First { id }
    } else {
        Fragment::None
    };
    *d.out = Packet::ip(src, dst, false, proto, ttl, total as u32, frag);
    transport(d, body, body_len, depth)
}

fn ipv6<'a>(d: &mut Decoding<'a, '_>, p: &'a [u8], depth: u8) -> Found<'a> {
    let h = p.get(..40).ok_or(DropReason::TruncatedIp)?;
    let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let wire = p.len() + d.missing;
    if wire < 40 + plen {
        return Err(DropReason::TruncatedOnWire);
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    let mut dst = [0u8; 16];
    dst.copy_from_slice(&h[24..40]);
    let end = p.len().min(40 + plen);
    let mut next = h[6];
    let mut off = 40usize;
    let mut frag = Fragment::None;
    let mut ip_len = (40 + plen) as u32;
    // Walk extension headers: hop-by-hop 0, routing 43, fragment 44, destination 60,
    // mobility 135, HIP 139, shim6 140; AH 51 uses 4-byte units.
    loop {
        match next {
            0 | 43 | 60 | 135 | 139 | 140 => {
                let e = p.get(off..off + 2).ok_or(DropReason::BadIpv6Extension)?;
                let len = (usize::from(e[1]) + 1) * 8;
                if off + len > end {
                    return Err(DropReason::BadIpv6Extension);
                }
                next = e[0];
                off += len;
            }
            51 => {
                let e = p.get(off..off + 2).ok_or(DropReason::BadIpv6Extension)?;
                let len = (usize::from(e[1]) + 2) * 4;
                if off + len > end {
                    return Err(DropReason::BadIpv6Extension);
                }
                next = e[0];
                off += len;
            }
            44 => {
                if off + 8 > end {
                    return Err(DropReason::BadIpv6Extension);
                }
                let e = p.get(off..off + 8).ok_or(DropReason::BadIpv6Extension)?;
                let fo = u16::from_be_bytes([e[2], e[3]]);
                let id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
                next = e[0];
                off += 8;
                // The reassembled packet has no fragment header.
                ip_len -= 8;
                if fo & 0xfff8 != 0 {
                    frag = Fragment::Later {
                        id,
                        bytes: (40 + plen - off) as u32,
                    };
                    break;
                } else if fo & 1 != 0 {
                    frag = Fragment::First { id };
                }
                // An atomic fragment (offset 0, no more) is a whole packet.
            }
            _ => break,
        }
    }
    let body = p.get(off..end).unwrap_or(&[]);
    let body_len = (40 + plen).saturating_sub(off) as u32;
    *d.out = Packet::ip(src, dst, true, next, h[7], ip_len, frag);
    transport(d, body, body_len, depth)
}

/// ICMPv4 type → (counterpart, one-way), as Zeek pairs requests with replies.
fn icmp4_counterpart(t: u8, code: u8) -> u16 {
    u16::from(match t {
        8 => 0,
        0 => 8,
        13 => 14,
        14 => 13,
        15 => 16,
        16 => 15,
        10 => 9,
        9 => 10,
        17 => 18,
        18 => 17,
        _ => code,
    })
}

fn icmp6_counterpart(t: u8, code: u8) -> u16 {
    u16::from(match t {
        128 => 129,
        129 => 128,
        133 => 134,
        134 => 133,
        135 => 136,
        136 => 135,
        130 => 131,
        131 => 130,
        139 => 140,
        140 => 139,
        144 => 145,
        145 => 144,
        _ => code,
    })
}

/// Reads the TCP header at the start of `body` (the IP payload, `body_len` bytes by the IP
/// header) into `pkt`, verifying the checksum when `verify`; `None` when the header is cut
/// short or its data offset is impossible. Both the one-pass and the general path use it.
#[inline(always)]
fn tcp<'a>(pkt: &mut Packet<'a>, body: &'a [u8], body_len: u32, verify: bool) -> Option<()> {
    let h = body.first_chunk::<20>()?;
    let off = usize::from(h[12] >> 4) * 4;
    if off < 20 || off as u32 > body_len || body.len() < off {
        return None;
    }
    pkt.sport = u16::from_be_bytes([h[0], h[1]]);
    pkt.dport = u16::from_be_bytes([h[2], h[3]]);
    pkt.seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
    pkt.ack = u32::from_be_bytes([h[8], h[9], h[10], h[11]]);
    pkt.tcp_flags = h[13];
    pkt.payload_len = body_len - off as u32;
    pkt.payload = &body[off..];
    if verify {
        pkt.bad_checksum = !checksum::transport_ok(pkt, ip_proto::TCP, body);
    }
    Some(())
}

/// The transport header of the IP packet already written, whose payload is `body`.
fn transport<'a>(d: &mut Decoding<'a, '_>, body: &'a [u8], body_len: u32, depth: u8) -> Found<'a> {
    let pkt = &mut *d.out;
    if matches!(pkt.frag, Fragment::Later { .. }) {
        return Ok(None);
    }
    // Checksums cover the whole datagram: only verifiable when fully captured and unfragmented.
    let whole = body.len() as u32 == body_len && pkt.frag == Fragment::None;
    let verify = d.cks.verify && whole && !d.cks.skip_for(&pkt.src);
    match pkt.proto {
        ip_proto::TCP => {
            tcp(pkt, body, body_len, verify).ok_or(DropReason::TruncatedTransport)?;
            Ok(None)
        }
        ip_proto::UDP | ip_proto::UDPLITE => {
            // UDP and UDP-Lite share the header layout.
            let h = body.get(..8).ok_or(DropReason::TruncatedTransport)?;
            pkt.sport = u16::from_be_bytes([h[0], h[1]]);
            pkt.dport = u16::from_be_bytes([h[2], h[3]]);
            pkt.payload_len = body_len - 8;
            pkt.payload = &body[8..];
            let udp_ck = u16::from_be_bytes([h[6], h[7]]);
            // A zero UDP checksum over IPv4 means "none".
            if verify && pkt.proto == ip_proto::UDP && (udp_ck != 0 || pkt.v6) {
                pkt.bad_checksum = !checksum::transport_ok(pkt, ip_proto::UDP, body);
            }
            Ok(if pkt.bad_checksum {
                None
            } else {
                udp_tunnel(pkt)
            })
        }
        ip_proto::ICMP | ip_proto::ICMPV6 => {
            let h = body.get(..4).ok_or(DropReason::TruncatedTransport)?;
            let (t, code) = (h[0], h[1]);
            pkt.sport = u16::from(t);
            pkt.dport = if pkt.proto == ip_proto::ICMP {
                icmp4_counterpart(t, code)
            } else {
                icmp6_counterpart(t, code)
            };
            pkt.payload_len = body_len.saturating_sub(8).min(body_len);
            pkt.payload = body.get(8..).unwrap_or(&[]);
            if verify {
                pkt.bad_checksum = !checksum::transport_ok(pkt, pkt.proto, body);
            }
            Ok(None)
        }
        // GRE: decapsulate; the outer GRE packet is not a connection of its own.
        47 => gre(d, body, depth),
        // IP-in-IP (4) and IPv6-in-IP (41): the inner packet is the connection.
        4 => ip(d, body, depth + 1, Some(4)),
        41 => ip(d, body, depth + 1, Some(6)),
        _ => {
            pkt.payload_len = body_len;
            pkt.payload = body;
            Ok(None)
        }
    }
}

/// Teredo (RFC 4380): IPv6 in UDP port 3544, optionally behind an authentication and an
/// origin-indication header. Only a well-formed IPv6 packet counts, so ordinary traffic on
/// the port is left alone.
fn teredo<'a>(mut p: &'a [u8]) -> Option<Inner<'a>> {
    if p.starts_with(&[0, 1]) {
        let id_len = usize::from(*p.get(2)?);
        let au_len = usize::from(*p.get(3)?);
        p = p.get(4 + id_len + au_len + 9..)?;
    }
    if p.starts_with(&[0, 0]) {
        p = p.get(8..)?;
    }
    let h = p.get(..40)?;
    let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    (h[0] >> 4 == 6 && 40 + plen == p.len()).then_some(Inner {
        link: LinkType::Raw,
        data: p,
    })
}

fn udp_tunnel<'a>(pkt: &Packet<'a>) -> Option<Inner<'a>> {
    if pkt.sport == TEREDO_PORT || pkt.dport == TEREDO_PORT {
        return teredo(pkt.payload);
    }
    match pkt.dport {
        VXLAN_PORT => {
            let h = pkt.payload.get(..8)?;
            // The I flag says the VNI is valid; anything else is not VXLAN.
            if h[0] & 0x08 == 0 {
                return None;
            }
            Some(Inner {
                link: LinkType::Ethernet,
                data: &pkt.payload[8..],
            })
        }
        GENEVE_PORT => {
            let h = pkt.payload.get(..8)?;
            let opt_len = usize::from(h[0] & 0x3f) * 4;
            let proto = u16::from_be_bytes([h[2], h[3]]);
            let data = pkt.payload.get(8 + opt_len..)?;
            let link = match proto {
                0x6558 => LinkType::Ethernet,
                0x0800 | 0x86dd => LinkType::Raw,
                _ => return None,
            };
            Some(Inner { link, data })
        }
        _ => None,
    }
}

/// A GRE payload: the packet it carries is written over the outer one.
fn gre<'a>(d: &mut Decoding<'a, '_>, b: &'a [u8], depth: u8) -> Found<'a> {
    let h = b.get(..4).ok_or(DropReason::TruncatedTransport)?;
    let flags = u16::from_be_bytes([h[0], h[1]]);
    let version = flags & 0x7;
    let proto = u16::from_be_bytes([h[2], h[3]]);
    let mut off = 4;
    if version == 0 {
        if flags & 0x8000 != 0 {
            off += 4; // checksum + reserved
        }
        if flags & 0x2000 != 0 {
            off += 4; // key
        }
        if flags & 0x1000 != 0 {
            off += 4; // sequence
        }
    } else if version == 1 {
        // Enhanced GRE (PPTP): key always present, sequence and ack optional.
        off += 4;
        if flags & 0x1000 != 0 {
            off += 4;
        }
        if flags & 0x0080 != 0 {
            off += 4;
        }
    } else {
        return Err(DropReason::UnsupportedEncapsulation);
    }
    let inner = b.get(off..).ok_or(DropReason::TruncatedTransport)?;
    let depth = depth + 1;
    match proto {
        0x0800 => ip(d, inner, depth, Some(4)),
        0x86dd => ip(d, inner, depth, Some(6)),
        0x6558 => decode_link(d, LinkType::Ethernet, inner, depth),
        // ERSPAN type II: 8-byte header, then the mirrored Ethernet frame.
        0x88be => {
            let e = inner.get(8..).ok_or(DropReason::TruncatedTransport)?;
            decode_link(d, LinkType::Ethernet, e, depth)
        }
        // ERSPAN type III: 12-byte header, plus 8 bytes of platform subheader if O is set.
        0x22eb => {
            let h = inner.get(..12).ok_or(DropReason::TruncatedTransport)?;
            let extra = if h[11] & 0x01 != 0 { 8 } else { 0 };
            let e = inner
                .get(12 + extra..)
                .ok_or(DropReason::TruncatedTransport)?;
            decode_link(d, LinkType::Ethernet, e, depth)
        }
        0x880b => {
            let mut p = inner;
            if p.first() == Some(&0xff) && p.get(1) == Some(&0x03) {
                p = &p[2..];
            }
            // PPP protocol field may be compressed to one byte.
            match p.first() {
                Some(0x21) => ip(d, &p[1..], depth, Some(4)),
                Some(0x57) => ip(d, &p[1..], depth, Some(6)),
                _ => ppp(d, p, depth),
            }
        }
        _ => Err(DropReason::UnsupportedEncapsulation),
    }
}

/// Decodes the inner frame of a UDP tunnel (VXLAN, Geneve) into `out`.
pub fn decode_inner<'a>(
    inner: Inner<'a>,
    missing: usize,
    cks: &ChecksumSettings,
    out: &mut Packet<'a>,
) -> Found<'a> {
    decode_link(
        &mut Decoding { missing, cks, out },
        inner.link,
        inner.data,
        1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame's packet and inner frame, decoded into a fresh packet.
    fn decode<'a>(
        link: LinkType,
        data: &'a [u8],
        wire_len: usize,
        cks: &ChecksumSettings,
    ) -> Result<(Packet<'a>, Option<Inner<'a>>), DropReason> {
        let mut pkt = Packet::default();
        let inner = decode_into(link, data, wire_len, cks, &mut pkt)?;
        Ok((pkt, inner))
    }

    fn eth_ipv4_tcp(flags: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 14];
        f[12] = 0x08;
        let total = 20 + 20 + payload.len();
        let mut ip = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0x40,
            0,
            64,
            6,
            0,
            0,
            192,
            0,
            2,
            1,
            198,
            51,
            100,
            2,
        ];
        let c = !checksum::ones_complement(0, &ip);
        ip[10..12].copy_from_slice(&c.to_be_bytes());
        f.extend_from_slice(&ip);
        let mut tcp = vec![
            0x30, 0x39, 0x01, 0xf6, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff,
        ];
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(payload);
        f.extend_from_slice(&tcp);
        f
    }

    #[test]
    fn ethernet_ipv4_tcp() {
        let f = eth_ipv4_tcp(0x02, b"hi");
        let (p, inner) = decode(
            LinkType::Ethernet,
            &f,
            f.len(),
            &ChecksumSettings::default(),
        )
        .unwrap();
        assert!(inner.is_none());
        assert_eq!((p.sport, p.dport, p.proto), (12345, 502, 6));
        assert_eq!(p.ip_len, 42);
        assert_eq!(p.payload, b"hi");
        assert_eq!(p.tcp_flags, 0x02);
    }

    #[test]
    fn truncated_on_wire_is_dropped_but_snaplen_is_not() {
        let f = eth_ipv4_tcp(0x10, &[0u8; 100]);
        let cks = ChecksumSettings::default();
        // Snap length cut: captured less than the wire carried. Still a packet.
        let (p, _) = decode(LinkType::Ethernet, &f[..60], f.len(), &cks).unwrap();
        assert_eq!(p.ip_len, 140);
        assert_eq!(p.payload_len, 100);
        // Wire shorter than the IP header claims: truncated.
        assert_eq!(
            decode(LinkType::Ethernet, &f[..60], 60, &cks).unwrap_err(),
            DropReason::TruncatedOnWire
        );
    }

    #[test]
    fn every_prefix_of_a_frame_decodes_or_drops_without_panic() {
        let f = eth_ipv4_tcp(0x18, b"payload");
        let cks = ChecksumSettings {
            verify: true,
            ignore_src: vec![],
        };
        for n in 0..f.len() {
            let _ = decode(LinkType::Ethernet, &f[..n], n, &cks);
            let _ = decode(LinkType::Ethernet, &f[..n], f.len(), &cks);
            for link in [
                LinkType::Raw,
                LinkType::Null,
                LinkType::LinuxSll,
                LinkType::LinuxSll2,
                LinkType::Fddi,
                LinkType::Ppp,
            ] {
                let _ = decode(link, &f[..n], n, &cks);
            }
        }
    }

    /// Regression: a fragment header that ends past the IPv6 payload length (but inside the
    /// captured bytes, e.g. Ethernet padding) must be a drop, not an arithmetic underflow.
    #[test]
    fn ipv6_fragment_header_past_payload_length_is_dropped() {
        let mut p = vec![0x60, 0, 0, 0, 0, 4, 44, 64];
        p.extend_from_slice(&[0u8; 32]);
        p.extend_from_slice(&[6, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0]);
        let r = decode(LinkType::Raw, &p, p.len(), &ChecksumSettings::default());
        assert_eq!(r.unwrap_err(), DropReason::BadIpv6Extension);
    }

    /// The Ethernet/IPv4 fast path decides every frame exactly as the general path does.
    #[test]
    fn fast_path_agrees_with_the_general_path() {
        let tcp = eth_ipv4_tcp(0x18, b"some payload bytes");
        let mut udp = eth_ipv4_tcp(0, b"");
        udp[14 + 9] = 17;
        udp.truncate(14 + 20);
        udp.extend_from_slice(&[0x30, 0x39, 0x12, 0x35, 0, 12, 0xab, 0xcd, 1, 2, 3, 4]);
        udp[14 + 3] = 32;
        let verify = ChecksumSettings {
            verify: true,
            ignore_src: vec![],
        };
        let ignore_some = ChecksumSettings {
            verify: true,
            ignore_src: vec![(u128::from_be_bytes(v4_mapped(&[192, 0, 2, 0])), !0u128 << 8)],
        };
        let plain = ChecksumSettings::default();
        let mut pkt = Packet::default();
        assert!(ethernet_ipv4_fast(&tcp, 0, &plain, &mut pkt).is_some());
        assert!(ethernet_ipv4_fast(&udp, 0, &plain, &mut pkt).is_some());
        let values = [
            0u8, 1, 4, 5, 6, 8, 0x11, 0x12, 0x20, 0x3f, 0x40, 0x45, 0x46, 0x50, 0xb5, 0xff,
        ];
        for base in [&tcp, &udp] {
            for pos in 0..base.len() {
                for v in values {
                    let mut f = base.clone();
                    f[pos] = v;
                    // One packet written over for every cut, wire length and setting below:
                    // nothing of an earlier decode may show through.
                    let mut reused = Packet::default();
                    for cut in [f.len(), f.len() - 1, 14 + 20 + 4, 14 + 19, 13] {
                        let d = &f[..cut.min(f.len())];
                        for wire in [d.len(), d.len() + 7, f.len()] {
                            for cks in [&ChecksumSettings::default(), &verify, &ignore_some] {
                                let missing = wire.saturating_sub(d.len());
                                let mut g = Packet::default();
                                let mut general = Decoding {
                                    missing,
                                    cks,
                                    out: &mut g,
                                };
                                let general = decode_link(&mut general, LinkType::Ethernet, d, 0)
                                    .map(|inner| (g, inner));
                                let fast = decode(LinkType::Ethernet, d, wire, cks);
                                assert_eq!(
                                    format!("{fast:?}"),
                                    format!("{general:?}"),
                                    "byte {pos} = {v:#x}, {cut} captured, {wire} on the wire"
                                );
                                let into =
                                    decode_into(LinkType::Ethernet, d, wire, cks, &mut reused)
                                        .map(|inner| (reused, inner));
                                assert_eq!(
                                    format!("{into:?}"),
                                    format!("{general:?}"),
                                    "into a used packet: byte {pos} = {v:#x}, {cut} captured"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The IPv4 TTL and the IPv6 hop limit reach the packet on the one-pass path, the
    /// general path (a VLAN tag, IP options) and through IP-in-IP, where the inner header's
    /// counts.
    #[test]
    fn the_ttl_or_hop_limit_is_read_on_every_path() {
        let cks = ChecksumSettings::default();
        let mut f = eth_ipv4_tcp(0x02, b"");
        f[14 + 8] = 243;
        let mut pkt = Packet::default();
        assert!(ethernet_ipv4_fast(&f, 0, &cks, &mut pkt).is_some());
        assert_eq!(pkt.ttl, 243);
        let (p, _) = decode(LinkType::Ethernet, &f, f.len(), &cks).unwrap();
        assert_eq!(p.ttl, 243);
        // Behind an 802.1Q tag: the general path.
        let vlan = |f: &[u8]| {
            let mut q = f[..12].to_vec();
            q.extend_from_slice(&[0x81, 0x00, 0, 10]);
            q.extend_from_slice(&f[12..]);
            q
        };
        let q = vlan(&f);
        assert!(ethernet_ipv4_fast(&q, 0, &cks, &mut pkt).is_none());
        let (p, _) = decode(LinkType::Ethernet, &q, q.len(), &cks).unwrap();
        assert_eq!((p.ttl, p.dport), (243, 502));
        // With four bytes of IP options (NOPs): the general path.
        let mut o = f[..14 + 20].to_vec();
        o[14] = 0x46;
        o[14 + 3] += 4;
        o.extend_from_slice(&[1, 1, 1, 1]);
        o.extend_from_slice(&f[14 + 20..]);
        let (p, _) = decode(LinkType::Ethernet, &o, o.len(), &cks).unwrap();
        assert_eq!((p.ttl, p.dport), (243, 502));
        // IPv6: the hop limit, plain and behind a VLAN tag.
        let seg = &f[14 + 20..];
        let mut v6 = f[..12].to_vec();
        v6.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, seg.len() as u8, 6, 57]);
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v6.extend_from_slice(&[0; 11]);
        v6.push(1);
        v6.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        v6.extend_from_slice(&[0; 11]);
        v6.push(2);
        v6.extend_from_slice(seg);
        for frame in [v6.clone(), vlan(&v6)] {
            let (p, _) = decode(LinkType::Ethernet, &frame, frame.len(), &cks).unwrap();
            assert!(p.v6);
            assert_eq!((p.ttl, p.dport, p.tcp_flags), (57, 502, 0x02));
        }
        // IP-in-IP: the inner packet is the connection, and its TTL the packet's.
        let mut outer = f[..14 + 20].to_vec();
        outer[14 + 8] = 9;
        outer[14 + 9] = 4;
        let inner_len = f.len() - 14;
        let total = (20 + inner_len) as u16;
        outer[14 + 2..14 + 4].copy_from_slice(&total.to_be_bytes());
        outer.extend_from_slice(&f[14..]);
        let (p, _) = decode(LinkType::Ethernet, &outer, outer.len(), &cks).unwrap();
        assert_eq!((p.ttl, p.proto, p.dport), (243, 6, 502));
    }

    #[test]
    fn vlan_and_qinq_are_followed() {
        let f = eth_ipv4_tcp(0x02, b"");
        let mut q = f[..12].to_vec();
        q.extend_from_slice(&[0x88, 0xa8, 0, 10, 0x81, 0x00, 0, 20]);
        q.extend_from_slice(&f[12..]);
        let (p, _) = decode(
            LinkType::Ethernet,
            &q,
            q.len(),
            &ChecksumSettings::default(),
        )
        .unwrap();
        assert_eq!(p.dport, 502);
    }
}
