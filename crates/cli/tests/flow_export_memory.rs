//! `normwatch run --exports-only` under a hostile mix of flow exports over loopback: random
//! datagrams, NetFlow v9 and IPFIX with absurd and many templates from thousands of exporter
//! addresses on 127.0.0.0/8, data held for templates that never come, and sFlow from 80
//! agents. The process's resident memory (read from /proc) stays under the configured bound
//! plus a fixed margin, the drops are counted by reason, and a real exporter's flows still
//! arrive throughout.

// The measured RSS is printed, for the record of what the bound allowed.
#![allow(clippy::print_stderr)]

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_normwatch");
/// `[exporters] max_total_bytes` for the run.
const BOUND: u64 = 32 << 20;
/// What the process holds beside the decoder's tables: code, the detector, the listener's
/// hand-over batches (about 20 MiB at most), the allocator's slack.
const MARGIN: u64 = 64 << 20;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

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

fn v9(seq: u32, domain: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    let mut v = 9u16.to_be_bytes().to_vec();
    v.extend_from_slice(&(sets.len() as u16).to_be_bytes());
    v.extend_from_slice(&100_000u32.to_be_bytes());
    v.extend_from_slice(&secs.to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&domain.to_be_bytes());
    v.extend(sets.concat());
    v
}

fn ipfix(domain: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let body = sets.concat();
    let mut v = 10u16.to_be_bytes().to_vec();
    v.extend_from_slice(&((16 + body.len()) as u16).to_be_bytes());
    v.extend_from_slice(&1_700_000_000u32.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&domain.to_be_bytes());
    v.extend(body);
    v
}

/// An sFlow v5 datagram from `agent` with one sampled IPv4/UDP header.
fn sflow(agent: [u8; 4], source: u32, sport: u16, dst: u8) -> Vec<u8> {
    let w = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_be_bytes());
    let [a, b] = sport.to_be_bytes();
    let pkt = [
        0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 198, 51, 100, 7, 192, 0, 2, dst, a, b, 0, 53, 0,
        8, 0, 0,
    ];
    let mut rec = Vec::new();
    for x in [11, 28, 0, pkt.len() as u32] {
        w(&mut rec, x);
    }
    rec.extend_from_slice(&pkt);
    let mut sample = Vec::new();
    for x in [1, source, 1, 1000, 0, 1, 2, 1, 1, rec.len() as u32] {
        w(&mut sample, x);
    }
    sample.extend_from_slice(&rec);
    let mut v = Vec::new();
    for x in [5, 1] {
        w(&mut v, x);
    }
    v.extend_from_slice(&agent);
    for x in [0, 1, 1000, 1, 1, sample.len() as u32] {
        w(&mut v, x);
    }
    v.extend_from_slice(&sample);
    v
}

/// src, dst, sport, dport, proto, pkts, bytes: what the real exporter sends.
const REAL_FIELDS: [(u16, u16); 7] = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4)];

fn real_record(n: u32) -> Vec<u8> {
    let mut v = vec![203, 0, 113, (n % 200) as u8 + 1, 10, 10, 10, 5];
    v.extend_from_slice(&((n % 50_000) as u16 + 1024).to_be_bytes());
    v.extend_from_slice(&443u16.to_be_bytes());
    v.push(6);
    v.extend_from_slice(&4u32.to_be_bytes());
    v.extend_from_slice(&400u32.to_be_bytes());
    v
}

fn rss(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The value of one metric line (`name{labels}`) on the metrics page, 0 if absent.
fn metric(page: &str, name: &str) -> u64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

fn scrape(addr: SocketAddr) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return String::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    );
    let mut page = String::new();
    let _ = s.read_to_string(&mut page);
    page
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends one hostile datagram of kind `i % 6` from a fresh address in 127.0.0.0/8.
fn hostile(i: u32, rng: &mut Rng, to: SocketAddr, sockets: &mut Vec<UdpSocket>) {
    // Thousands of exporter addresses: 127.1.0.0 and up, one socket per address, reused
    // round-robin once made (binding is the slow part).
    const ADDRESSES: u32 = 6000;
    let n = (i % ADDRESSES) as usize;
    if sockets.len() <= n {
        let ip = Ipv4Addr::from(0x7f01_0000 + n as u32);
        sockets.push(UdpSocket::bind((ip, 0)).unwrap());
    }
    let sock = &sockets[n];
    let dgram = match i % 6 {
        // Random bytes, some with a plausible version word.
        0 => {
            let n = 8 + (rng.next() % 1400) as usize;
            let mut d = rng.bytes(n);
            if i.is_multiple_of(12) {
                d[..2].copy_from_slice(&[0, 9 + (i % 2) as u8]);
            }
            d
        }
        // NetFlow v9: many absurd templates (hundreds of unknown fields) at once.
        1 => {
            let tmpl: Vec<u8> = (0..3)
                .flat_map(|k| {
                    template(
                        256 + ((rng.next() % 60_000) as u16) + k,
                        &vec![(1000 + k, 4); 300 + (rng.next() % 200) as usize],
                    )
                })
                .collect();
            v9(i, rng.next() as u32 % 16, &[set(0, &tmpl)])
        }
        // NetFlow v9 data for templates that never come.
        2 => v9(
            i,
            rng.next() as u32 % 16,
            &[set(256 + (rng.next() % 60_000) as u16, &rng.bytes(1200))],
        ),
        // IPFIX: absurd templates, then held data.
        3 => ipfix(
            rng.next() as u32 % 16,
            &[
                set(
                    2,
                    &template(
                        256 + (rng.next() % 60_000) as u16,
                        &vec![(2000, 4); 400 + (rng.next() % 100) as usize],
                    ),
                ),
                set(256 + (rng.next() % 60_000) as u16, &rng.bytes(900)),
            ],
        ),
        // sFlow from 80 agents, many flows each.
        _ => {
            let agent = (rng.next() % 80) as u8;
            sflow(
                [10, 99, 0, agent],
                (rng.next() % 4) as u32,
                (rng.next() % 60_000) as u16,
                (rng.next() % 250) as u8,
            )
        }
    };
    let _ = sock.send_to(&dgram, to);
}

#[test]
fn hostile_exports_stay_within_the_memory_bound_and_a_real_exporter_gets_through() {
    let dir = tempfile::tempdir().unwrap();
    let port = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let to: SocketAddr = ([127, 0, 0, 1], port).into();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = dir.path().join("normwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[exporters]
listen = ["127.0.0.1:{port}"]
max_exporter_bytes = 1048576
max_agent_bytes = 2097152
max_total_bytes = {BOUND}

[[asset]]
id = "web"
name = "Web portal"
operator = "Example operator"
sector = "health"
service = "patient portal"
cidrs = ["10.10.10.0/24"]
roles = ["public-service"]
"#
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args(["run", "--exports-only", "--duration", "35s"])
        .args(["--metrics-listen", &metrics.to_string()])
        .arg("--config")
        .arg(&config)
        .arg("--alerts-out")
        .arg(dir.path().join("alerts.jsonl"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let started = Instant::now();
    while scrape(metrics).is_empty() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let base = rss(pid);

    // The real exporter: its template once, then a data set every 20 ms.
    let real = UdpSocket::bind("127.0.0.1:0").unwrap();
    let tmpl = set(0, &template(300, &REAL_FIELDS));
    real.send_to(&v9(0, 1, &[tmpl]), to).unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut sockets = Vec::new();
    let (mut sent_real, mut i, mut peak) = (0u32, 0u32, base);
    let mut real_seen_early = 0;
    let flood = Instant::now();
    let mut next_real = Instant::now();
    while flood.elapsed() < Duration::from_secs(25) {
        // About 10 000 hostile datagrams a second.
        for _ in 0..100 {
            hostile(i, &mut rng, to, &mut sockets);
            i += 1;
        }
        if Instant::now() >= next_real {
            next_real += Duration::from_millis(20);
            sent_real += 1;
            let data = set(300, &real_record(sent_real));
            real.send_to(&v9(sent_real, 1, &[data]), to).unwrap();
        }
        if i.is_multiple_of(2000) {
            peak = peak.max(rss(pid));
            if flood.elapsed() > Duration::from_secs(5) && real_seen_early == 0 {
                real_seen_early = metric(
                    &scrape(metrics),
                    "normwatch_sensor_export_records_total{protocol=\"netflow-v9\"}",
                );
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_secs(2));
    peak = peak.max(rss(pid));
    let page = scrape(metrics);
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");

    eprintln!(
        "hostile datagrams {i}, real {sent_real}; RSS at start {} MiB, peak {} MiB",
        base >> 20,
        peak >> 20
    );
    assert!(
        peak < BOUND + MARGIN,
        "RSS peaked at {} MiB, over the {} MiB bound plus {} MiB",
        peak >> 20,
        BOUND >> 20,
        MARGIN >> 20
    );
    let dropped = |reason: &str| {
        metric(
            &page,
            &format!("normwatch_sensor_export_dropped_total{{reason=\"{reason}\"}}"),
        )
    };
    for reason in ["unknown_version", "missing_template", "memory_bound"] {
        assert!(dropped(reason) > 0, "no {reason} drops counted:\n{page}");
    }
    assert!(
        metric(
            &page,
            "normwatch_sensor_export_records_total{protocol=\"sflow\"}"
        ) > 0,
        "{page}"
    );
    // Every record of the real exporter is decoded, bar datagrams the listener itself had
    // to drop when the decoder fell behind (counted as "channel").
    let real_records = metric(
        &page,
        "normwatch_sensor_export_records_total{protocol=\"netflow-v9\"}",
    );
    assert!(
        real_seen_early > 0,
        "the real exporter was locked out early"
    );
    let channel = dropped("channel");
    assert!(
        real_records + channel >= u64::from(sent_real) && real_records * 10 >= u64::from(sent_real) * 9,
        "real exporter: {real_records} of {sent_real} records decoded, {channel} datagrams dropped in the channel\n{page}"
    );
}
