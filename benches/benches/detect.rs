//! Detector core throughput on a realistic mix, and its memory per tracked asset and source.
//!
//! The mix: 2 000 protected assets (web, DNS and control servers, a few /24 operator
//! prefixes), benign traffic to all of them (completed TCP connections to their service
//! ports, answered DNS), and attacks under way on a few: a spoofed SYN flood (one record per
//! spoofed source), DNS reflection (unsolicited answers from port 53) and a carpet bombing of
//! a /24: 61 000 records per event second, two thirds of them attack records (at high record
//! rates floods dominate: one record per spoofed source). Records come in wire batches of one
//! asset each (the flow topic is keyed by asset), in event-time order, encoded before timing;
//! each batch is decoded just before it is handed to the detector, as a consumer does, and
//! only the detector's work on it is timed.
//!
//! Memory is counted by the detector itself (structure sizes, hash tables as allocated):
//! what a tracked asset costs, and what each new source of a spoofed flood adds (the table
//! that names attackers plus the scan rule's table), beside the figures from the structure
//! sizes alone.

#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use normwatch_config::norms::{parse_norms, NormCatalogue};
use normwatch_detect::{Detector, Settings};
use normwatch_model::{
    Alert, AlertState, Asset, AssetId, AssetIndex, ConnState, DirStats, EndReason, FlowRecord,
    Rates, Role, Sector, TcpFlags, Thresholds,
};
use normwatch_transport::wire::{decode_batch, encode_batch};
use std::hint::black_box;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        export: None,
        prior: None,
        attempts: None,
        orig_ttl: None,
        resp_ttl: None,
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

/// Records per event second of the mix.
const BENIGN: u64 = 20_000;
const SYN_FLOOD: u64 = 25_000;
const REFLECTED: u64 = 8_000;
const CARPET: u64 = 8_000;
/// Event seconds per pass.
const SECS: u64 = 40;

/// One event second of the mix, as batches of one asset's records each.
fn second(index: &AssetIndex, rng: &mut Rng, sec: u64) -> Vec<Vec<FlowRecord>> {
    let (s, a, p, f) = (TcpFlags::SYN, TcpFlags::ACK, TcpFlags::PSH, TcpFlags::FIN);
    let t0 = 1_700_000_000 * NS;
    let mut per_asset: Vec<Vec<FlowRecord>> = vec![Vec::new(); ASSETS as usize];
    // Benign: web and DNS clients of every asset, answered.
    for _ in 0..BENIGN {
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
        per_asset[i as usize].push(rec);
    }
    // Spoofed SYN flood on asset 7: a new random source per record.
    for _ in 0..SYN_FLOOD {
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
    // DNS reflection on asset 42 from a pool of 5 000 open resolvers.
    for _ in 0..REFLECTED {
        let refl = v4(0xC000_0000 + (rng.next() % 5_000) as u32 * 7_919);
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
    // Carpet bombing of the /24 asset 300, spread over all its hosts.
    for k in 0..CARPET {
        let src = v4(0x6400_0000 + (rng.next() % 100_000) as u32);
        let ns = t0 + sec * NS + rng.next() % NS;
        per_asset[300].push(record(
            index,
            17,
            (src, 5_000),
            (v4(0x0A01_2C00 + (k % 254) as u32 + 1), 80),
            ns,
            tcp(3, 3_000, 2_900, 0),
            tcp(0, 0, 0, 0),
            ConnState::S0,
        ));
    }
    let mut batches = Vec::new();
    for mut v in per_asset {
        v.sort_by_key(|r| r.last_ns);
        for c in v.chunks(BATCH) {
            batches.push(c.to_vec());
        }
    }
    batches
}

/// The mix's records as a detector consumer receives them: one wire batch (the transport's
/// envelope, postcard records) per asset and at most `BATCH` records, in event-time order,
/// only the records `keep` selects. Encoded once, before anything is timed.
fn encoded(index: &AssetIndex, keep: impl Fn(&FlowRecord) -> bool) -> (Vec<Vec<u8>>, u64) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut wire = Vec::new();
    let mut n = 0;
    for sec in 0..SECS {
        for b in second(index, &mut rng, sec) {
            let b: Vec<FlowRecord> = b.into_iter().filter(|r| keep(r)).collect();
            if b.is_empty() {
                continue;
            }
            n += b.len() as u64;
            wire.push(encode_batch("bench", wire.len() as u64, &b).expect("encode"));
        }
    }
    (wire, n)
}

/// Runs the batches through a fresh detector; each batch is decoded just before it is handed
/// over, as a consumer does, and only the detector's `process` calls are timed. Returns the
/// time and the alerts opened.
fn pass(
    index: &Arc<AssetIndex>,
    norms: &NormCatalogue,
    wire: &[Vec<u8>],
) -> (Duration, Vec<String>) {
    let mut d = Detector::new(index.clone(), norms.clone(), Settings::default());
    let mut out = Vec::with_capacity(64);
    let mut kinds = Vec::new();
    let mut spent = Duration::ZERO;
    for w in wire {
        let batch = decode_batch::<FlowRecord>(w).expect("decode");
        let t = Instant::now();
        d.process(black_box(&batch.records), &mut out);
        spent += t.elapsed();
        kinds.extend(
            out.drain(..)
                .filter(|a: &Alert| a.state == AlertState::Open)
                .map(|a| format!("{}:{}", a.asset, a.kind.as_str())),
        );
    }
    (spent, kinds)
}

fn throughput(c: &mut Criterion) {
    let index = Arc::new(AssetIndex::new(assets()).unwrap());
    let norms = norms();
    let per_sec = BENIGN + SYN_FLOOD + REFLECTED + CARPET;
    let (mix, n) = encoded(&index, |_| true);
    let (spent, mut kinds) = pass(&index, &norms, &mix);
    kinds.sort();
    kinds.dedup();
    eprintln!(
        "mix: {n} records over {SECS} event seconds, {ASSETS} assets, {:.0}% attack records, {} wire batches; one pass: {:.1} M records/s",
        (per_sec - BENIGN) as f64 * 100.0 / per_sec as f64,
        mix.len(),
        n as f64 / spent.as_secs_f64() / 1e6
    );
    eprintln!("alerts opened: {kinds:?}");

    let mut g = c.benchmark_group("detector");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n));
    g.bench_function("mix_records", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| pass(&index, &norms, &mix).0).sum())
    });
    drop(mix);
    // The same detector over the attack records alone (floods in full batches).
    let (attack, n) = encoded(&index, |r| r.conn_state == ConnState::S0);
    g.throughput(Throughput::Elements(n));
    g.bench_function("attack_records", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| pass(&index, &norms, &attack).0).sum())
    });
    drop(attack);
    // And over the benign records alone (2 000 assets, ten records each a second).
    let (benign, n) = encoded(&index, |r| r.conn_state != ConnState::S0);
    g.throughput(Throughput::Elements(n));
    g.bench_function("benign_records", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| pass(&index, &norms, &benign).0).sum())
    });
    g.finish();
}

fn memory(_c: &mut Criterion) {
    let index = Arc::new(AssetIndex::new(assets()).unwrap());
    let norms = norms();
    let mut d = Detector::new(index.clone(), norms, Settings::default());
    let f = d.footprint();
    eprintln!(
        "from structure sizes: {} bytes per tracked asset ({} more with per-protocol thresholds or reflected traffic), {} per named source, {} per followed scanner, {} per address followed for carpet bombing",
        f.per_asset, f.per_asset_ext, f.per_source, f.per_scanner, f.per_spread_addr
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
    let held = (m1.sources + m1.scanners) - (m0.sources + m0.scanners);
    eprintln!(
        "counted: {:.0} bytes per source held after 4 000 new sources of a spoofed flood ({} named-source candidates, the bound; {} followed by the scan rule before the flood crossed its limit; tables at their growth step, the open alert included)",
        (m1.bytes - m0.bytes) as f64 / held.max(1) as f64,
        m1.sources,
        m1.scanners
    );
    black_box(&d);
}

criterion_group!(benches, memory, throughput);
criterion_main!(benches);
