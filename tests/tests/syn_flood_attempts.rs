//! A random-source SYN flood through the sensor's compact path for one-packet attempts
//! (`FlowConfig::attempts_above`): the detector raises the same syn_flood alert with the same
//! figures as when every forged SYN is a flow of its own, from a bounded number of records.

use normwatch_benches::SynFlood;
use normwatch_config::norms::{load_norms, NormCatalogue};
use normwatch_detect::{Detector, Settings};
use normwatch_model::{
    Alert, AlertKind, AlertState, Asset, AssetId, AssetIndex, FlowRecord, Rates, Sector, Thresholds,
};
use normwatch_sensor::decode::LinkType;
use normwatch_sensor::{FlowConfig, FlowTable};
use normwatch_tests::{capture, config, flows_of};
use std::path::Path;
use std::sync::Arc;

fn norms() -> NormCatalogue {
    load_norms(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/norms.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A web server expecting at most tens of new connections a second.
fn web(cidr: &str) -> Asset {
    Asset {
        id: AssetId(Arc::from("web")),
        name: "web".into(),
        operator: "Example operator".into(),
        sector: Sector::Energy,
        service: "a public service".into(),
        cidrs: vec![cidr.parse().unwrap()],
        roles: vec![],
        service_ports: vec![],
        thresholds: Thresholds {
            total: Rates {
                pps: Some(20_000),
                bps: Some(100_000_000),
                new_flows_per_s: Some(200),
            },
            ..Thresholds::default()
        },
        allow: vec![],
    }
}

fn sensor(cidr: &str, attempts_above: Option<u64>) -> FlowConfig {
    let mut cfg = config(false);
    cfg.report_ns = Some(100_000_000);
    cfg.attempts_above = attempts_above;
    cfg.assets = Arc::new(AssetIndex::new(vec![web(cidr)]).unwrap());
    cfg
}

fn detect(index: Arc<AssetIndex>, flows: &[FlowRecord]) -> Vec<Alert> {
    let mut d = Detector::new(index, norms(), Settings::default());
    let mut out = Vec::new();
    for chunk in flows.chunks(256) {
        d.process(chunk, &mut out);
    }
    d.finish(&mut out);
    out
}

fn closed_flood(alerts: &[Alert]) -> &Alert {
    alerts
        .iter()
        .rfind(|a| a.kind == AlertKind::SynFlood && a.state == AlertState::Closed)
        .expect("a closed syn_flood alert")
}

fn kinds(alerts: &[Alert]) -> Vec<(AlertKind, AlertState)> {
    alerts.iter().map(|a| (a.kind, a.state)).collect()
}

#[test]
fn the_spoofed_flood_capture_gives_the_same_alert_from_aggregated_attempts() {
    let rel = "packet-captures/pkt.TCP.synflood.spoofed.pcap";
    let run = |above| {
        let cfg = sensor("10.10.10.0/24", above);
        let index = cfg.assets.clone();
        let (flows, stats) = flows_of(&capture(rel), cfg).unwrap_or_else(|(_, e)| panic!("{e}"));
        let alerts = detect(index, &flows);
        (flows, stats, alerts)
    };
    let (plain, _, want) = run(None);
    // Every SYN from a new source held as an attempt (the capture is ~1 600 a second).
    let (compact, stats, got) = run(Some(0));
    assert!(stats.attempts_held > 30_000, "{stats:?}");
    assert!(
        compact.len() * 20 < plain.len(),
        "{} records against {}",
        compact.len(),
        plain.len()
    );
    assert_eq!(kinds(&got), kinds(&want));
    let (w, g) = (closed_flood(&want), closed_flood(&got));
    assert_eq!(g.id, w.id, "the same start second");
    // The peak rates: a second under way is judged with part of the one before, at the
    // latest record's time, so where the records of a batch end moves the peak a little.
    let near = |a: f64, b: f64| (a - b).abs() <= b * 0.01;
    let (gm, wm) = (g.measured, w.measured);
    assert!(
        near(gm.pps, wm.pps)
            && near(gm.bps, wm.bps)
            && near(gm.new_flows_per_s, wm.new_flows_per_s),
        "{gm:?} against {wm:?}"
    );
    assert_eq!(g.severity, w.severity);
    assert_eq!(g.norms, w.norms);
    let (ws, gs) = (w.spoofing.as_ref().unwrap(), g.spoofing.as_ref().unwrap());
    assert_eq!(gs.likely_spoofed, ws.likely_spoofed);
    assert_eq!(gs.one_packet_half_open_share, ws.one_packet_half_open_share);
    assert!(gs.seen_once_share.unwrap() > 0.75, "{gs:?}");
    // The forged SYNs' TTLs (242 and 244 in this capture) and source ports, the same from
    // the aggregates as from a flow per SYN.
    assert_eq!(ws.ttl_spread, Some(2), "{ws:?}");
    assert_eq!(gs.ttl_spread, ws.ttl_spread, "{gs:?}");
    assert!(ws.source_port_spread.unwrap() > 60_000, "{ws:?}");
    let (wp, gp) = (
        f64::from(ws.source_port_spread.unwrap()),
        f64::from(gs.source_port_spread.unwrap()),
    );
    assert!((gp - wp).abs() / wp < 0.01, "{gs:?} against {ws:?}");
    // Distinct sources: the same sketch, fed while the attack was followed.
    let (wn, gn) = (
        w.sources_total.unwrap() as f64,
        g.sources_total.unwrap() as f64,
    );
    assert!((gn - wn).abs() / wn < 0.05, "{gn} against {wn}");
    // A sample of the sources is named, each with its share.
    assert!(!g.top_sources.is_empty());
    assert!(g
        .top_sources
        .iter()
        .all(|s| s.share > 0.0 && s.share <= 1.0));
}

#[test]
fn a_random_source_flood_is_one_syn_flood_with_its_figures_from_few_records() {
    // 600 000 SYNs at 300 000 a second: two seconds of flood, every packet a new source.
    let flood = SynFlood::new(600_000, 300_000);
    let cfg = sensor("198.51.100.10/32", Some(10_000));
    let index = cfg.assets.clone();
    let mut t = FlowTable::new(cfg);
    let mut flows = Vec::new();
    for (ts, f) in flood.frames() {
        t.process_frame(LinkType::Ethernet, &f, f.len(), ts, &mut flows);
    }
    t.flush(&mut flows);
    // The first 10 000 SYNs are flows (a report and a final record each); the rest are
    // counted per report interval.
    assert!(
        flows.len() < 2 * 10_000 + 2 * 100,
        "{} records for 2 s of flood",
        flows.len()
    );
    let alerts = detect(index, &flows);
    let opened: Vec<_> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Open)
        .map(|a| a.kind)
        .collect();
    assert_eq!(opened, [AlertKind::SynFlood], "{alerts:#?}");
    let a = closed_flood(&alerts);
    // Every second of the flood: 300 000 packets of 40 bytes, 300 000 new attempts.
    assert!(
        (a.measured.pps - 300_000.0).abs() < 1_000.0,
        "{:?}",
        a.measured
    );
    assert!(
        (a.measured.bps - 300_000.0 * 320.0).abs() < 1e6,
        "{:?}",
        a.measured
    );
    assert!(
        (a.measured.new_flows_per_s - 300_000.0).abs() < 1_000.0,
        "{:?}",
        a.measured
    );
    let n = a.sources_total.unwrap() as f64;
    assert!((n - 600_000.0).abs() / 600_000.0 < 0.1, "{n} sources");
    let sp = a.spoofing.as_ref().unwrap();
    assert!(sp.likely_spoofed, "{sp:?}");
    assert!(sp.one_packet_half_open_share.unwrap() > 0.99, "{sp:?}");
    // The generator draws TTLs 32 to 231 and source ports 1 024 to 65 023.
    assert_eq!(sp.ttl_spread, Some(199), "{sp:?}");
    assert!(sp.source_port_spread.unwrap() > 63_000, "{sp:?}");
    assert!(!a.top_sources.is_empty());
}
