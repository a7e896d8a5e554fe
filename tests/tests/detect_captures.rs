//! The detector over real captures: the right alert kind against the right asset, tagged
//! with the norms it touches; nothing on benign traffic; the same alerts on every replay.
//!
//! Thresholds are what an operator would configure for the asset from its expected traffic
//! (a control-system or web server seeing at most tens of new connections a second), not
//! values fitted to a capture.

use normwatch_config::norms::{load_norms, NormCatalogue};
use normwatch_detect::{Detector, Settings};
use normwatch_model::{
    Alert, AlertKind, AlertState, Asset, AssetId, AssetIndex, Rates, Role, Sector, Thresholds,
};
use normwatch_tests::{capture, config, flows_of};
use std::path::Path;
use std::sync::Arc;

fn norms() -> NormCatalogue {
    load_norms(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/norms.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn asset(id: &str, cidr: &str, roles: &[Role], allow: &[&str]) -> Asset {
    Asset {
        id: AssetId(Arc::from(id)),
        name: id.into(),
        operator: "Example operator".into(),
        sector: Sector::Energy,
        service: "a public service".into(),
        cidrs: vec![cidr.parse().unwrap()],
        roles: roles.to_vec(),
        service_ports: vec![],
        thresholds: Thresholds {
            total: Rates {
                pps: Some(20_000),
                bps: Some(100_000_000),
                new_flows_per_s: Some(200),
            },
            ..Thresholds::default()
        },
        allow: allow
            .iter()
            .map(|a| format!("{a}/32").parse().unwrap())
            .collect(),
    }
}

/// Replays `rel` through the sensor and the detector, records handed over as the flow
/// table emits them.
fn alerts(rel: &str, assets: Vec<Asset>) -> Vec<Alert> {
    let mut cfg = config(false);
    cfg.assets = Arc::new(AssetIndex::new(assets).unwrap());
    let index = cfg.assets.clone();
    let (flows, _) = flows_of(&capture(rel), cfg).unwrap_or_else(|(_, e)| panic!("{e}"));
    let mut d = Detector::new(index, norms(), Settings::default());
    let mut out = Vec::new();
    for chunk in flows.chunks(256) {
        d.process(chunk, &mut out);
    }
    d.finish(&mut out);
    out
}

fn opened(alerts: &[Alert]) -> Vec<(AlertKind, &str)> {
    alerts
        .iter()
        .filter(|a| a.state == AlertState::Open)
        .map(|a| (a.kind, a.asset.as_str()))
        .collect()
}

const SYN_FLOOD: &str = "packet-captures/pkt.TCP.synflood.spoofed.pcap";

#[test]
fn spoofed_syn_flood_is_one_syn_flood_alert_with_13f() {
    let a = alerts(SYN_FLOOD, vec![asset("web", "10.10.10.0/24", &[], &[])]);
    assert_eq!(opened(&a), [(AlertKind::SynFlood, "web")], "{a:#?}");
    let open = &a[0];
    assert!(open.norms.violated.contains(&"ungge2015.13f".to_string()));
    assert!(open
        .norms
        .request_basis
        .contains(&"ungge2015.13h".to_string()));
    assert!(open.norms.caveats.contains(&"ungge2015.13b".to_string()));
    assert!(!open.norms.violated.contains(&"ungge2015.13k".to_string()));
    assert!(open.measured.new_flows_per_s > 200.0);
    // One attack, one alert: every event carries the same id, and it ends closed.
    assert!(a.iter().all(|x| x.id == open.id));
    assert_eq!(a.last().unwrap().state, AlertState::Closed);
    let closed = a.last().unwrap();
    assert!(!closed.top_sources.is_empty());
    assert!(closed
        .top_sources
        .iter()
        .all(|s| s.share > 0.0 && s.share <= 1.0));
}

#[test]
fn the_same_flood_against_a_csirt_carries_13k() {
    let a = alerts(
        SYN_FLOOD,
        vec![asset("csirt", "10.10.10.0/24", &[Role::Csirt], &[])],
    );
    assert_eq!(opened(&a), [(AlertKind::SynFlood, "csirt")]);
    assert!(a[0].norms.violated.contains(&"ungge2015.13k".to_string()));
}

#[test]
fn replays_give_identical_alerts() {
    let one = alerts(SYN_FLOOD, vec![asset("web", "10.10.10.0/24", &[], &[])]);
    let two = alerts(SYN_FLOOD, vec![asset("web", "10.10.10.0/24", &[], &[])]);
    assert_eq!(
        serde_json::to_string(&one).unwrap(),
        serde_json::to_string(&two).unwrap()
    );
}

const ICS: &str = "ICS-Security-Tools/pcaps/";

#[test]
fn s7_stop_from_an_unknown_source_is_command_abuse_and_not_from_the_master() {
    let rel = format!("{ICS}s7/snap7_s300_stop.pcapng");
    let a = alerts(
        &rel,
        vec![asset("plc", "134.249.61.163/32", &[Role::Ot], &[])],
    );
    assert_eq!(opened(&a), [(AlertKind::IcsCommandAbuse, "plc")], "{a:#?}");
    assert_eq!(a[0].severity, normwatch_model::Severity::Critical);
    assert!(a[0].norms.violated.contains(&"ungge2015.13f".to_string()));
    let allowed = alerts(
        &rel,
        vec![asset(
            "plc",
            "134.249.61.163/32",
            &[Role::Ot],
            &["134.249.62.206"],
        )],
    );
    assert!(opened(&allowed).is_empty(), "{allowed:#?}");
}

#[test]
fn dnp3_cold_restart_from_an_unknown_source_is_command_abuse() {
    let rel = format!("{ICS}dnp3/cold_restart_and_response.pcap");
    let a = alerts(
        &rel,
        vec![asset("rtu", "192.168.60.130/32", &[Role::Ot], &[])],
    );
    assert_eq!(opened(&a), [(AlertKind::IcsCommandAbuse, "rtu")], "{a:#?}");
    let allowed = alerts(
        &rel,
        vec![asset(
            "rtu",
            "192.168.60.130/32",
            &[Role::Ot],
            &["192.168.60.1"],
        )],
    );
    assert!(opened(&allowed).is_empty());
}

#[test]
fn benign_web_traffic_raises_nothing() {
    for rel in [
        "zeek/testing/btest/Traces/wikipedia.pcap",
        "zeek/testing/btest/Traces/ssh/ssh.pcap",
    ] {
        let a = alerts(
            rel,
            vec![
                asset("a", "0.0.0.0/1", &[], &[]),
                asset("b", "128.0.0.0/1", &[], &[]),
            ],
        );
        assert!(a.is_empty(), "{rel}: {a:#?}");
    }
}
