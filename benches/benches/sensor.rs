//! Sensor hot path: decode + flow table over a real capture held in memory, and the
//! bytes each active flow costs in a synthetic million-flow table.
//!
//! The capture is taken from `$NORMWATCH_BENCH_PCAP` (default: the spoofed SYN flood in the
//! shared data: small packets, one flow per packet, the sensor's worst case).

#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use normwatch_sensor::capture::file::read_file;
use normwatch_sensor::decode::{self, LinkType};
use normwatch_sensor::{FlowConfig, FlowTable};
use std::hint::black_box;
use std::path::PathBuf;

struct Frames {
    link: Vec<LinkType>,
    ts: Vec<u64>,
    wire: Vec<usize>,
    data: Vec<Vec<u8>>,
}

fn load(path: &std::path::Path) -> Frames {
    let mut f = Frames {
        link: vec![],
        ts: vec![],
        wire: vec![],
        data: vec![],
    };
    read_file(path, |fr| {
        f.link.push(fr.link);
        f.ts.push(fr.ts_ns);
        f.wire.push(fr.wire_len);
        f.data.push(fr.data.to_vec());
    })
    .unwrap_or_else(|e| panic!("{e}"));
    f
}

fn bench_pcap() -> PathBuf {
    std::env::var_os("NORMWATCH_BENCH_PCAP")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/data/captures/packet-captures/pkt.TCP.synflood.spoofed.pcap")
        })
}

fn decode_and_flows(c: &mut Criterion) {
    let path = bench_pcap();
    if !path.exists() {
        eprintln!("skipping: {} not found", path.display());
        return;
    }
    let frames = load(&path);
    let n = frames.data.len() as u64;
    let bytes: u64 = frames.data.iter().map(|d| d.len() as u64).sum();
    eprintln!(
        "{}: {n} packets, {:.1} bytes/packet",
        path.display(),
        bytes as f64 / n as f64
    );
    let mut g = c.benchmark_group("sensor");
    g.throughput(Throughput::Elements(n));
    g.bench_function("decode", |b| {
        let cks = decode::ChecksumSettings::default();
        // As the flow table decodes: into one packet, written over frame after frame.
        let mut pkt = decode::Packet::default();
        b.iter(|| {
            let mut ok = 0u64;
            for i in 0..frames.data.len() {
                let (link, data, wire) = (frames.link[i], &frames.data[i], frames.wire[i]);
                if decode::decode_into(link, data, wire, &cks, &mut pkt).is_ok() {
                    ok += 1;
                }
                black_box(&pkt);
            }
            black_box(ok)
        })
    });
    for verify in [false, true] {
        let name = if verify {
            "decode+flows (checksums verified)"
        } else {
            "decode+flows"
        };
        g.bench_function(name, |b| {
            let mut out = Vec::with_capacity(1 << 16);
            // One table for all iterations, flushed after each pass: the steady state of a
            // running sensor, not the page faults of a new one.
            let mut cfg = FlowConfig::default();
            cfg.checksums.verify = verify;
            let mut t = FlowTable::new(cfg);
            b.iter(|| {
                for i in 0..frames.data.len() {
                    t.process_frame(
                        frames.link[i],
                        &frames.data[i],
                        frames.wire[i],
                        frames.ts[i],
                        &mut out,
                    );
                    out.clear();
                }
                t.flush(&mut out);
                black_box(out.len());
                out.clear();
            })
        });
    }
    g.finish();
}

/// Builds a minimal Ethernet/IPv4/TCP SYN frame from `src:sport` to a fixed server.
fn syn(src: u32, sport: u16) -> [u8; 54] {
    let mut f = [0u8; 54];
    f[12] = 0x08;
    f[14] = 0x45;
    f[17] = 40;
    f[22] = 64;
    f[23] = 6;
    f[26..30].copy_from_slice(&src.to_be_bytes());
    f[30..34].copy_from_slice(&[192, 0, 2, 10]);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&80u16.to_be_bytes());
    f[46] = 0x50;
    f[47] = 0x02;
    f
}

const FLOWS: u32 = 1_000_000;

/// A table holding a million flows, one SYN each.
fn table_of_a_million() -> FlowTable {
    let mut cfg = FlowConfig::default();
    cfg.checksums.verify = false;
    cfg.max_flows = FLOWS as usize;
    let mut t = FlowTable::new(cfg);
    let mut out = Vec::new();
    for i in 0..FLOWS {
        let f = syn(0x0a00_0000 + i, 1024 + (i % 50_000) as u16);
        t.process_frame(
            LinkType::Ethernet,
            &f,
            f.len(),
            1_000_000_000 + u64::from(i),
            &mut out,
        );
    }
    t
}

fn million_flows(c: &mut Criterion) {
    let t = table_of_a_million();
    assert_eq!(t.len(), FLOWS as usize);
    let per_flow = t.memory_bytes() as f64 / f64::from(FLOWS);
    println!(
        "memory: {} active flows, {:.1} bytes per active flow (slab + index)",
        t.len(),
        per_flow
    );
    drop(t);
    let mut g = c.benchmark_group("flow-table");
    g.throughput(Throughput::Elements(u64::from(FLOWS)));
    g.sample_size(10);
    g.bench_function("insert 1M new flows", |b| {
        b.iter(|| black_box(table_of_a_million().len()))
    });
    g.finish();
}

/// A random-source SYN flood (1 M SYNs at 1 M a second, every one from a new source) through
/// a flow table reporting every 100 ms, with every SYN a flow of its own and with the compact
/// path for one-packet attempts (`attempts_above`, the default 10 000 a second).
fn random_source_flood(c: &mut Criterion) {
    let flood = normwatch_benches::SynFlood::new(1_000_000, 1_000_000);
    let frames: Vec<_> = flood.frames().collect();
    let mut g = c.benchmark_group("syn-flood");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.sample_size(10);
    for (name, above) in [("every SYN a flow", None), ("attempts held", Some(10_000))] {
        let run = || {
            let mut t = FlowTable::new(FlowConfig {
                report_ns: Some(100_000_000),
                attempts_above: above,
                ..FlowConfig::default()
            });
            let mut out = Vec::new();
            let mut records = 0;
            for (ts, f) in &frames {
                t.process_frame(LinkType::Ethernet, f, f.len(), *ts, &mut out);
                records += out.len();
                out.clear();
            }
            t.flush(&mut out);
            records + out.len()
        };
        println!("syn-flood, {name}: {} records for 1 s of flood", run());
        g.bench_function(name, |b| b.iter(|| black_box(run())));
    }
    g.finish();
}

criterion_group!(
    benches,
    decode_and_flows,
    million_flows,
    random_source_flood
);
criterion_main!(benches);
