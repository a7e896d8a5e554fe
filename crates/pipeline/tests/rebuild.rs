//! A detector group member that replaces a killed one rebuilds its state from the start of
//! the flows topic and sends only the alert events the alerts topic does not hold: the two
//! together send exactly the events one detector sends, wherever the first was killed and
//! wherever its committed offset stood. Real captures through the embedded sensor; the
//! topics are played by the batches it produced.

use normwatch_model::{Alert, FlowRecord};
use normwatch_pipeline::capture::Input;
use normwatch_pipeline::detector::{detector, DetectorSink};
use normwatch_pipeline::metrics::Metrics;
use normwatch_pipeline::sinks::{AlertSink, FlowSink};
use normwatch_pipeline::topology::{run, SensorOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

fn capture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/captures")
        .join(rel)
}

/// Alert events as the alerts topic holds them (JSON).
#[derive(Default)]
struct Topic(Vec<Vec<u8>>);

impl AlertSink for Topic {
    fn alert(&mut self, a: &Alert) -> anyhow::Result<()> {
        self.0.push(serde_json::to_vec(a)?);
        Ok(())
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// The batches a consumer receives: records, key, the sensor's clock.
#[derive(Default)]
struct Batches(Vec<(Vec<FlowRecord>, Vec<u8>, u64)>);

impl FlowSink for Batches {
    fn accept(&mut self, _: &[FlowRecord]) -> anyhow::Result<()> {
        unreachable!("batches come with their key and clock")
    }
    fn accept_batch(
        &mut self,
        records: &[FlowRecord],
        key: &[u8],
        clock_ns: u64,
        _: bool,
    ) -> anyhow::Result<()> {
        self.0.push((records.to_vec(), key.to_vec(), clock_ns));
        Ok(())
    }
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

fn multiset(v: &[Vec<u8>]) -> BTreeMap<&[u8], usize> {
    let mut m = BTreeMap::new();
    for e in v {
        *m.entry(e.as_slice()).or_default() += 1;
    }
    m
}

#[test]
fn a_replacement_sends_exactly_what_its_killed_predecessor_left_unsent() {
    let cfg = normwatch_config::parse(
        r#"
[sensor.timeouts]
tcp_idle = "2s"
tcp_attempt = "2s"
tcp_linger = "1s"

[detect]
lateness = "2s"
quiet_period = "5s"
update_interval = "2s"

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
"#,
        Path::new("rebuild-test.toml"),
    )
    .unwrap();
    let metrics = Metrics::new();
    let mut batches = Batches::default();
    let input = Input::Files(vec![
        capture("packet-captures/pkt.TCP.synflood.spoofed.pcap"),
        capture("bro-simple-scan/testing/pcaps/445_scan.pcap"),
    ]);
    run(
        &cfg,
        &input,
        &SensorOptions::default(),
        &mut batches,
        &metrics,
        &AtomicBool::new(false),
    )
    .unwrap();
    let batches = batches.0;
    assert!(batches.len() > 20, "{} batches", batches.len());

    // One detector over everything.
    let mut want = Topic::default();
    {
        let mut sink = DetectorSink::new(detector(&cfg).unwrap(), &mut want, None);
        for (r, k, c) in &batches {
            sink.accept_batch(r, k, *c, false).unwrap();
        }
        sink.end().unwrap();
    }
    let states = |t: &Topic, s: &str| {
        t.0.iter()
            .filter(|e| String::from_utf8_lossy(e).contains(&format!("\"state\":\"{s}\"")))
            .count()
    };
    assert!(states(&want, "open") >= 1 && states(&want, "update") >= 1);

    let n = batches.len();
    for killed_at in [1, n / 4, n / 2, 3 * n / 4, n - 1] {
        for committed in [0, killed_at / 2, killed_at] {
            // The predecessor, killed after `killed_at` batches (its last events sent), having
            // committed the first `committed`.
            let mut topic = Topic::default();
            {
                let mut sink = DetectorSink::new(detector(&cfg).unwrap(), &mut topic, None);
                for (r, k, c) in &batches[..killed_at] {
                    sink.accept_batch(r, k, *c, false).unwrap();
                }
            }
            let sent = topic.0.clone();
            let mut successor = Topic::default();
            {
                let mut sink = DetectorSink::new(detector(&cfg).unwrap(), &mut successor, None)
                    .rebuilding(Box::new(|| Ok(sent.clone())));
                sink.reassigned().unwrap();
                for (i, (r, k, c)) in batches.iter().enumerate() {
                    sink.accept_batch(r, k, *c, i < committed).unwrap();
                }
                sink.end().unwrap();
                assert_eq!(sink.suppressed as usize, topic.0.len());
            }
            let mut all = topic.0.clone();
            all.extend(successor.0);
            assert_eq!(
                multiset(&all),
                multiset(&want.0),
                "killed after {killed_at} of {n} batches, {committed} committed"
            );
        }
    }
}
