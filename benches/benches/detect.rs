//! Detector core throughput on a realistic mix, and its memory per tracked asset and source.
//!
//! The mix: 2 000 protected assets (web, DNS and control servers, a few /24 operator
//! prefixes), benign traffic to all of them (completed TCP connections to their service
//! ports, answered DNS), and attacks under way on a few: a spoofed SYN flood (one record per
//! spoofed source), DNS reflection (unsolicited answers from port 53) and a carpet bombing of
//! a /24. Records come in batches of one asset each, as the flow topic is keyed by asset, in
//! event-time order, 1.5 M records per pass (about 35 % attack records).
//!
//! Memory is counted by the detector itself (structure sizes, hash tables as allocated):
//! what a tracked asset costs, and what each new source of a spoofed flood adds (the table
//! that names attackers plus the scan rule's table), beside the figures from the structure
//! sizes alone.

#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use normwatch_config::norms::{parse_norms, NormCatalogue};
use normwatch_detect::{Detector, Settings};
use normwatch_model::{
    Alert, AlertState, Asset, AssetId, AssetIndex, ConnState, DirStats, EndReason, FlowRecord,
    Rates, Role, Sector, TcpFlags, Thresholds,
};
use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

const NS: u64 = 1_000_000_000;
const ASSETS: u32 = 2_000;
const BATCH: usize = 256;

fn norms() -> NormCatalogue {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/norms.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{e}"));
    parse_norms(&text, &path).unwrap_or_else(|e| panic!("{e:?}"))
}

fn v4(n: u32) -> IpAddr {
    IpAddr::from(n.to_be_bytes())
}

/// Asset `i`: 10.(i/256).(i%256).0/28 for most, a /24 for every hundredth.
fn assets() -> Vec<Asset> {
    (0..ASSETS)
        .map(|i| {
            let wide = i % 100 == 0;
            let net = 0x0A00_0000 + (i << 8);
            Asset {
                id: AssetId(Arc::from(format!("asset-{i}"))),
                name: format!("asset {i}"),
                operator: "operator".into(),
                sector: Sector::ALL[i as usize % Sector::ALL.len()],
                service: "a public service".into(),
                cidrs: vec![format!("{}/{}", v4(net), if wide { 24 } else { 28 })
                    .parse()
                    .unwrap()],
                roles: if i % 10 == 3 {
                    vec![Role::HoldsIp]
                } else {
                    vec![]
                },
                service_ports: vec![443, 53],
                thresholds: Thresholds {
                    total: Rates {
                        pps: Some(20_000),
                        bps: Some(1_000_000_000),
                        new_flows_per_s: Some(200),
                    },
                    ..Thresholds::default()
                },
                allow: vec![],
            }
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn record(
    index: &AssetIndex,
    proto: u8,
    orig: (IpAddr, u16),
    resp: (IpAddr, u16),
    ns: u64,
    o: DirStats,
    r: DirStats,
    state: ConnState,
) -> FlowRecord {
    FlowRecord {
        sensor_id: Arc::from("bench"),
        flow_id: ns,
        orig_addr: orig.0,
        orig_port: orig.1,
        resp_addr: resp.0,
        resp_port: resp.1,
        ip_proto: proto,
        first_ns: ns.saturating_sub(200_000_000),
        last_ns: ns,
        orig: o,
        resp: r,
        conn_state: state,
        asset: index.match_flow(orig.0, resp.0),
        ics: None,
        end_reason: EndReason::TcpClosed,
    }
}

fn tcp(pkts: u64, bytes: u64, payload: u64, flags: u8) -> DirStats {
    DirStats {
        pkts,
        ip_bytes: bytes,
        payload_bytes: payload,
        tcp_flags: TcpFlags(flags),
    }
}

/// A deterministic generator (no dependency needed for a benchmark's mix).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// The mix, as batches of one asset's records each.
fn mix(index: &AssetIndex, secs: u64) -> Vec<Vec<FlowRecord>> {
    let (s, a, p, f) = (TcpFlags::SYN, TcpFlags::ACK, TcpFlags::PSH, TcpFlags::FIN);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut batches = Vec::new();
    let t0 = 1_700_000_000 * NS;
    for sec in 0..secs {
        let mut per_asset: Vec<Vec<FlowRecord>> = vec![Vec::new(); ASSETS as usize];
        // Benign: ~450 records per asset-second in total over all assets (web and DNS).
        for _ in 0..(u64::from(ASSETS) * 3 / 2) {
            let i = (rng.next() % u64::from(ASSETS)) as u32;
            let host = v4(0x0A00_0000 + (i << 8) + 1 + (rng.next() % 14) as u32);
            let client = v4(0x5000_0000 + (rng.next() % 5_000_000) as u32);
            let ns = t0 + sec * NS + rng.next() % NS;
            let rec = if rng.next().is_multiple_of(3) {
                record(
                    index,
                    17,
                    (client, 40_000 + (rng.next() % 20_000) as u16),
                    (host, 53),
                    ns,
                    tcp(1, 70, 42, 0),
                    tcp(1, 180, 152, 0),
                    ConnState::SF,
                )
            } else {
                record(
                    index,
                    6,
                    (client, 40_000 + (rng.next() % 20_000) as u16),
                    (host, 443),
                    ns,
                    tcp(12, 1_500, 700, s | a | p | f),
                    tcp(14, 12_000, 11_300, s | a | p | f),
                    ConnState::SF,
                )
            };
            let idx = index.lookup(rec.resp_addr).unwrap().0 as usize;
            per_asset[idx].push(rec);
        }
        // Spoofed SYN flood on asset 7: 1 200 spoofed sources a second.
        for _ in 0..1_200 {
            let src = v4(rng.next() as u32 | 0x0100_0000);
            let ns = t0 + sec * NS + rng.next() % NS;
            per_asset[7].push(record(
                index,
                6,
                (src, (rng.next() % 60_000) as u16 + 1024),
                (v4(0x0A00_0700 + 5), 443),
                ns,
                tcp(1, 60, 0, s),
                tcp(0, 0, 0, 0),
                ConnState::S0,
            ));
        }
        // DNS reflection on asset 42: 600 reflectors a second.
        for k in 0..600u32 {
            let refl = v4(0xC000_0000 + k * 7919 % 1_000_000);
            let ns = t0 + sec * NS + rng.next() % NS;
            per_asset[42].push(record(
                index,
                17,
                (refl, 53),
                (v4(0x0A00_2A00 + 3), 30_000),
                ns,
                tcp(3, 4_200, 4_100, 0),
                tcp(0, 0, 0, 0),
                ConnState::S0,
            ));
        }
        // Carpet bombing of the /24 asset 300: 400 flows a second spread over all its hosts.
        for k in 0..400u32 {
            let src = v4(0x6400_0000 + (rng.next() % 100_000) as u32);
            let ns = t0 + sec * NS + rng.next() % NS;
            per_asset[300].push(record(
                index,
                17,
                (src, 5_000),
                (v4(0x0A01_2C00 + (k % 254) + 1), 80),
                ns,
                tcp(60, 60_000, 58_000, 0),
                tcp(0, 0, 0, 0),
                ConnState::S0,
            ));
        }
        for mut v in per_asset {
            v.sort_by_key(|r| r.last_ns);
            for c in v.chunks(BATCH) {
                batches.push(c.to_vec());
            }
        }
    }
    batches
}

fn run(d: &mut Detector, batches: &[Vec<FlowRecord>], out: &mut Vec<Alert>) {
    for b in batches {
        d.process(b, out);
        out.clear();
    }
}

fn throughput(c: &mut Criterion) {
    let index = Arc::new(AssetIndex::new(assets()).unwrap());
    let norms = norms();
    let batches = mix(&index, 300);
    let n: u64 = batches.iter().map(|b| b.len() as u64).sum();
    let attack = batches
        .iter()
        .flatten()
        .filter(|r| r.conn_state == ConnState::S0)
        .count();
    eprintln!(
        "mix: {n} records in {} batches, {:.0}% attack records, {ASSETS} assets",
        batches.len(),
        attack as f64 * 100.0 / n as f64
    );
    // Alerts raised on the mix.
    let mut d = Detector::new(index.clone(), norms.clone(), Settings::default());
    let mut out = Vec::new();
    let mut kinds: Vec<String> = Vec::new();
    for b in &batches {
        d.process(b, &mut out);
        kinds.extend(
            out.drain(..)
                .filter(|a| a.state == AlertState::Open)
                .map(|a| format!("{}:{}", a.asset, a.kind.as_str())),
        );
    }
    kinds.sort();
    kinds.dedup();
    eprintln!("alerts opened: {kinds:?}");
    let m = d.heap_bytes();
    eprintln!(
        "after the mix: {} bytes for {} assets, {} named sources, {} followed scanners",
        m.bytes, m.assets, m.sources, m.scanners
    );

    let mut g = c.benchmark_group("detector");
    g.throughput(Throughput::Elements(n));
    g.sample_size(10);
    g.bench_function("mix_records", |b| {
        b.iter_batched_ref(
            || Detector::new(index.clone(), norms.clone(), Settings::default()),
            |d| {
                let mut out = Vec::with_capacity(64);
                run(d, black_box(&batches), &mut out);
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

fn memory(_c: &mut Criterion) {
    let index = Arc::new(AssetIndex::new(assets()).unwrap());
    let norms = norms();
    let mut d = Detector::new(index.clone(), norms, Settings::default());
    let f = d.footprint();
    eprintln!(
        "from structure sizes: {} bytes per tracked asset, {} per named source, {} per followed scanner, {} per address followed for carpet bombing",
        f.per_asset, f.per_source, f.per_scanner, f.per_spread_addr
    );
    let mut out = Vec::new();
    let t = 1_700_000_000 * NS;
    // One quiet record per asset: what tracking an asset costs.
    let first: Vec<FlowRecord> = (0..ASSETS)
        .map(|i| {
            record(
                &index,
                6,
                (v4(0x5000_0001), 40_000),
                (v4(0x0A00_0000 + (i << 8) + 1), 443),
                t,
                tcp(10, 1_000, 500, TcpFlags::SYN | TcpFlags::ACK),
                tcp(10, 9_000, 8_500, TcpFlags::SYN | TcpFlags::ACK),
                ConnState::SF,
            )
        })
        .collect();
    d.process(&first, &mut out);
    out.clear();
    let m0 = d.heap_bytes();
    eprintln!(
        "counted: {:.0} bytes per tracked asset ({} assets)",
        m0.bytes as f64 / m0.assets as f64,
        m0.assets
    );
    // A spoofed flood on asset 7: 4 000 new sources (each also followed by the scan rule).
    let flood: Vec<FlowRecord> = (0..4_000u32)
        .map(|k| {
            record(
                &index,
                6,
                (v4(0x0200_0000 + k * 613), 40_000),
                (v4(0x0A00_0705), 443),
                t + NS / 2 + u64::from(k),
                tcp(1, 60, 0, TcpFlags::SYN),
                tcp(0, 0, 0, 0),
                ConnState::S0,
            )
        })
        .collect();
    let mut out = Vec::new();
    d.process(&flood, &mut out);
    let m1 = d.heap_bytes();
    let open: usize = out.iter().map(|a| a.summary.len()).sum();
    eprintln!(
        "counted: {:.0} bytes per new source of a spoofed flood ({} sources named, {} followed by the scan rule; tables at their growth step, alert of {open} summary bytes included)",
        (m1.bytes - m0.bytes) as f64 / 4_000.0,
        m1.sources,
        m1.scanners
    );
    black_box(&d);
}

criterion_group!(benches, memory, throughput);
criterion_main!(benches);
