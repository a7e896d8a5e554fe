//! The decoder's memory bound under hostile input: one sender from many ports, absurd
//! templates, data held for templates that never come, many senders and many sFlow agents.
//! What the decoder holds stays within the configured bytes, and an exporter whose records
//! are being used keeps its session through the flood.

use normwatch_flowexport::{Decoder, DecoderConfig, DropReason, Exported};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

const T0: u64 = 1_700_000_000;
const S: u64 = 1_000_000_000;

fn set(id: u16, body: &[u8]) -> Vec<u8> {
    let mut v = id.to_be_bytes().to_vec();
    v.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn template(tid: u16, fields: &[(u16, u16)]) -> Vec<u8> {
    let mut v = tid.to_be_bytes().to_vec();
    v.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    for (id, len) in fields {
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
    }
    v
}

/// src, dst, proto, pkts, bytes.
const FIELDS: [(u16, u16); 5] = [(8, 4), (12, 4), (4, 1), (2, 4), (1, 4)];

fn record(n: u8) -> Vec<u8> {
    let mut v = vec![198, 51, 100, n, 10, 0, 0, 1, 17];
    v.extend_from_slice(&1u32.to_be_bytes());
    v.extend_from_slice(&60u32.to_be_bytes());
    v
}

fn v9(seq: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let mut v = 9u16.to_be_bytes().to_vec();
    v.extend_from_slice(&(sets.len() as u16).to_be_bytes());
    v.extend_from_slice(&10_000u32.to_be_bytes());
    v.extend_from_slice(&(T0 as u32).to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    for s in sets {
        v.extend_from_slice(s);
    }
    v
}

fn sender(n: u32, port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::from(0x7f00_0000 | n)), port)
}

fn decode(d: &mut Decoder, from: SocketAddr, dgram: &[u8], now_ns: u64) -> Vec<Exported> {
    let mut out = Vec::new();
    let _ = d.decode(from, dgram, now_ns, &mut out);
    out
}

/// A template of `n` fields whose records are absurdly long and decode to nothing.
fn absurd(tid: u16, n: usize) -> Vec<u8> {
    template(tid, &vec![(1000, 4); n])
}

#[test]
fn one_sender_from_many_ports_is_one_session() {
    let mut d = Decoder::new(DecoderConfig::default());
    let t = v9(1, &[set(0, &template(300, &FIELDS))]);
    for port in 1000..4000 {
        decode(&mut d, sender(1, port), &t, T0 * S);
    }
    assert_eq!(d.sessions().0, 1);
}

#[test]
fn absurd_templates_stay_within_the_exporter_bound() {
    let cfg = DecoderConfig {
        exporter_bytes: 256 << 10,
        ..DecoderConfig::default()
    };
    let mut d = Decoder::new(cfg.clone());
    for tid in 256..(256 + 400) {
        let held = set(tid + 1000, &[0u8; 1200]);
        let dgram = v9(1, &[held, set(0, &absurd(tid, 500))]);
        decode(&mut d, sender(1, 9), &dgram, T0 * S);
        assert!(
            d.memory_bytes() <= cfg.exporter_bytes,
            "{}",
            d.memory_bytes()
        );
    }
    assert!(
        d.stats().dropped(DropReason::MemoryBound) > 0,
        "{:?}",
        d.stats()
    );
    assert!(d.stats().dropped(DropReason::MissingTemplate) > 0);
}

#[test]
fn a_flood_of_senders_does_not_lock_out_a_useful_exporter() {
    let cfg = DecoderConfig {
        max_sessions: 64,
        exporter_bytes: 128 << 10,
        total_bytes: 1 << 20,
        ..DecoderConfig::default()
    };
    let mut d = Decoder::new(cfg.clone());
    let real = sender(250, 2055);
    let out = decode(
        &mut d,
        real,
        &v9(1, &[set(0, &template(300, &FIELDS)), set(300, &record(1))]),
        T0 * S,
    );
    assert_eq!(out.len(), 1);
    let mut records = 1;
    for i in 0..20_000u32 {
        let now = T0 * S + u64::from(i) * 1_000_000;
        // Templates galore and data for templates that never come, each from a new address.
        let junk = v9(
            i,
            &[
                set(0, &absurd(400 + (i % 100) as u16, 300)),
                set(600, &[7u8; 1000]),
            ],
        );
        decode(&mut d, sender(1000 + i, 40_000), &junk, now);
        assert!(d.memory_bytes() <= cfg.total_bytes, "{}", d.memory_bytes());
        if i % 500 == 0 {
            // The real exporter sends data only: its template must still be known.
            let out = decode(&mut d, real, &v9(2 + i, &[set(300, &record(2))]), now);
            records += out.len();
        }
    }
    assert_eq!(records, 1 + 40);
    assert!(d.sessions().0 <= cfg.max_sessions);
    // An exporter that starts during the flood finds room too.
    let late = v9(1, &[set(0, &template(300, &FIELDS)), set(300, &record(3))]);
    let mut out = Vec::new();
    let r = d.decode(sender(251, 2055), &late, (T0 + 30) * S, &mut out);
    assert_eq!((r, out.len()), (Ok(()), 1), "{:?}", d.stats());
}

/// An sFlow v5 datagram from `agent` with one sample of a raw IPv4/UDP header.
fn sflow(agent: u32, sport: u16) -> Vec<u8> {
    let w = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_be_bytes());
    let [a, b] = sport.to_be_bytes();
    let pkt: Vec<u8> = vec![
        0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 198, 51, 100, 7, 10, 0, 0, 1, a, b, 0, 53, 0, 8,
        0, 0,
    ];
    let mut rec = Vec::new();
    for x in [11, 28, 0, pkt.len() as u32] {
        w(&mut rec, x);
    }
    rec.extend_from_slice(&pkt);
    let mut sample = Vec::new();
    for x in [1, 1, 1, 1000, 0, 1, 2, 1, 1, rec.len() as u32] {
        w(&mut sample, x);
    }
    sample.extend_from_slice(&rec);
    let mut v = Vec::new();
    for x in [5, 1, agent, 0, 1, 1000, 1, 1, sample.len() as u32] {
        w(&mut v, x);
    }
    v.extend_from_slice(&sample);
    v
}

#[test]
fn sflow_agents_share_the_total_and_idle_tables_are_freed() {
    let cfg = DecoderConfig {
        agent_bytes: 1 << 20,
        total_bytes: 4 << 20,
        max_sflow_tables: 1000,
        ..DecoderConfig::default()
    };
    let mut d = Decoder::new(cfg.clone());
    let mut out = Vec::new();
    for agent in 0..80u32 {
        for port in 0..200u16 {
            out.extend(decode(
                &mut d,
                sender(1, 6343),
                &sflow(0x0a00_0000 | agent, 1024 + port),
                T0 * S + u64::from(agent) * S,
            ));
            assert!(d.memory_bytes() <= cfg.total_bytes, "{}", d.memory_bytes());
        }
    }
    assert!(
        d.sessions().1 < 80,
        "the total cannot hold 80 agents' tables"
    );
    // Tables made room for were flushed: their flows came out.
    assert!(!out.is_empty());
    assert_eq!(d.stats().dropped(DropReason::MemoryBound), 0);
    let mut rest = Vec::new();
    d.tick(T0 * S + 400 * S, &mut rest);
    assert_eq!(d.sessions().1, 0, "idle, empty tables are freed");
    assert_eq!(d.memory_bytes(), 0);
    assert_eq!(out.len() + rest.len(), 80 * 200);
}
