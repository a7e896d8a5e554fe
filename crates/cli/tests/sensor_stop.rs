//! `normwatch sensor` stopped by signals while the broker is unreachable: the first signal
//! ends every open flow and waits for the broker (up to `--drain-timeout`), a second one
//! stops that wait. Either way every record read goes to the spool, none is lost, and the
//! process exits 0 after the second signal without waiting out the drain timeout.
//!
//! No broker is needed: the configured one is a loopback port nothing listens on.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_normwatch");

fn flood() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/captures/packet-captures/pkt.TCP.synflood.spoofed.pcap")
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn kill(pid: u32, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(st.success());
}

#[test]
fn second_signal_stops_the_drain_wait_and_spools_every_record() {
    let dir = tempfile::tempdir().unwrap();
    // A port that was free a moment ago: connections to it are refused.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.path().join("sensor.toml");
    std::fs::write(
        &cfg,
        format!(
            "[sensor]\nid = \"stop-test\"\n[bus]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:{port}\"\nbatch_records = 256\nbatch_linger = \"50ms\"\n[kafka]\ndelivery_timeout = \"2s\"\n[spool]\npath = \"{}\"\n",
            dir.path().join("spool").display()
        ),
    )
    .unwrap();
    let child = Command::new(BIN)
        .args([
            "sensor",
            "--stats",
            "--drain-timeout",
            "600s",
            "--pps",
            "5000",
        ])
        .arg("--config")
        .arg(&cfg)
        .arg("--pcap")
        .arg(flood())
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The sensor gives the absent broker 5 s to create topics, then reads; part of the
    // capture is read (flows are open: SYN attempts end after 5 s), then the first signal,
    // then — while the sensor waits for the absent broker — the second.
    std::thread::sleep(Duration::from_secs(8));
    kill(child.id(), "TERM");
    std::thread::sleep(Duration::from_secs(2));
    let second = Instant::now();
    kill(child.id(), "INT");
    let out = child.wait_with_output().unwrap();
    let waited = second.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        waited < Duration::from_secs(30),
        "the second signal did not end the drain wait ({waited:?})"
    );
    let packets = metric(&err, "normwatch_sensor_packets_total");
    let records = metric(&err, "normwatch_sensor_flow_records_total");
    assert!(
        packets > 2_000.0 && packets < 37_000.0,
        "stopped mid-capture: {packets} packets"
    );
    // Every SYN of the spoofed flood is a flow of its own; each went out in a record.
    assert!(records > 1_000.0, "{records} records");
    assert_eq!(
        metric(&err, "normwatch_sensor_lost_records_total"),
        0.0,
        "{err}"
    );
    assert_eq!(
        metric(&err, "normwatch_sensor_published_records_total"),
        records,
        "every record handed to the transport"
    );
    assert_eq!(
        metric(&err, "normwatch_transport_spool_messages"),
        metric(&err, "normwatch_sensor_published_batches_total"),
        "every batch waits in the spool: {err}"
    );
    assert_eq!(
        metric(&err, "normwatch_transport_spool_dropped_messages_total"),
        0.0
    );
}
