//! The detector over exported flows: the spoofed SYN flood capture exported by softflowd
//! (NetFlow v9 and IPFIX) raises the same alert kind against the same asset as the same
//! capture through the sensor's packet path, with the detector's default settings and the
//! thresholds of `tests/tests/detect_captures.rs` (an asset 10.10.10.0/24 with at most 200
//! new flows a second).

#![allow(clippy::print_stdout)]

mod common;

use common::*;
use normwatch_config::norms::load_norms;
use normwatch_detect::{Detector, Settings};
use normwatch_model::flow::RecordSource;
use normwatch_model::{
    Alert, AlertKind, AlertState, Asset, AssetId, AssetIndex, FlowRecord, Rates, Role, Sector,
    Thresholds,
};
use std::path::Path;
use std::sync::Arc;

const SYNFLOOD: &str = "packet-captures/pkt.TCP.synflood.spoofed.pcap";

fn assets() -> Arc<AssetIndex> {
    let a = Asset {
        id: AssetId(Arc::from("victim")),
        name: "victim".into(),
        operator: "Example operator".into(),
        sector: Sector::Energy,
        service: "a public service".into(),
        cidrs: vec!["10.10.10.0/24".parse().unwrap()],
        roles: vec![Role::PublicService],
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
    };
    Arc::new(AssetIndex::new(vec![a]).unwrap())
}

fn detect(assets: Arc<AssetIndex>, records: &[FlowRecord]) -> Vec<Alert> {
    let norms = load_norms(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/norms.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut d = Detector::new(assets, norms, Settings::default());
    let mut out = Vec::new();
    for chunk in records.chunks(256) {
        d.process(chunk, &mut out);
    }
    d.finish(&mut out);
    out
}

fn opened(alerts: &[Alert]) -> Vec<(AlertKind, String)> {
    let mut v: Vec<_> = alerts
        .iter()
        .filter(|a| a.state == AlertState::Open)
        .map(|a| (a.kind, a.asset.to_string()))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn check(version: u8, source: RecordSource) {
    let assets = assets();
    let pcap = ShortCopy::new(&capture(SYNFLOOD));
    let sensor = sensor_records(&pcap.0, assets.clone());
    let packets = opened(&detect(assets.clone(), &sensor));
    assert!(
        packets
            .iter()
            .any(|(k, a)| *k == AlertKind::SynFlood && a == "victim"),
        "the packet path raised {packets:?}"
    );
    let (sock, port) = bind();
    let child = softflowd(&pcap.0, version, port);
    let (_, out) = receive(&sock, child, decoder_config(assets.clone()));
    assert!(out.iter().all(|e| e.origin.source == source));
    let records: Vec<FlowRecord> = out.into_iter().map(|e| e.record).collect();
    // Every packet of the flood is in the export, as in the interop tests.
    let all = |_: &DirKey| true;
    let diff = differences(
        &format!("synflood v{version}"),
        &per_direction(&sensor, all),
        &per_direction(&records, all),
        true,
    );
    assert_eq!(diff, 0);
    let export = opened(&detect(assets, &records));
    println!("packets: {packets:?}\nexport v{version}: {export:?}");
    assert_eq!(export, packets);
}

#[test]
fn softflowd_v9_syn_flood_raises_the_packet_paths_alert() {
    check(9, RecordSource::NetflowV9);
}

#[test]
fn softflowd_ipfix_syn_flood_raises_the_packet_paths_alert() {
    check(10, RecordSource::Ipfix);
}
