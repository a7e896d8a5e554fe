//! Internet checksums (RFC 1071) for IPv4 headers and TCP/UDP/ICMP segments.

use crate::decode::Packet;
use normwatch_model::ip_proto;

/// Folded one's-complement sum of `data`, starting from `init`. A correct header or segment
/// (checksum field included) sums to 0xffff.
#[inline]
pub fn ones_complement(init: u32, data: &[u8]) -> u16 {
    let mut sum = u64::from(init);
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        // Summing 32-bit halves into a 64-bit accumulator defers the carries.
        sum += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
        sum += u64::from(u32::from_be_bytes([c[4], c[5], c[6], c[7]]));
    }
    let mut rest = chunks.remainder();
    while rest.len() >= 2 {
        sum += u64::from(u16::from_be_bytes([rest[0], rest[1]]));
        rest = &rest[2..];
    }
    if let [b] = rest {
        sum += u64::from(*b) << 8;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Whether the transport checksum of `segment` (header + payload, fully captured) is right.
/// ICMPv4 has no pseudo-header; TCP, UDP and ICMPv6 do.
pub fn transport_ok(pkt: &Packet<'_>, proto: u8, segment: &[u8]) -> bool {
    let len = segment.len() as u32;
    let pseudo = if proto == ip_proto::ICMP {
        0
    } else if pkt.v6 {
        let mut s = u32::from(ones_complement(0, &pkt.src));
        s += u32::from(ones_complement(0, &pkt.dst));
        s + (len >> 16) + (len & 0xffff) + u32::from(proto)
    } else {
        let mut s = u32::from(ones_complement(0, &pkt.src[12..16]));
        s += u32::from(ones_complement(0, &pkt.dst[12..16]));
        s + len + u32::from(proto)
    };
    ones_complement(pseudo, segment) == 0xffff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // The worked example of RFC 1071 section 3: sum 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement(0, &data), 0xddf2);
    }

    #[test]
    fn odd_length_pads_with_zero() {
        assert_eq!(ones_complement(0, &[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
    }
}
