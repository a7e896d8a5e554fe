//! The flow-record codec on the wire, per record: postcard through serde (what every build
//! before the hand-written codec did, and what it must match byte for byte) beside the
//! hand-written codec, in one run, on one batch of a realistic record mix; and the whole
//! batch (envelope, CRC) as the sensor encodes and a consumer decodes it.
//!
//! The mix (4 096 records, a sensor batch: one protected asset's records, as the sensor's
//! batcher groups them): IPv4 mostly (1 in 10 IPv6), an interim report carrying the flow's `prior` on 3 in 10, TTL spans on every
//! record (the responder's where it answered), event times in nanoseconds since the epoch,
//! counts from one packet to megabytes; 1 in 100 carries an ICS summary, 1 in 500 counts
//! connection attempts.
//!
//! `cargo bench -p normwatch-benches --bench wire`

#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use normwatch_model::{
    AssetId, AssetMatch, Attempts, Cardinality, CommandClass, ConnState, DirStats, EndReason,
    FlowRecord, IcsProto, IcsSummary, Prior, PriorDir, Side, Span, TcpFlags,
};
use normwatch_transport::wire::{self, decode_batch, encode_into_at, Batch};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

const RECORDS: usize = 4096;

fn records() -> Vec<FlowRecord> {
    let sensor: Arc<str> = Arc::from("sensor-fra-01");
    let asset = AssetId(Arc::from("grid-scada-7"));
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let t0 = 1_764_000_000_000_000_000u64;
    (0..RECORDS)
        .map(|i| {
            let r = next();
            let v6 = r % 10 == 0;
            let addr = |a: u64| {
                if v6 {
                    IpAddr::V6(Ipv6Addr::from(
                        (0x2001_0db8u128 << 96) | u128::from(a & 0xffff_ffff),
                    ))
                } else {
                    IpAddr::V4(Ipv4Addr::from(a as u32))
                }
            };
            let pkts = 1 + (r >> 8) % 2000;
            let resp_pkts = (r >> 20) % 1500;
            let interim = r % 10 < 3;
            let first = t0 + i as u64 * 250_000;
            FlowRecord {
                sensor_id: sensor.clone(),
                flow_id: 1_000_000 + i as u64,
                orig_addr: addr(next()),
                orig_port: 1024 + (r >> 32) as u16 % 60_000,
                resp_addr: addr(0x0a0a_0a00 | ((r >> 40) % 64)),
                resp_port: [443, 502, 53, 102, 22][(r >> 44) as usize % 5],
                ip_proto: if (r >> 50) & 3 == 0 { 17 } else { 6 },
                first_ns: first,
                last_ns: first + (r >> 12) % 30_000_000_000,
                orig: DirStats {
                    pkts,
                    ip_bytes: pkts * (40 + (r >> 24) % 1400),
                    payload_bytes: pkts * ((r >> 24) % 1400),
                    tcp_flags: TcpFlags(0x1b),
                },
                resp: DirStats {
                    pkts: resp_pkts,
                    ip_bytes: resp_pkts * 600,
                    payload_bytes: resp_pkts * 560,
                    tcp_flags: TcpFlags(if resp_pkts > 0 { 0x1a } else { 0 }),
                },
                conn_state: if interim {
                    ConnState::S1
                } else {
                    ConnState::SF
                },
                asset: Some(AssetMatch {
                    id: asset.clone(),
                    side: Side::Resp,
                }),
                ics: (r % 100 == 1).then(|| {
                    let mut s = IcsSummary::new(IcsProto::Modbus);
                    s.orig.command(CommandClass::Read, 3);
                    s.orig.command(CommandClass::Write, 16);
                    Box::new(s)
                }),
                end_reason: if interim {
                    EndReason::Interim
                } else {
                    EndReason::IdleTimeout
                },
                export: None,
                prior: interim.then(|| Prior {
                    reports: 1 + (r >> 4) as u32 % 20,
                    since_ns: first + 5_000_000_000,
                    orig: PriorDir {
                        pkts: pkts / 2,
                        ip_bytes: pkts * 300,
                        tcp_flags: TcpFlags(0x1a),
                        commands: [0, 0, 0, 0],
                    },
                    resp: PriorDir {
                        pkts: resp_pkts / 2,
                        ip_bytes: resp_pkts * 300,
                        tcp_flags: TcpFlags(0x12),
                        commands: [0, 0, 0, 0],
                    },
                }),
                attempts: (r % 500 == 7).then(|| {
                    let mut sources = Cardinality::default();
                    (0..40).for_each(|s| sources.insert(s));
                    Box::new(Attempts {
                        count: 40,
                        sources,
                        sample: (0..8).map(|s| IpAddr::V4(Ipv4Addr::from(s))).collect(),
                        ttl: Some(Span { min: 40, max: 250 }),
                        sport: Some(Span {
                            min: 1024,
                            max: 65_000,
                        }),
                    })
                }),
                orig_ttl: Some(Span {
                    min: 52 + (r >> 3) as u8 % 8,
                    max: 64,
                }),
                resp_ttl: (resp_pkts > 0).then_some(Span { min: 128, max: 128 }),
            }
        })
        .collect()
}

fn codec(c: &mut Criterion) {
    let recs = records();
    let n = recs.len() as u64;
    let mut serde_payload = Vec::new();
    for r in &recs {
        serde_payload = postcard::to_extend(r, serde_payload).expect("encode");
    }
    let mut payload = Vec::new();
    for r in &recs {
        wire::flow::encode(r, &mut payload).expect("encode");
    }
    assert_eq!(
        payload, serde_payload,
        "the hand codec writes postcard's bytes"
    );
    println!(
        "{} records, {:.1} bytes each on the wire",
        recs.len(),
        payload.len() as f64 / recs.len() as f64
    );

    let mut g = c.benchmark_group("flow_record_encode");
    g.throughput(Throughput::Elements(n));
    let mut buf: Vec<u8> = Vec::with_capacity(payload.len() * 2);
    g.bench_function("serde_postcard", |b| {
        b.iter(|| {
            buf.clear();
            for r in &recs {
                buf = postcard::to_extend(r, std::mem::take(&mut buf)).expect("encode");
            }
            black_box(buf.len())
        })
    });
    g.bench_function("hand", |b| {
        b.iter(|| {
            buf.clear();
            for r in &recs {
                wire::flow::encode(r, &mut buf).expect("encode");
            }
            black_box(buf.len())
        })
    });
    g.bench_function("batch_hand", |b| {
        b.iter(|| {
            encode_into_at(&mut buf, "sensor-fra-01", 7, 1, &recs).expect("encode");
            black_box(buf.len())
        })
    });
    g.finish();

    let batch = wire::encode_batch_at("sensor-fra-01", 7, 1, &recs).expect("encode");
    let mut g = c.benchmark_group("flow_record_decode");
    g.throughput(Throughput::Elements(n));
    let mut out: Vec<FlowRecord> = Vec::with_capacity(recs.len());
    g.bench_function("serde_postcard", |b| {
        b.iter(|| {
            out.clear();
            let mut rest = &payload[..];
            while !rest.is_empty() {
                let (r, tail) = postcard::take_from_bytes::<FlowRecord>(rest).expect("decode");
                out.push(r);
                rest = tail;
            }
            black_box(out.len())
        })
    });
    g.bench_function("hand", |b| {
        b.iter(|| {
            out.clear();
            let mut rest = &payload[..];
            while !rest.is_empty() {
                rest = wire::flow::decode_into(rest, &mut out).expect("decode");
            }
            black_box(out.len())
        })
    });
    g.bench_function("hand_unstored", |b| {
        b.iter(|| {
            let mut rest = &payload[..];
            let mut n = 0;
            while !rest.is_empty() {
                let (r, tail) = wire::flow::decode(rest).expect("decode");
                n += r.flow_id;
                black_box(r);
                rest = tail;
            }
            black_box(n)
        })
    });
    println!("FlowRecord: {} bytes", size_of::<FlowRecord>());
    g.bench_function("batch_hand", |b| {
        b.iter(|| {
            let d: Batch<FlowRecord> = decode_batch(&batch).expect("decode");
            black_box(d.records.len())
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
