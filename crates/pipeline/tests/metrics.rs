//! The encoded metrics text of each stage after a known input: a real capture through the
//! embedded pipeline (sensor, in-process bus, detector).

use normwatch_model::{Alert, AlertState};
use normwatch_pipeline::capture::Input;
use normwatch_pipeline::detector::{detector, DetectorSink};
use normwatch_pipeline::metrics::Metrics;
use normwatch_pipeline::sinks::AlertSink;
use normwatch_pipeline::topology::{run, SensorOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn capture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/captures")
        .join(rel)
}

#[derive(Default)]
struct Keep(Vec<Alert>);

impl AlertSink for Keep {
    fn alert(&mut self, a: &Alert) -> anyhow::Result<()> {
        self.0.push(a.clone());
        Ok(())
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The value of one series (`name{labels}` exactly as encoded, or a bare name).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.rsplit_once(' ').is_some_and(|(k, _)| k == series))
        .and_then(|l| l.rsplit_once(' ')?.1.parse().ok())
}

#[test]
fn each_stage_reports_what_it_did_with_a_syn_flood() {
    let cfg = normwatch_config::parse(
        r#"
[[asset]]
id = "web"
name = "Web portal"
operator = "Example operator"
sector = "health"
service = "patient portal"
cidrs = ["10.10.10.0/24"]
roles = ["public-service"]

# A public web service sees at most tens of new connections a second.
[asset.thresholds]
new_flows_per_s = 200
"#,
        Path::new("metrics-test.toml"),
    )
    .unwrap();
    let metrics = Metrics::new();
    let mut keep = Keep::default();
    let d = detector(&cfg).unwrap();
    let mut sink =
        DetectorSink::new(d, &mut keep, None).with_metrics(metrics.detect.clone(), &cfg.assets);
    let input = Input::Files(vec![capture(
        "packet-captures/pkt.TCP.synflood.spoofed.pcap",
    )]);
    let (sensor, consumed) = run(
        &cfg,
        &input,
        &SensorOptions::default(),
        &mut sink,
        &metrics,
        &AtomicBool::new(false),
    )
    .unwrap();
    // While the alert is open (before the end of input closes it).
    let during = metrics.encode_text();
    sink.finish().unwrap();
    drop(sink);
    let text = metrics.encode_text();

    // Sensor: every packet counted, into a flow or a drop.
    let packets = value(&text, "normwatch_sensor_packets_total").unwrap();
    assert_eq!(packets, sensor.stats.packets as f64);
    let dropped: f64 = text
        .lines()
        .filter(|l| l.starts_with("normwatch_sensor_dropped_packets_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(
        dropped,
        sensor.stats.drops.iter().sum::<u64>() as f64,
        "{text}"
    );
    assert_eq!(
        value(&text, "normwatch_sensor_flow_records_total"),
        Some(sensor.records as f64)
    );
    assert_eq!(value(&text, "normwatch_sensor_active_flows"), Some(0.0));
    assert_eq!(
        value(
            &text,
            "normwatch_sensor_capture_dropped_packets_total{where=\"kernel\"}"
        ),
        Some(0.0)
    );

    // Transport: every batch crossed the in-process bus once.
    assert_eq!(
        value(
            &text,
            "normwatch_transport_produced_messages_total{topic=\"flows\"}"
        ),
        Some(sensor.batches as f64),
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            "normwatch_transport_consumed_messages_total{topic=\"flows\"}"
        ),
        Some(consumed.batches as f64)
    );

    // Detector: the flood opened one alert, tagged 13(f), which the end of input closed.
    assert_eq!(
        value(&text, "normwatch_detect_flow_records_total"),
        Some(consumed.records as f64)
    );
    let opened: Vec<&Alert> = keep
        .0
        .iter()
        .filter(|a| a.state == AlertState::Open)
        .collect();
    assert_eq!(opened.len(), 1, "{:?}", keep.0);
    let kind = opened[0].kind.as_str();
    assert_eq!(
        value(
            &text,
            &format!("normwatch_detect_alert_events_total{{asset=\"web\",kind=\"{kind}\",state=\"open\"}}")
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            &format!("normwatch_detect_alert_events_total{{asset=\"web\",kind=\"{kind}\",state=\"closed\"}}")
        ),
        Some(1.0)
    );
    let open_now: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("normwatch_detect_open_alerts{asset=\"web\""))
        .collect();
    assert!(!open_now.is_empty(), "{text}");
    assert!(open_now.iter().all(|l| l.ends_with(" 0")), "{open_now:?}");
    assert!(
        during.lines().any(
            |l| l.starts_with("normwatch_detect_open_alerts{asset=\"web\"") && l.ends_with(" 1")
        ),
        "{during}"
    );
    assert!(
        during.contains(
            "normwatch_detect_open_alerts_by_norm{asset=\"web\",norm=\"ungge2015.13f\"} 1"
        ),
        "{during}"
    );
    assert_eq!(
        value(
            &text,
            "normwatch_detect_asset_threshold{asset=\"web\",rate=\"new_flows_per_s\"}"
        ),
        Some(200.0)
    );
    let new_flows = value(
        &text,
        "normwatch_detect_asset_new_flows_per_second{asset=\"web\"}",
    )
    .unwrap();
    assert!(new_flows > 0.0, "{text}");
    assert_eq!(
        value(
            &text,
            &format!("normwatch_detect_alert_open_delay_seconds_count{{kind=\"{kind}\"}}")
        ),
        Some(1.0)
    );
    let batches = value(&text, "normwatch_detect_batch_seconds_count").unwrap();
    assert_eq!(batches, consumed.batches as f64);
}
