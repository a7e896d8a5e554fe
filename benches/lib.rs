//! Benchmarks live in `benches/`; see `benches/sensor.rs` and `compare-flow-tools.sh`.
//!
//! This library holds what benchmarks and tests generate: [`SynFlood`], a random-source SYN
//! flood (every packet a new forged source), written as a classic pcap by
//! `cargo run --release -p normwatch-benches --example syn-flood-pcap`.

use std::io::{self, Write};
use std::net::Ipv4Addr;

/// A random-source SYN flood against one address and port: `packets` SYNs at `pps` a
/// second of event time from `start_ns`, each from a source address, port, TTL, IP id and
/// sequence number drawn from a fixed-seed generator, so the same arguments give the same
/// packets. Frames are Ethernet/IPv4/TCP, 60 bytes, with valid IP and TCP checksums.
#[derive(Clone, Debug)]
pub struct SynFlood {
    pub packets: u64,
    pub pps: u64,
    pub start_ns: u64,
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub seed: u64,
}

impl SynFlood {
    /// 1 M packets a second from 2023-11-14T22:13:20Z at 198.51.100.10:443.
    pub fn new(packets: u64, pps: u64) -> Self {
        SynFlood {
            packets,
            pps: pps.max(1),
            start_ns: 1_700_000_000_000_000_000,
            dst: Ipv4Addr::new(198, 51, 100, 10),
            dport: 443,
            seed: 0x5eed_f100d,
        }
    }

    /// The frames with their event times (ns since the epoch), in order.
    pub fn frames(&self) -> impl Iterator<Item = (u64, [u8; 60])> + '_ {
        let mut rng = self.seed | 1;
        let mut next = move || {
            // xorshift64*
            rng ^= rng >> 12;
            rng ^= rng << 25;
            rng ^= rng >> 27;
            rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        (0..self.packets).map(move |i| {
            let r = next();
            let src = (r >> 32) as u32;
            let sport = 1024 + (r as u16 % 64_000);
            let ttl = 32 + ((r >> 16) as u8 % 200);
            let id = (r >> 24) as u16;
            let seq = next() as u32;
            let ts = self.start_ns + i * 1_000_000_000 / self.pps;
            (
                ts,
                syn_frame(
                    Ipv4Addr::from(src),
                    sport,
                    self.dst,
                    self.dport,
                    ttl,
                    id,
                    seq,
                ),
            )
        })
    }

    /// Writes the flood as a classic pcap (nanosecond timestamps, Ethernet).
    pub fn write_pcap(&self, w: &mut impl Write) -> io::Result<()> {
        let mut head = Vec::with_capacity(24);
        head.extend_from_slice(&0xa1b2_3c4du32.to_le_bytes());
        head.extend_from_slice(&2u16.to_le_bytes());
        head.extend_from_slice(&4u16.to_le_bytes());
        head.extend_from_slice(&0i32.to_le_bytes());
        head.extend_from_slice(&0u32.to_le_bytes());
        head.extend_from_slice(&65_535u32.to_le_bytes());
        head.extend_from_slice(&1u32.to_le_bytes());
        w.write_all(&head)?;
        let mut rec = [0u8; 16 + 60];
        for (ts, frame) in self.frames() {
            rec[0..4].copy_from_slice(&((ts / 1_000_000_000) as u32).to_le_bytes());
            rec[4..8].copy_from_slice(&((ts % 1_000_000_000) as u32).to_le_bytes());
            rec[8..12].copy_from_slice(&60u32.to_le_bytes());
            rec[12..16].copy_from_slice(&60u32.to_le_bytes());
            rec[16..].copy_from_slice(&frame);
            w.write_all(&rec)?;
        }
        w.flush()
    }
}

/// One's-complement sum of 16-bit words.
fn sum16(mut acc: u32, b: &[u8]) -> u32 {
    for c in b.chunks(2) {
        acc += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// An Ethernet/IPv4/TCP SYN of 60 bytes (40 of IP, padded to Ethernet's minimum).
pub fn syn_frame(
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
    ttl: u8,
    id: u16,
    seq: u32,
) -> [u8; 60] {
    let mut f = [0u8; 60];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut f[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&40u16.to_be_bytes());
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip[8] = ttl;
    ip[9] = 6;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = fold(sum16(0, ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let tcp = &mut f[34..54];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 0x50;
    tcp[13] = 0x02;
    tcp[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    let mut pseudo = [0u8; 12];
    pseudo[0..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = 6;
    pseudo[10..12].copy_from_slice(&20u16.to_be_bytes());
    let c = fold(sum16(sum16(0, &pseudo), &f[34..54]));
    f[50..52].copy_from_slice(&c.to_be_bytes());
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use normwatch_sensor::decode::LinkType;
    use normwatch_sensor::{FlowConfig, FlowTable};

    #[test]
    fn the_flood_is_reproducible_valid_and_from_new_sources() {
        let flood = SynFlood::new(5_000, 1_000_000);
        let a: Vec<_> = flood.frames().collect();
        let b: Vec<_> = flood.frames().collect();
        assert_eq!(a, b);
        assert_eq!(a[4_999].0 - a[0].0, 4_999_000);
        // Checksums verified: every SYN counts, one flow per packet.
        let mut t = FlowTable::new(FlowConfig::default());
        let mut out = Vec::new();
        for (ts, f) in &a {
            t.process_frame(LinkType::Ethernet, f, f.len(), *ts, &mut out);
        }
        t.flush(&mut out);
        assert_eq!(t.stats().drops.iter().sum::<u64>(), 0);
        assert_eq!(out.len(), 5_000);
        let mut pcap = Vec::new();
        flood.write_pcap(&mut pcap).unwrap();
        assert_eq!(pcap.len(), 24 + 5_000 * 76);
    }
}
