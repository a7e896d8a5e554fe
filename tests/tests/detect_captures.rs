//! The detector over real captures: the right alert kind against the right asset, tagged
//! with the norms it touches; nothing on benign traffic; the same alerts on every replay.
//!
//! Thresholds are what an operator would configure for the asset from its expected traffic
//! (a control-system or web server seeing at most tens of new connections a second), and the
//! detector's own defaults (`Settings::default()`), not values fitted to a capture.

use normwatch_config::norms::{load_norms, NormCatalogue};
use normwatch_detect::{Detector, Settings};
use normwatch_model::{
    Alert, AlertKind, AlertState, Asset, AssetId, AssetIndex, FlowRecord, Rates, Role, Sector,
    Severity, Side, TcpFlags, Thresholds,
};
use normwatch_tests::{capture, config, flows_of};
use std::path::Path;
use std::sync::Arc;

fn norms() -> NormCatalogue {
    load_norms(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/norms.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn asset(id: &str, cidr: &str, roles: &[Role], allow: &[&str]) -> Asset {
    prefixes(id, &[cidr], roles, allow)
}

/// An asset over several prefixes (an operator's address space).
fn prefixes(id: &str, cidrs: &[&str], roles: &[Role], allow: &[&str]) -> Asset {
    Asset {
        id: AssetId(Arc::from(id)),
        name: id.into(),
        operator: "Example operator".into(),
        sector: Sector::Energy,
        service: "a public service".into(),
        cidrs: cidrs.iter().map(|c| c.parse().unwrap()).collect(),
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

/// The flow records of `rel`, matched against `assets`, in the order the flow table emits
/// them.
fn records(rel: &str, assets: &[Asset]) -> (Arc<AssetIndex>, Vec<FlowRecord>) {
    let mut cfg = config(false);
    // Flows reported while they go on, as a deployed sensor does (`sensor.report_interval`).
    cfg.report_ns = Some(100_000_000);
    cfg.assets = Arc::new(AssetIndex::new(assets.to_vec()).unwrap());
    let index = cfg.assets.clone();
    let (flows, _) = flows_of(&capture(rel), cfg).unwrap_or_else(|(_, e)| panic!("{e}"));
    (index, flows)
}

/// Replays `rel` through the sensor and the detector, records handed over as the flow
/// table emits them.
fn alerts(rel: &str, assets: Vec<Asset>) -> Vec<Alert> {
    let (index, flows) = records(rel, &assets);
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
fn a_random_source_syn_flood_is_assessed_as_spoofed() {
    let a = alerts(SYN_FLOOD, vec![asset("web", "10.10.10.0/24", &[], &[])]);
    let closed = a.last().unwrap();
    let sp = closed.spoofing.as_ref().expect("a flood is assessed");
    assert!(sp.likely_spoofed, "{sp:?}");
    // The capture holds 37 669 one-packet attempts from as many sources: the estimate is
    // within the sketch's error.
    let total = closed.sources_total.unwrap();
    assert!((33_000..=42_000).contains(&total), "{total}");
    assert!(sp.seen_once_share.unwrap() > 0.75, "{sp:?}");
    assert!(sp.one_packet_half_open_share.unwrap() > 0.95, "{sp:?}");
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
    assert_eq!(a[0].severity, Severity::Critical);
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
fn benign_web_ssh_and_dns_traffic_raises_nothing() {
    for rel in [
        "zeek/testing/btest/Traces/wikipedia.pcap",
        "zeek/testing/btest/Traces/http/get.pcap",
        "zeek/testing/btest/Traces/ssh/ssh.pcap",
        "zeek/testing/btest/Traces/dns/dns-corrupt.pcap",
        "zeek/testing/btest/Traces/tunnels/gre-sample.pcap",
        "suricata-verify/tests/dns/bug-1158/input.pcap",
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

fn has_13f(a: &Alert) -> bool {
    a.norms.violated.contains(&"ungge2015.13f".to_string())
}

const TCP_FLOOD: &str = "ntopng-e2e-tests/rest/pcap/tcp-flood.pcap";

#[test]
fn ntopng_tcp_flood_is_a_syn_flood_on_its_victim() {
    let a = alerts(TCP_FLOOD, vec![asset("web", "192.168.1.51/32", &[], &[])]);
    let kinds = opened(&a);
    assert!(kinds.contains(&(AlertKind::SynFlood, "web")), "{kinds:?}");
    // One source sweeping ~5.2k ports is also a port scan; nothing else is raised.
    assert!(
        kinds
            .iter()
            .all(|k| matches!(k.0, AlertKind::SynFlood | AlertKind::Scan)),
        "{kinds:?}"
    );
    let flood = a
        .iter()
        .find(|x| x.kind == AlertKind::SynFlood && x.state == AlertState::Open)
        .unwrap();
    assert!(has_13f(flood));
    let closed = a.iter().rfind(|x| x.kind == AlertKind::SynFlood).unwrap();
    assert_eq!(closed.state, AlertState::Closed);
    assert_eq!(
        closed.top_sources[0].addr,
        "192.168.1.58".parse::<std::net::IpAddr>().unwrap()
    );
}

const DNS_AMP: &str = "packet-captures/amp.dns.RRSIG.fragmented.pcap";
const BACNET_AMP: &str = "packet-captures/amp.UDP.bacnet.IOT.37810.pcapng";

#[test]
fn dns_rrsig_reflection_is_amplification_with_reflector_evidence() {
    let a = alerts(DNS_AMP, vec![asset("web", "10.10.10.0/24", &[], &[])]);
    assert_eq!(opened(&a), [(AlertKind::UdpAmplification, "web")], "{a:#?}");
    assert!(has_13f(&a[0]));
    assert!(!a[0].norms.violated.contains(&"ungge2015.13k".to_string()));
    let closed = a.last().unwrap();
    assert_eq!(closed.state, AlertState::Closed);
    assert!(
        closed.summary.contains("DNS (port 53)"),
        "{}",
        closed.summary
    );
    assert!(closed.summary.contains("unsolicited"), "{}", closed.summary);
    let reflectors: Vec<_> = closed.top_sources.iter().filter(|s| s.reflector).collect();
    assert!(!reflectors.is_empty(), "{:#?}", closed.top_sources);
    // The busiest sources are the reflectors themselves.
    assert!(closed.top_sources[0].reflector, "{:#?}", closed.top_sources);
}

#[test]
fn dns_reflection_against_a_csirt_carries_13k() {
    let a = alerts(
        DNS_AMP,
        vec![asset("cert", "10.10.10.0/24", &[Role::Csirt], &[])],
    );
    assert_eq!(opened(&a), [(AlertKind::UdpAmplification, "cert")]);
    assert!(a[0].norms.violated.contains(&"ungge2015.13k".to_string()));
}

#[test]
fn bacnet_and_37810_reflection_is_amplification() {
    let a = alerts(BACNET_AMP, vec![asset("web", "10.10.10.1/32", &[], &[])]);
    assert_eq!(opened(&a), [(AlertKind::UdpAmplification, "web")], "{a:#?}");
    assert!(has_13f(&a[0]));
    let closed = a.last().unwrap();
    for proto in ["BACnet (port 47808)", "DVR DHCPDiscover (port 37810)"] {
        assert!(closed.summary.contains(proto), "{}", closed.summary);
    }
    assert!(closed.top_sources.iter().all(|s| s.reflector));
}

#[test]
fn modbus_writes_from_an_unknown_source_are_command_abuse() {
    let rel = "zeek/testing/btest/Traces/modbus/modbus-and-non-modbus-p502.pcap";
    let a = alerts(rel, vec![asset("plc", "10.0.0.3/32", &[Role::Ot], &[])]);
    assert_eq!(opened(&a), [(AlertKind::IcsCommandAbuse, "plc")], "{a:#?}");
    assert_eq!(
        a[0].top_sources[0].addr,
        "10.0.0.9".parse::<std::net::IpAddr>().unwrap()
    );
    let allowed = alerts(
        rel,
        vec![asset("plc", "10.0.0.3/32", &[Role::Ot], &["10.0.0.9"])],
    );
    assert!(opened(&allowed).is_empty(), "{allowed:#?}");
}

#[test]
fn ethernet_ip_firmware_change_and_reboot_are_critical_command_abuse() {
    for rel in ["EIP-FirmwareChange.pcap", "EIP-RebootorRestart.pcap"] {
        let rel = format!("{ICS}openics/{rel}");
        let a = alerts(
            &rel,
            vec![asset("plc", "192.168.10.120/32", &[Role::Ot], &[])],
        );
        assert_eq!(
            opened(&a),
            [(AlertKind::IcsCommandAbuse, "plc")],
            "{rel}: {a:#?}"
        );
        // Reported while the session goes on, the alert opens at the first command and is
        // graded critical once the firmware change or reboot follows.
        assert_eq!(a.last().unwrap().severity, Severity::Critical, "{rel}");
        assert!(has_13f(&a[0]));
        let allowed = alerts(
            &rel,
            vec![asset(
                "plc",
                "192.168.10.120/32",
                &[Role::Ot],
                &["192.168.10.105"],
            )],
        );
        assert!(opened(&allowed).is_empty(), "{rel}: {allowed:#?}");
    }
}

const SCANS: &str = "bro-simple-scan/testing/pcaps/";

#[test]
fn vertical_port_scan_is_a_low_severity_scan_naming_the_scanner() {
    let a = alerts(
        &format!("{SCANS}port_scan.pcap"),
        vec![asset("site", "192.168.2.0/24", &[], &[])],
    );
    assert_eq!(opened(&a), [(AlertKind::Scan, "site")], "{a:#?}");
    assert_eq!(a[0].severity, Severity::Low);
    assert_eq!(
        a[0].top_sources[0].addr,
        "192.168.2.154".parse::<std::net::IpAddr>().unwrap()
    );
    assert!(a[0].norms.violated.is_empty());
}

#[test]
fn slow_address_scan_of_an_operators_prefixes_is_a_scan() {
    let a = alerts(
        &format!("{SCANS}445_scan.pcap"),
        vec![prefixes(
            "op",
            &["192.168.0.0/16", "10.10.0.0/16"],
            &[],
            &[],
        )],
    );
    assert_eq!(opened(&a), [(AlertKind::Scan, "op")], "{a:#?}");
    assert_eq!(
        a[0].top_sources[0].addr,
        "176.192.150.3".parse::<std::net::IpAddr>().unwrap()
    );
}

#[test]
fn backscatter_is_not_a_scan() {
    let a = alerts(
        &format!("{SCANS}backscatter.trace"),
        vec![asset("site", "192.150.186.0/24", &[], &[])],
    );
    assert!(opened(&a).iter().all(|k| k.0 != AlertKind::Scan), "{a:#?}");
    // Nor is it anything else against the site.
    assert!(opened(&a).is_empty(), "{a:#?}");
}

/// The detector's event time (latest record time seen) when the first alert of a flood kind
/// opened, feeding records one at a time as the flow table emitted them.
fn open_time(index: Arc<AssetIndex>, flows: &[FlowRecord], kind: AlertKind) -> Option<u64> {
    let mut d = Detector::new(index, norms(), Settings::default());
    let mut out = Vec::new();
    let mut now = 0;
    for r in flows {
        now = now.max(r.last_ns);
        d.process(std::slice::from_ref(r), &mut out);
        if out
            .iter()
            .any(|a| a.state == AlertState::Open && a.kind == kind)
        {
            return Some(now);
        }
    }
    None
}

/// The moment new TCP connection attempts towards the asset first ran at more than twice
/// `limit` a second: the first packet time at which the count within its second exceeded
/// 2 × limit.
fn onset_2x(flows: &[FlowRecord], limit: u64) -> u64 {
    let mut starts: Vec<u64> = flows
        .iter()
        .filter(|r| {
            r.ip_proto == 6
                && r.asset.as_ref().is_some_and(|m| m.side == Side::Resp)
                && r.orig.tcp_flags.has(TcpFlags::SYN)
        })
        .map(|r| r.first_ns)
        .collect();
    starts.sort_unstable();
    let mut sec = u64::MAX;
    let mut n = 0;
    for t in starts {
        if t / 1_000_000_000 != sec {
            sec = t / 1_000_000_000;
            n = 0;
        }
        n += 1;
        if n > 2 * limit {
            return t;
        }
    }
    panic!("the attack never reaches twice its threshold");
}

#[test]
fn floods_open_within_a_second_of_event_time_after_reaching_twice_the_threshold() {
    for (rel, cidr) in [(SYN_FLOOD, "10.10.10.0/24"), (TCP_FLOOD, "192.168.1.51/32")] {
        let web = asset("web", cidr, &[], &[]);
        let limit = web.thresholds.total.new_flows_per_s.unwrap();
        let (index, flows) = records(rel, &[web]);
        let onset = onset_2x(&flows, limit);
        let opened_at = open_time(index, &flows, AlertKind::SynFlood).expect("opens");
        assert!(
            opened_at <= onset + 1_000_000_000,
            "{rel}: opened at {opened_at}, 2× reached at {onset}"
        );
    }
}
