//! Flow exports through the embedded pipeline: `normwatch run` with an `[exporters]` listener
//! reads a benign capture while softflowd exports the spoofed SYN flood to the listener on
//! loopback; the exported records take the same batches, in-process bus and detector stage as
//! the packets' records, and the flood raises its SYN-flood alert against the asset. The
//! export metrics count what was decoded.

use normwatch_pipeline::capture::{Input, SourceOptions};
use normwatch_pipeline::detector::{detector, DetectorSink, LogAlerts};
use normwatch_pipeline::metrics::Metrics;
use normwatch_pipeline::topology::{run, SensorOptions};
use normwatch_tests::capture;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.rsplit_once(' ').is_some_and(|(k, _)| k == series))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn exported_syn_flood_joins_the_packet_path_and_raises_the_alert() {
    assert!(
        Path::new("/usr/sbin/softflowd").exists(),
        "softflowd is not installed: apt-get install softflowd (.ci/run does)"
    );
    // A free loopback port for the listener.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = normwatch_config::parse(
        &format!(
            r#"
[exporters]
listen = ["127.0.0.1:{port}"]

[[asset]]
id = "web"
name = "Web portal"
operator = "Example operator"
sector = "health"
service = "patient portal"
cidrs = ["10.10.10.0/24"]
roles = ["public-service"]

[asset.thresholds]
new_flows_per_s = 200
"#
        ),
        Path::new("flow-export-test.toml"),
    )
    .unwrap();
    // softflowd cuts `-r` paths longer than 16 characters: a short copy, given relative.
    let short = PathBuf::from(format!("/tmp/q{}.pcap", std::process::id() % 100_000));
    std::fs::copy(
        capture("packet-captures/pkt.TCP.synflood.spoofed.pcap"),
        &short,
    )
    .unwrap();
    let metrics = Metrics::new();
    let mut log = LogAlerts;
    let mut sink = DetectorSink::new(detector(&cfg).unwrap(), &mut log, None)
        .with_metrics(metrics.detect.clone(), &cfg.assets);
    // The packet input, paced so that it lasts while the export arrives.
    let input = Input::Files(vec![capture("zeek/testing/btest/Traces/wikipedia.pcap")]);
    let opts = SensorOptions {
        source: SourceOptions { pps: Some(40) },
        ..SensorOptions::default()
    };
    let exporter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        let status = Command::new("softflowd")
            .current_dir("/tmp")
            .args(["-d", "-m", "1000000", "-r"])
            .arg(short.file_name().unwrap())
            .args(["-n", &format!("127.0.0.1:{port}"), "-v", "9"])
            .args([
                "-c",
                &format!("/tmp/c{port}"),
                "-p",
                &format!("/tmp/p{port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_file(&short);
        status.unwrap()
    });
    let (sensor, _) = run(
        &cfg,
        &input,
        &opts,
        &mut sink,
        &metrics,
        &AtomicBool::new(false),
    )
    .unwrap();
    assert!(exporter.join().unwrap().success());
    sink.finish().unwrap();
    drop(sink);
    let text = metrics.encode_text();
    let exported = value(
        &text,
        "normwatch_sensor_export_records_total{protocol=\"netflow-v9\"}",
    )
    .unwrap();
    // Every flow the packet path finds in the flood is one record of softflowd's export.
    let (direct, _) = normwatch_tests::flows_of(
        &capture("packet-captures/pkt.TCP.synflood.spoofed.pcap"),
        normwatch_tests::config(true),
    )
    .unwrap_or_else(|(_, e)| panic!("{e}"));
    assert_eq!(exported, direct.len() as f64, "{text}");
    assert_eq!(
        value(
            &text,
            "normwatch_sensor_export_dropped_total{reason=\"channel\"}"
        ),
        Some(0.0)
    );
    // Both inputs went through the one publisher: the wikipedia capture's flows and the
    // exported ones.
    let published = value(&text, "normwatch_sensor_published_records_total").unwrap();
    assert_eq!(published, sensor.records as f64);
    assert!(sensor.records as f64 > exported, "{text}");
    // The detector stage opened the SYN-flood alert on the asset, and nothing else.
    let opened: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("normwatch_detect_alert_events_total{") && l.contains("open"))
        .filter(|l| !l.ends_with(" 0"))
        .collect();
    assert_eq!(
        opened,
        ["normwatch_detect_alert_events_total{asset=\"web\",kind=\"syn_flood\",state=\"open\"} 1"]
    );
}
