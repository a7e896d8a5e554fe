//! One real capture rewritten into every supported framing and file flavour — Linux cooked
//! SLL and SLL2, BSD loopback, raw IP, nanosecond pcap, pcapng with microsecond and nanosecond
//! resolution — must give exactly the flows (and event times) of the original Ethernet file.

use normwatch_model::FlowRecord;
use normwatch_tests::{capture, config, flows_of};
use std::path::Path;

struct Rec {
    sec: u32,
    usec: u32,
    orig_len: u32,
    eth: Vec<u8>,
}

fn records(path: &Path) -> Vec<Rec> {
    let b = std::fs::read(path).unwrap();
    assert_eq!(
        &b[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "little-endian microsecond pcap"
    );
    let u32le = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    let mut out = Vec::new();
    let mut pos = 24;
    while pos + 16 <= b.len() {
        let caplen = u32le(pos + 8) as usize;
        out.push(Rec {
            sec: u32le(pos),
            usec: u32le(pos + 4),
            orig_len: u32le(pos + 12),
            eth: b[pos + 16..pos + 16 + caplen].to_vec(),
        });
        pos += 16 + caplen;
    }
    out
}

fn pcap(linktype: u32, nanos: bool, recs: &[(u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
    let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
    let mut f = Vec::new();
    f.extend_from_slice(&magic.to_le_bytes());
    f.extend_from_slice(&2u16.to_le_bytes());
    f.extend_from_slice(&4u16.to_le_bytes());
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_le_bytes());
    f.extend_from_slice(&linktype.to_le_bytes());
    for (sec, frac, orig, data) in recs {
        for v in [*sec, *frac, data.len() as u32, *orig] {
            f.extend_from_slice(&v.to_le_bytes());
        }
        f.extend_from_slice(data);
    }
    f
}

fn pcapng(linktype: u16, tsresol: u8, recs: &[(u64, u32, Vec<u8>)]) -> Vec<u8> {
    fn block(f: &mut Vec<u8>, kind: u32, body: &[u8]) {
        let len = 12 + body.len().div_ceil(4) * 4;
        f.extend_from_slice(&kind.to_le_bytes());
        f.extend_from_slice(&(len as u32).to_le_bytes());
        f.extend_from_slice(body);
        f.resize(f.len() + (len - 12 - body.len()), 0);
        f.extend_from_slice(&(len as u32).to_le_bytes());
    }
    let mut f = Vec::new();
    let mut shb = Vec::new();
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    block(&mut f, 0x0a0d_0d0a, &shb);
    let mut idb = Vec::new();
    idb.extend_from_slice(&linktype.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&0u32.to_le_bytes());
    // if_tsresol option, then end of options.
    idb.extend_from_slice(&9u16.to_le_bytes());
    idb.extend_from_slice(&1u16.to_le_bytes());
    idb.extend_from_slice(&[tsresol, 0, 0, 0]);
    idb.extend_from_slice(&[0, 0, 0, 0]);
    block(&mut f, 1, &idb);
    for (ts, orig, data) in recs {
        let mut epb = Vec::new();
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((ts >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(*ts as u32).to_le_bytes());
        epb.extend_from_slice(&(data.len() as u32).to_le_bytes());
        epb.extend_from_slice(&orig.to_le_bytes());
        epb.extend_from_slice(data);
        epb.resize(20 + data.len().div_ceil(4) * 4, 0);
        block(&mut f, 6, &epb);
    }
    f
}

fn run(dir: &tempfile::TempDir, name: &str, bytes: Vec<u8>) -> Vec<FlowRecord> {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    let (mut flows, stats) =
        flows_of(&p, config(false)).unwrap_or_else(|(_, e)| panic!("{name}: {e}"));
    assert_eq!(stats.drops.iter().sum::<u64>(), 0, "{name}: {stats:?}");
    flows.sort_by_key(|f| (f.first_ns, f.flow_id));
    flows
}

#[test]
fn every_framing_and_timestamp_flavour_gives_the_same_flows() {
    // Its IPv4 and IPv6 packets (ARP and 802.3 frames have no equivalent in some framings).
    let recs: Vec<Rec> = records(&capture("zeek/testing/btest/Traces/wikipedia.pcap"))
        .into_iter()
        .filter(|r| matches!(r.eth[12..14], [0x08, 0x00] | [0x86, 0xdd]))
        .collect();
    assert!(recs.len() > 100);
    let dir = tempfile::tempdir().unwrap();
    // Re-frame each packet: `head` replaces the 14-byte Ethernet header.
    let reframe = |head: &dyn Fn(&Rec) -> Vec<u8>| -> Vec<(u32, u32, u32, Vec<u8>)> {
        recs.iter()
            .map(|r| {
                let mut d = head(r);
                d.extend_from_slice(&r.eth[14..]);
                let orig = r.orig_len - 14 + (d.len() - (r.eth.len() - 14)) as u32;
                (r.sec, r.usec, orig, d)
            })
            .collect()
    };
    let sll = reframe(&|r| {
        let mut h = vec![0, 0, 0, 1, 0, 6];
        h.extend_from_slice(&r.eth[6..12]);
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&r.eth[12..14]);
        h
    });
    let sll2 = reframe(&|r| {
        let mut h = r.eth[12..14].to_vec();
        h.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6]);
        h.extend_from_slice(&r.eth[6..12]);
        h.extend_from_slice(&[0, 0]);
        h
    });
    // AF_INET 2; AF_INET6 as macOS writes it (30).
    let null = reframe(&|r| {
        let af: u32 = if r.eth[12] == 0x08 { 2 } else { 30 };
        af.to_le_bytes().to_vec()
    });
    let raw = reframe(&|_| Vec::new());
    let eth = reframe(&|r| r.eth[..14].to_vec());
    let nanos: Vec<_> = eth
        .iter()
        .map(|(s, u, o, d)| (*s, u * 1000, *o, d.clone()))
        .collect();
    let ng = |div: u64| -> Vec<(u64, u32, Vec<u8>)> {
        eth.iter()
            .map(|(s, u, o, d)| {
                (
                    (u64::from(*s) * 1_000_000 + u64::from(*u)) * 1000 / div,
                    *o,
                    d.clone(),
                )
            })
            .collect()
    };

    let want = run(&dir, "ethernet.pcap", pcap(1, false, &eth));
    assert!(want.len() >= 30);
    let variants: Vec<(&str, Vec<u8>)> = vec![
        ("sll.pcap", pcap(113, false, &sll)),
        ("sll2.pcap", pcap(276, false, &sll2)),
        ("null.pcap", pcap(0, false, &null)),
        ("raw.pcap", pcap(101, false, &raw)),
        ("nanosecond.pcap", pcap(1, true, &nanos)),
        ("usec.pcapng", pcapng(1, 6, &ng(1000))),
        ("nsec.pcapng", pcapng(1, 9, &ng(1))),
    ];
    for (name, bytes) in variants {
        let got = run(&dir, name, bytes);
        assert_eq!(got, want, "{name}");
    }
}
