//! End-to-end transport throughput: flow records batched and encoded by the sensor side,
//! carried by the transport, decoded and de-duplicated by a consumer; the in-process bus and
//! a real Kafka-protocol broker (tansu, started here on a loopback port with in-memory
//! storage) measured in the same run.
//!
//! Also the cost of waiting for one alert event's acknowledgement (what `detect` does
//! before it commits a batch that raised an alert): `KafkaPublisher` publish + flush, beside
//! rdkafka's own `Producer::flush` on a `ThreadedProducer`, which the publisher used before
//! and which sleeps in 100 ms polling slices while another thread takes the reports.
//!
//! `cargo bench -p normwatch-benches --bench transport [-- RECORDS]` (default 2 000 000);
//! `-- alerts` measures only the acknowledgement wait.
//! Needs `tansu` on PATH (or its path in NORMWATCH_TANSU).

#![allow(clippy::print_stdout, clippy::print_stderr)]

use normwatch_config::{BusConfig, Compression, KafkaConfig, SpoolConfig};
use normwatch_model::{AssetId, AssetMatch, ConnState, DirStats, EndReason, FlowRecord, Side};
use normwatch_pipeline::batcher::{Encoded, FlowBatcher};
use normwatch_transport::bus::{memory_bus, Publisher, Subscriber, Topic};
use normwatch_transport::dedup::Deduplicator;
use normwatch_transport::kafka::{KafkaPublisher, KafkaSubscriber, MAX_MESSAGE_BYTES};
use normwatch_transport::metrics::TransportMetrics;
use normwatch_transport::wire::decode_batch;
use std::net::{IpAddr, Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records like a spoofed flood's: many sources against a few protected assets.
fn records(n: usize) -> Vec<FlowRecord> {
    let sensor: Arc<str> = Arc::from("bench-sensor");
    let assets: Vec<AssetId> = (0..16)
        .map(|i| AssetId(Arc::from(format!("asset-{i}").as_str())))
        .collect();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let asset = &assets[(x % 16) as usize];
            FlowRecord {
                sensor_id: sensor.clone(),
                flow_id: i as u64,
                orig_addr: IpAddr::V4(Ipv4Addr::from((x >> 16) as u32)),
                orig_port: (x >> 48) as u16,
                resp_addr: IpAddr::V4(Ipv4Addr::new(10, 10, (x % 16) as u8, 10)),
                resp_port: 443,
                ip_proto: 6,
                first_ns: 1_700_000_000_000_000_000 + i as u64 * 1000,
                last_ns: 1_700_000_000_000_000_000 + i as u64 * 1000 + 5_000_000_000,
                orig: DirStats {
                    pkts: 1 + x % 3,
                    ip_bytes: 40 + x % 200,
                    payload_bytes: 0,
                    tcp_flags: Default::default(),
                },
                resp: DirStats::default(),
                conn_state: ConnState::S0,
                asset: Some(AssetMatch {
                    id: asset.clone(),
                    side: Side::Resp,
                }),
                ics: None,
                end_reason: EndReason::IdleTimeout,
                export: None,
                prior: None,
                attempts: None,
                // As a sensor reports a flood's SYN: its TTL, nothing from the responder.
                orig_ttl: Some(normwatch_model::Span::of(32 + (x >> 8) as u8 % 200)),
                resp_ttl: None,
            }
        })
        .collect()
}

/// Batches and publishes every record; returns the batches sent.
fn produce(recs: Vec<FlowRecord>, publisher: &mut dyn Publisher) -> u64 {
    let mut b = FlowBatcher::new(
        Arc::from("bench-sensor"),
        1,
        4096,
        MAX_MESSAGE_BYTES,
        Duration::from_millis(100),
    );
    let mut out: Vec<Encoded> = Vec::new();
    let mut batches = 0;
    let mut send = |out: &mut Vec<Encoded>, publisher: &mut dyn Publisher| {
        for e in out.drain(..) {
            publisher
                .publish(Topic::Flows, &e.key, e.payload)
                .expect("publish");
            batches += 1;
        }
    };
    for chunk in recs.chunks(1024) {
        let mut buf = chunk.to_vec();
        b.push(&mut buf, Instant::now(), &mut out).expect("encode");
        send(&mut out, publisher);
    }
    b.flush(&mut out).expect("encode");
    send(&mut out, publisher);
    publisher.flush(Duration::from_secs(120)).expect("flush");
    batches
}

/// Consumes until `n` records arrived; returns when the last one was decoded.
fn consume(sub: &mut dyn Subscriber, n: usize) -> Instant {
    let mut dedup = Deduplicator::new(1024);
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(300);
    while got < n {
        assert!(
            Instant::now() < deadline,
            "only {got} of {n} records arrived"
        );
        if let Some(d) = sub.poll(Duration::from_millis(100)).expect("poll") {
            let batch = decode_batch::<FlowRecord>(&d.payload).expect("decode");
            if dedup.is_new(&batch.sensor_id, d.partition, batch.seq) {
                got += batch.records.len();
            }
            sub.commit(&d).expect("commit");
        }
    }
    Instant::now()
}

fn report(name: &str, n: usize, secs: f64, batches: u64) {
    println!(
        "{name:<34} {n:>9} records in {batches:>5} batches: {secs:>7.3} s, {:>6.2} M flows/s",
        n as f64 / secs / 1e6
    );
}

fn memory(recs: &[FlowRecord]) -> f64 {
    let n = recs.len();
    let (publisher, bus) = memory_bus(1024);
    let mut sub = bus.subscriber(Topic::Flows);
    let recs = recs.to_vec();
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        let mut p = publisher;
        produce(recs, &mut p)
    });
    let end = consume(&mut sub, n);
    let batches = producer.join().expect("producer");
    let secs = (end - start).as_secs_f64();
    report("in-process bus", n, secs, batches);
    secs
}

struct Broker(Child);

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tansu(port: u16) -> Broker {
    let bin = std::env::var("NORMWATCH_TANSU").unwrap_or_else(|_| "tansu".into());
    let url = format!("tcp://127.0.0.1:{port}");
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "memory://tansu/"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tansu is not installed: cargo install tansu --locked --features dynostore,libsql");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "tansu did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker(child)
}

fn kafka(recs: &[FlowRecord], compression: Compression, run: usize) -> f64 {
    let n = recs.len();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let _broker = tansu(port);
    let mut bus = BusConfig {
        brokers: vec![format!("127.0.0.1:{port}")],
        ..BusConfig::default()
    };
    bus.topics.flows.name = format!("bench.flows.{run}");
    bus.topics.flows.partitions = 8;
    let kafka = KafkaConfig {
        compression,
        group_id: format!("bench-{run}"),
        options: std::env::var("BENCH_KAFKA_OPTS")
            .unwrap_or_default()
            .split(',')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        ..KafkaConfig::default()
    };
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let spool = SpoolConfig {
        path: spool_dir.path().to_path_buf(),
        ..SpoolConfig::default()
    };
    let metrics = TransportMetrics::unregistered();
    let mut publisher = KafkaPublisher::new(
        &bus,
        &kafka,
        &spool,
        metrics.clone(),
        Duration::from_secs(10),
    )
    .expect("producer");
    let mut sub =
        KafkaSubscriber::new(&bus, &kafka, Topic::Flows, metrics.clone()).expect("consumer");
    // Join the group before the clock starts.
    let _ = sub.poll(Duration::from_secs(3)).expect("poll");
    let recs = recs.to_vec();
    let start = Instant::now();
    let producer = std::thread::spawn(move || {
        let batches = produce(recs, &mut publisher);
        eprintln!(
            "  producer acknowledged after {:.3} s",
            start.elapsed().as_secs_f64()
        );
        (batches, publisher)
    });
    let end = consume(&mut sub, n);
    let (batches, publisher) = producer.join().expect("producer");
    let secs = (end - start).as_secs_f64();
    let name = match compression {
        Compression::Lz4 => "kafka (tansu memory://, lz4)",
        Compression::Zstd => "kafka (tansu memory://, zstd)",
    };
    report(name, n, secs, batches);
    assert_eq!(
        metrics.spooled_messages.get(),
        0,
        "nothing went through the spool"
    );
    drop(publisher);
    let _ = sub.close();
    secs
}

/// Mean and median time of `rounds` × (publish one alert-sized message, wait for its
/// acknowledgement), in ms.
fn ack_latency(mut one: impl FnMut(usize), rounds: usize) -> (f64, f64) {
    // The first round includes connecting and topic metadata.
    one(0);
    let mut t: Vec<f64> = (1..=rounds)
        .map(|i| {
            let s = Instant::now();
            one(i);
            s.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    t.sort_by(f64::total_cmp);
    (t.iter().sum::<f64>() / t.len() as f64, t[t.len() / 2])
}

fn alert_acks(rounds: usize) {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
    let _broker = tansu(port);
    let addr = format!("127.0.0.1:{port}");
    let bus = BusConfig {
        brokers: vec![addr.clone()],
        ..BusConfig::default()
    };
    let spool_dir = tempfile::tempdir().expect("tempdir");
    let spool = SpoolConfig {
        path: spool_dir.path().to_path_buf(),
        ..SpoolConfig::default()
    };
    let payload = vec![b'a'; 600];
    let mut publisher = KafkaPublisher::new(
        &bus,
        &KafkaConfig::default(),
        &spool,
        TransportMetrics::unregistered(),
        Duration::from_secs(10),
    )
    .expect("producer");
    let (mean, median) = ack_latency(
        |i| {
            publisher
                .publish(
                    Topic::Alerts,
                    format!("alert-{i}").as_bytes(),
                    payload.clone(),
                )
                .expect("publish");
            publisher.flush(Duration::from_secs(30)).expect("flush");
        },
        rounds,
    );
    println!(
        "{:<44} {rounds} alert events, mean {mean:7.2} ms, median {median:7.2} ms per publish + acknowledgement",
        "KafkaPublisher publish + flush"
    );
    drop(publisher);
    let raw: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &addr)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .expect("producer");
    let (mean, median) = ack_latency(
        |i| {
            let key = format!("alert-{i}");
            raw.send(
                BaseRecord::to(&bus.topics.alerts.name)
                    .key(key.as_bytes())
                    .payload(&payload),
            )
            .map_err(|(e, _)| e)
            .expect("send");
            raw.flush(Duration::from_secs(30)).expect("flush");
        },
        rounds,
    );
    println!(
        "{:<44} {rounds} alert events, mean {mean:7.2} ms, median {median:7.2} ms per publish + acknowledgement",
        "rdkafka ThreadedProducer::flush (before)"
    );
}

fn main() {
    let n = std::env::args()
        .skip(1)
        .find_map(|a| a.parse::<usize>().ok())
        .unwrap_or(2_000_000);
    if std::env::args().any(|a| a == "alerts") {
        alert_acks(200);
        return;
    }
    let recs = records(n);
    println!(
        "transport end to end: sensor encode -> transport -> consumer decode + de-duplicate, {} cores",
        std::thread::available_parallelism().map_or(1, |p| p.get())
    );
    let mem = memory(&recs);
    let lz4 = kafka(&recs, Compression::Lz4, 1);
    let zstd = kafka(&recs, Compression::Zstd, 2);
    println!(
        "kafka/in-process time ratio: lz4 {:.2}x, zstd {:.2}x",
        lz4 / mem,
        zstd / mem
    );
    alert_acks(200);
}
