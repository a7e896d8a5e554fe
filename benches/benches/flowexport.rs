//! Flow-export decoding: datagrams and flow records decoded per second on one core, for the
//! streams real exporters send for a capture (softflowd: NetFlow v5, v9, IPFIX; pmacctd's
//! sfprobe: sFlow v5, every packet sampled). The streams are recorded once on loopback at the
//! start, then decoded from memory with a fresh decoder each iteration (so NetFlow v9 and
//! IPFIX learn their templates from the stream itself, as a collector does after a restart).
//!
//! The capture is `$NORMWATCH_BENCH_PCAP` (default: the spoofed SYN flood in the shared data,
//! one flow per packet: the densest export there is).

#![allow(clippy::print_stdout, clippy::print_stderr, missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use normwatch_flowexport::listen::{ListenConfig, Listener};
use normwatch_flowexport::{Decoder, DecoderConfig};
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn bench_pcap() -> PathBuf {
    std::env::var_os("NORMWATCH_BENCH_PCAP")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../shared/data/captures/packet-captures/pkt.TCP.synflood.spoofed.pcap")
        })
}

type Stream = Vec<(SocketAddr, Vec<u8>)>;

/// Runs `cmd` (which exports to the listener's port) and keeps every datagram it sends.
fn record(what: &str, cmd: &mut Command, l: &Listener) -> Option<Stream> {
    let mut child = match cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipping {what}: {e}");
            return None;
        }
    };
    let started = Instant::now();
    let mut out = Vec::new();
    let mut quiet = 0;
    while quiet < 3 && started.elapsed() < Duration::from_secs(120) {
        match l.next_batch(Duration::from_millis(300)) {
            Some(b) => {
                out.extend(b.datagrams().map(|(f, _, d)| (f, d.to_vec())));
                l.recycle(b);
            }
            None if child.try_wait().ok().flatten().is_some() => quiet += 1,
            None => {}
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    Some(out)
}

fn streams(pcap: &Path) -> Vec<(String, Stream)> {
    let tmp = tempfile::tempdir().unwrap();
    // softflowd cuts `-r` and control-socket paths longer than 16 characters.
    let short = PathBuf::from(format!("/tmp/b{}.pcap", std::process::id() % 100_000));
    std::fs::copy(pcap, &short).unwrap();
    let mut all = Vec::new();
    for v in [5, 9, 10] {
        let l = Listener::start(&ListenConfig {
            addrs: vec!["127.0.0.1:0".parse().unwrap()],
            ..ListenConfig::default()
        })
        .unwrap();
        let port = l.local_addrs()[0].port();
        let mut cmd = Command::new("softflowd");
        cmd.current_dir("/tmp")
            .args(["-d", "-6", "-m", "1000000", "-r"])
            .arg(short.file_name().unwrap())
            .args(["-n", &format!("127.0.0.1:{port}"), "-v", &v.to_string()])
            .args([
                "-c",
                &format!("/tmp/c{port}"),
                "-p",
                &format!("/tmp/p{port}"),
            ]);
        let name = match v {
            5 => "netflow-v5",
            9 => "netflow-v9",
            _ => "ipfix",
        };
        if let Some(s) = record(&format!("softflowd {name}"), &mut cmd, &l) {
            all.push((format!("softflowd {name}"), s));
        }
    }
    let l = Listener::start(&ListenConfig {
        addrs: vec!["127.0.0.1:0".parse().unwrap()],
        ..ListenConfig::default()
    })
    .unwrap();
    let port = l.local_addrs()[0].port();
    let conf = tmp.path().join("sf.conf");
    std::fs::write(
        &conf,
        format!(
            "daemonize: false\npcap_savefile: {}\nplugins: sfprobe\nsfprobe_receiver: 127.0.0.1:{port}\nsfprobe_agentip: 127.0.0.1\nplugin_buffer_size: 1024000\nplugin_pipe_size: 102400000\n",
            pcap.display()
        ),
    )
    .unwrap();
    if let Some(s) = record(
        "pmacctd sfprobe",
        Command::new("pmacctd").arg("-f").arg(&conf),
        &l,
    ) {
        all.push(("pmacctd sflow".into(), s));
    }
    let _ = std::fs::remove_file(&short);
    all.retain(|(_, s)| !s.is_empty());
    all
}

fn decode_all(stream: &Stream) -> usize {
    let mut d = Decoder::new(DecoderConfig::default());
    let mut out = Vec::with_capacity(64);
    let mut n = 0;
    for (i, (from, data)) in stream.iter().enumerate() {
        let _ = d.decode(*from, data, 1_000_000_000 * (1 + i as u64 / 1000), &mut out);
        n += out.len();
        out.clear();
    }
    d.flush(&mut out);
    n + out.len()
}

fn flowexport(c: &mut Criterion) {
    let pcap = bench_pcap();
    if !pcap.exists() {
        eprintln!("skipping: {} not found", pcap.display());
        return;
    }
    let mut g = c.benchmark_group("flowexport");
    for (name, stream) in streams(&pcap) {
        let records = decode_all(&stream);
        let bytes: usize = stream.iter().map(|(_, d)| d.len()).sum();
        eprintln!(
            "{name}: {} datagrams, {records} records, {:.0} bytes/datagram",
            stream.len(),
            bytes as f64 / stream.len() as f64
        );
        g.throughput(Throughput::Elements(stream.len() as u64));
        g.bench_function(format!("{name} datagrams"), |b| {
            b.iter(|| black_box(decode_all(black_box(&stream))))
        });
        // The same work, counted in records.
        let t = Instant::now();
        let rounds = 5;
        for _ in 0..rounds {
            black_box(decode_all(&stream));
        }
        let secs = t.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {:.2} M datagrams/s, {:.2} M records/s on one core",
            (stream.len() * rounds) as f64 / secs / 1e6,
            (records * rounds) as f64 / secs / 1e6
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5));
    targets = flowexport
}
criterion_main!(benches);
