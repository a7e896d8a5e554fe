//! Live capture end to end: a veth pair inside a network namespace this test creates, a real
//! capture replayed into one end with tcpreplay, `normwatch flows --interface` on the other.
//! The flows must be the ones the offline run derives from the same file.
//!
//! Needs root (namespaces, raw sockets), `ip` and `tcpreplay`. Without them the test says so
//! and passes, except under CI (`CI` set), where their absence is a failure.

#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
#[path = "common/netns.rs"]
mod netns;

use netns::{ready, Netns};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_normwatch");

fn trace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/captures/zeek/testing/btest/Traces/wikipedia.pcap")
}

/// (orig, resp, proto) → (orig pkts, orig bytes, resp pkts, resp bytes), from Zeek TSV.
fn parse(tsv: &str) -> BTreeMap<String, Vec<[u64; 4]>> {
    let mut m: BTreeMap<String, Vec<[u64; 4]>> = BTreeMap::new();
    for line in tsv.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let c: Vec<&str> = line.split('\t').collect();
        let key = format!("{}:{} {}:{} {}", c[0], c[1], c[2], c[3], c[4]);
        let n = |i: usize| c[i].parse::<u64>().unwrap();
        m.entry(key).or_default().push([n(6), n(7), n(8), n(9)]);
    }
    for v in m.values_mut() {
        v.sort();
    }
    m
}

#[test]
fn live_capture_matches_offline_flows() {
    live_matches_offline("", None);
}

/// Two capture threads, the kernel spreading flows over them by hash: both directions of
/// every flow must still meet in one flow table.
#[test]
fn fanout_over_two_threads_matches_offline_flows() {
    live_matches_offline("fan", Some("[capture]\nthreads = 2\n"));
}

fn live_matches_offline(tag: &str, config: Option<&str>) {
    if !ready("live capture test", &["ip", "tcpreplay"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("capture.toml");
    std::fs::write(&cfg, config.unwrap_or("")).unwrap();
    let ns = Netns::with_veth(&format!("test{tag}"));

    let live = ns.spawn(&[
        BIN,
        "flows",
        "--config",
        cfg.to_str().unwrap(),
        "--interface",
        "nwb",
        "--checksums",
        "ignore",
        "--duration",
        "8s",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    // Replay at a fixed rate: the packets keep their order, and the whole trace fits well
    // inside every flow timeout, as it did in the original capture.
    ns.exec(&[
        "tcpreplay",
        "-q",
        "--pps=500",
        "-i",
        "nwa",
        trace().to_str().unwrap(),
    ]);
    let out = live.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "live run failed: {stderr}");

    let offline = Command::new(BIN)
        .args([
            "flows",
            "--checksums",
            "ignore",
            "--pcap",
            trace().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(offline.status.success());
    let want = parse(&String::from_utf8_lossy(&offline.stdout));
    let got = parse(&String::from_utf8_lossy(&out.stdout));
    assert!(!want.is_empty());
    assert_eq!(
        got, want,
        "live flows differ from offline flows; capture log: {stderr}"
    );
}
