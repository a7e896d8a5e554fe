//! Running real exporters (softflowd, pmacctd) over a capture on loopback and decoding what
//! they send; the sensor's own records for the same capture; per-direction totals of both.

#![allow(dead_code, clippy::print_stdout)]

use normwatch_flowexport::listen::{ListenConfig, Listener};
use normwatch_flowexport::{Decoder, DecoderConfig, Exported};
use normwatch_model::{AssetIndex, FlowRecord};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A capture under the shared data directory.
pub fn capture(rel: &str) -> PathBuf {
    normwatch_tests::capture(rel)
}

/// Whether `tool` is on the path; tests that need it fail with the fix when it is not.
pub fn need(tool: &str) {
    let found = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
        || Path::new("/usr/sbin").join(tool).is_file();
    assert!(
        found,
        "{tool} is not installed: apt-get install softflowd pmacct (.ci/run does)"
    );
}

/// A copy of `src` at a short path: softflowd 1.1.0 cuts longer `-r` paths (it is given the
/// file name, relative to its working directory). Removed on drop.
pub struct ShortCopy(pub PathBuf);

impl ShortCopy {
    pub fn new(src: &Path) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() << 4 ^ N.fetch_add(1, Ordering::Relaxed)) & 0xfffff;
        let p = PathBuf::from(format!("/tmp/e{n:05x}.pcap"));
        assert!(p.as_os_str().len() <= 16);
        std::fs::copy(src, &p).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        ShortCopy(p)
    }
}

impl Drop for ShortCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Receives with `listener` until `child` has exited and nothing came for a while; then
/// decodes every datagram in arrival order and ends the input. Asserts that nothing was
/// lost between the exporter and the decoder.
pub fn receive(
    listener: &Listener,
    mut child: Child,
    cfg: DecoderConfig,
) -> (Decoder, Vec<Exported>) {
    let started = Instant::now();
    let mut d = Decoder::new(cfg);
    let mut out = Vec::new();
    let mut quiet_after_exit = 0;
    loop {
        match listener.next_batch(Duration::from_millis(300)) {
            Some(b) => {
                for (from, at, data) in b.datagrams() {
                    let _ = d.decode(from, data, at, &mut out);
                }
                listener.recycle(b);
            }
            None => {
                if child.try_wait().unwrap().is_some() {
                    quiet_after_exit += 1;
                    if quiet_after_exit >= 3 {
                        break;
                    }
                }
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the exporter did not finish in 60 s");
        }
    }
    // pmacctd sometimes exits non-zero when its plugin is stopped at the end of the file,
    // after everything was sent; what was received is checked by the callers.
    let status = child.wait().unwrap();
    println!("exporter exited: {status}");
    d.flush(&mut out);
    let ls = listener.stats();
    println!(
        "{} datagrams, {} records, stats {:?}",
        ls.datagrams.load(Ordering::Relaxed),
        out.len(),
        d.stats()
    );
    assert_eq!(ls.channel_dropped.load(Ordering::Relaxed), 0);
    assert_eq!(
        d.stats().lost,
        0,
        "the exporter's sequence numbers show losses"
    );
    (d, out)
}

/// A listener on a loopback port the system picks, and that port.
pub fn bind() -> (Listener, u16) {
    let l = Listener::start(&ListenConfig {
        addrs: vec!["127.0.0.1:0".parse().unwrap()],
        ..ListenConfig::default()
    })
    .unwrap();
    let port = l.local_addrs()[0].port();
    (l, port)
}

/// softflowd reading `pcap` (a short copy) and exporting NetFlow `version` (5, 9 or 10) to
/// `port`: in the foreground, IPv6 tracked, a table large enough that nothing is evicted.
pub fn softflowd(pcap: &Path, version: u8, port: u16) -> Child {
    need("softflowd");
    let dir = pcap.parent().unwrap();
    // Its control socket path is cut short the same way (and then it never exits).
    let ctl = format!("/tmp/c{port}");
    let pid = format!("/tmp/p{port}");
    Command::new("softflowd")
        .current_dir(dir)
        .args(["-d", "-6", "-m", "1000000", "-r"])
        .arg(pcap.file_name().unwrap())
        .args([
            "-n",
            &format!("127.0.0.1:{port}"),
            "-v",
            &version.to_string(),
        ])
        .args(["-c", &ctl, "-p", &pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start softflowd")
}

/// pmacctd reading `pcap` with its `nfprobe` (NetFlow v9) or `sfprobe` (sFlow v5, every
/// packet sampled) plugin exporting to `port`.
pub fn pmacctd(pcap: &Path, plugin: &str, port: u16, dir: &Path) -> Child {
    pmacctd_sampled(pcap, plugin, port, dir, None)
}

/// [`pmacctd`] with pmacct's own packet sampling (`sampling_rate`), announced in the export.
pub fn pmacctd_sampled(
    pcap: &Path,
    plugin: &str,
    port: u16,
    dir: &Path,
    rate: Option<u32>,
) -> Child {
    need("pmacctd");
    let conf = dir.join(format!("{plugin}.conf"));
    let mut text = format!(
        "daemonize: false\npcap_savefile: {}\nplugins: {plugin}\nplugin_buffer_size: 1024000\nplugin_pipe_size: 102400000\n",
        pcap.display()
    );
    match plugin {
        "nfprobe" => text.push_str(&format!(
            "nfprobe_receiver: 127.0.0.1:{port}\nnfprobe_version: 9\n"
        )),
        "sfprobe" => text.push_str(&format!(
            "sfprobe_receiver: 127.0.0.1:{port}\nsfprobe_agentip: 127.0.0.1\n"
        )),
        _ => panic!("plugin {plugin}"),
    }
    if let Some(r) = rate {
        text.push_str(&format!("sampling_rate: {r}\n"));
    }
    std::fs::write(&conf, text).unwrap();
    Command::new("pmacctd")
        .arg("-f")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start pmacctd")
}

pub fn decoder_config(assets: Arc<AssetIndex>) -> DecoderConfig {
    DecoderConfig {
        assets,
        ..DecoderConfig::default()
    }
}

/// The sensor's records for `pcap` (checksums not verified: exporters count every packet).
pub fn sensor_records(pcap: &Path, assets: Arc<AssetIndex>) -> Vec<FlowRecord> {
    let mut cfg = normwatch_tests::config(false);
    cfg.assets = assets;
    normwatch_tests::flows_of(pcap, cfg)
        .unwrap_or_else(|(_, e)| panic!("{e}"))
        .0
}

/// One direction of a connection: sender, its port, receiver, its port, IP protocol.
pub type DirKey = (IpAddr, u16, IpAddr, u16, u8);

/// Packets and IP bytes per direction, summed over every record (a direction split over
/// several records by any timeout counts once in total).
pub fn per_direction<'a>(
    records: impl IntoIterator<Item = &'a FlowRecord>,
    keep: impl Fn(&DirKey) -> bool,
) -> BTreeMap<DirKey, (u64, u64)> {
    let mut m: BTreeMap<DirKey, (u64, u64)> = BTreeMap::new();
    for r in records {
        let fwd = (
            r.orig_addr,
            r.orig_port,
            r.resp_addr,
            r.resp_port,
            r.ip_proto,
        );
        let back = (
            r.resp_addr,
            r.resp_port,
            r.orig_addr,
            r.orig_port,
            r.ip_proto,
        );
        for (k, d) in [(fwd, &r.orig), (back, &r.resp)] {
            if d.pkts > 0 && keep(&k) {
                let e = m.entry(k).or_default();
                e.0 += d.pkts;
                e.1 += d.ip_bytes;
            }
        }
    }
    m
}

/// Compares two per-direction maps; returns the number of directions that differ and prints
/// the first few. Packets must be equal. Bytes must be equal, except with `padded`:
/// softflowd counts what follows the link header, so an Ethernet frame under the 60-byte
/// minimum adds its padding (a 40-byte SYN counts 46); the export may then exceed the IP
/// lengths by at most 26 bytes a packet (padding of the smallest, 20-byte, IP packet).
pub fn differences(
    label: &str,
    sensor: &BTreeMap<DirKey, (u64, u64)>,
    export: &BTreeMap<DirKey, (u64, u64)>,
    padded: bool,
) -> usize {
    let same = |s: &(u64, u64), e: &(u64, u64)| {
        s.0 == e.0 && (s.1 == e.1 || (padded && e.1 >= s.1 && e.1 - s.1 <= 26 * e.0))
    };
    let mut bad = 0;
    let mut padding = 0;
    for (k, s) in sensor {
        let e = export.get(k);
        if e.is_some_and(|e| e.1 != s.1 && same(s, e)) {
            padding += 1;
        }
        if !e.is_some_and(|e| same(s, e)) {
            bad += 1;
            if bad <= 10 {
                println!("{label}: {k:?}: sensor {s:?}, export {e:?}");
            }
        }
    }
    for (k, e) in export {
        if !sensor.contains_key(k) {
            bad += 1;
            if bad <= 10 {
                println!("{label}: {k:?}: only in the export {e:?}");
            }
        }
    }
    println!(
        "{label}: {} directions from the sensor, {} from the export, {padding} with link padding counted, {bad} differ",
        sensor.len(),
        export.len()
    );
    bad
}

/// The earliest first and latest last time (ns) per direction.
pub fn span_per_direction<'a>(
    records: impl IntoIterator<Item = &'a FlowRecord>,
) -> BTreeMap<DirKey, (u64, u64)> {
    let mut m: BTreeMap<DirKey, (u64, u64)> = BTreeMap::new();
    for r in records {
        let fwd = (
            r.orig_addr,
            r.orig_port,
            r.resp_addr,
            r.resp_port,
            r.ip_proto,
        );
        let back = (
            r.resp_addr,
            r.resp_port,
            r.orig_addr,
            r.orig_port,
            r.ip_proto,
        );
        for (k, d) in [(fwd, &r.orig), (back, &r.resp)] {
            if d.pkts > 0 {
                let e = m.entry(k).or_insert((u64::MAX, 0));
                e.0 = e.0.min(r.first_ns);
                e.1 = e.1.max(r.last_ns);
            }
        }
    }
    m
}
