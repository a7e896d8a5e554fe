//! Stopping a live `normwatch run` with SIGTERM mid-stream loses nothing: a SYN flood is
//! replayed into a veth pair inside a network namespace this test creates; `dumpcap` records
//! the same interface beside normwatch; normwatch is stopped while flows and the alert are
//! still open. It must exit 0 having written every flow record and alert event that an
//! offline `run` over dumpcap's recording of the same packets writes.
//!
//! Needs root (namespaces, raw sockets), `ip`, `tcpreplay` and `dumpcap`. Without them the
//! test says so and passes, except under CI (`CI` set), where their absence is a failure.

#![allow(clippy::print_stderr)]

#[path = "common/netns.rs"]
mod netns;

use netns::{ready, sh, Netns};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_normwatch");

fn flood() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/captures/packet-captures/pkt.TCP.synflood.spoofed.pcap")
}

fn signal(child: &Child, sig: &str) {
    sh(&["kill", &format!("-{sig}"), &child.id().to_string()]);
}

/// A protected network the flood's target is in, with limits the flood crosses.
fn config(dir: &Path) -> PathBuf {
    let cfg = dir.join("flood.toml");
    std::fs::write(
        &cfg,
        "[sensor]\nchecksums = \"ignore\"\n[[asset]]\nid = \"web\"\nname = \"Web portal\"\noperator = \"Example\"\nsector = \"health\"\nservice = \"patient portal\"\ncidrs = [\"10.10.10.0/24\"]\nroles = [\"public-service\"]\n[asset.thresholds]\npps = 20000\nnew_flows_per_s = 200\n",
    )
    .unwrap();
    cfg
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not end within {limit:?} of the stop signal");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

/// Each connection's final record as sorted JSON lines. Interim reports and what a final
/// record says of them (`prior`) are left out: a quiet live link reports on the wall clock
/// where the offline replay waits for the next packet, so where reports fall may differ, never
/// what the connections carried or which seconds it counts in.
fn lines(path: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut r: serde_json::Value = serde_json::from_str(l).unwrap();
            if r["end_reason"] == "interim" {
                return None;
            }
            r.as_object_mut().unwrap().remove("prior");
            Some(r.to_string())
        })
        .collect();
    v.sort();
    v
}

/// Alert events, in the order written.
fn alerts(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Replays part of the flood, stops normwatch with `signals` (one or two, 50 ms apart) while
/// flows and the alert are open, and compares with the offline run of dumpcap's recording.
fn stop_mid_stream(tag: &str, signals: &[&str]) {
    let ns = Netns::with_veth(tag);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let seen = dir.path().join("seen.pcapng");
    let dumpcap = ns.spawn(&["dumpcap", "-q", "-i", "nwb", "-w", seen.to_str().unwrap()]);
    let (live_flows, live_alerts) = (dir.path().join("live.json"), dir.path().join("live.jsonl"));
    let live = ns.spawn(&[
        BIN,
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--interface",
        "nwb",
        "--format",
        "json",
        "--flows-out",
        live_flows.to_str().unwrap(),
        "--alerts-out",
        live_alerts.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(2000));
    // 12 000 packets at 4 000 a second: three seconds of flood, far above the asset's
    // new-flow limit; most SYN-only attempts are still open when the signal comes.
    ns.exec(&[
        "tcpreplay",
        "-q",
        "--pps=4000",
        "--limit=12000",
        "-i",
        "nwa",
        flood().to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(300));
    for (i, sig) in signals.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(50));
        }
        signal(&live, sig);
    }
    let out = wait_with_timeout(live, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "live run: {stderr}");
    signal(&dumpcap, "TERM");
    let dc = wait_with_timeout(dumpcap, Duration::from_secs(10));
    assert!(
        dc.status.success(),
        "{}",
        String::from_utf8_lossy(&dc.stderr)
    );

    let (off_flows, off_alerts) = (dir.path().join("off.json"), dir.path().join("off.jsonl"));
    let off = Command::new(BIN)
        .args([
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--format",
            "json",
            "--flows-out",
            off_flows.to_str().unwrap(),
            "--alerts-out",
            off_alerts.to_str().unwrap(),
            "--pcap",
            seen.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
    let want = lines(&off_flows);
    assert!(want.len() > 5_000, "{} records offline", want.len());
    let got = lines(&live_flows);
    assert_eq!(got.len(), want.len(), "record count; live log: {stderr}");
    assert!(got == want, "live records differ from offline ones");
    let want = alerts(&off_alerts);
    assert!(
        want.iter()
            .any(|a| a["kind"] == "syn_flood" && a["state"] == "closed"),
        "{want:#?}"
    );
    assert_eq!(alerts(&live_alerts), want, "live log: {stderr}");
}

#[test]
fn sigterm_mid_stream_loses_no_record_or_alert() {
    if ready("live stop test", &["ip", "tcpreplay", "dumpcap"]) {
        stop_mid_stream("term", &["TERM"]);
    }
}

#[test]
fn second_signal_still_loses_no_record_or_alert() {
    if ready("live stop test", &["ip", "tcpreplay", "dumpcap"]) {
        stop_mid_stream("int", &["INT", "TERM"]);
    }
}
