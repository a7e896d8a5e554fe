//! Synthetic inputs (an alert, its flows, a POC directory) for tests, examples and benchmarks,
//! so each of them builds packages from the same, realistic shapes.

use crate::recipients::{Channel, Directory, Recipient};
use crate::tlp::Tlp;
use normwatch_model::{
    Alert, AlertKind, AlertNorms, AlertState, AssetId, AssetMatch, ConnState, DirStats, EndReason,
    FlowRecord, Impairment, Measured, Rates, Sector, Severity, Side, TcpFlags, TopSource,
};
use std::net::IpAddr;
use std::sync::Arc;

/// Event time of the sample attack's start: 2026-03-01T10:00:00Z.
pub const START_NS: u64 = 1_772_359_200_000_000_000;
/// The protected address attacked in the samples.
pub const VICTIM: &str = "192.0.2.10";
/// The asset attacked in the samples.
pub const ASSET: &str = "grid-scada";

/// A SYN flood alert against the sample asset from `sources` (address, reflector?).
pub fn alert(sources: &[(IpAddr, bool)]) -> Alert {
    let n = sources.len().max(1) as f64;
    Alert {
        id: format!("{ASSET}/syn_flood/{}", START_NS / 1_000_000_000),
        state: AlertState::Open,
        kind: AlertKind::SynFlood,
        severity: Severity::High,
        asset: AssetId(Arc::from(ASSET)),
        sector: Sector::Energy,
        service: "electricity distribution control".into(),
        window_start_ns: START_NS,
        window_end_ns: START_NS + 60_000_000_000,
        measured: Measured {
            pps: 120_000.0,
            bps: 5.76e7,
            new_flows_per_s: 110_000.0,
        },
        threshold: Rates {
            pps: Some(50_000),
            ..Rates::default()
        },
        baseline: None,
        impairment: Some(Impairment {
            handshake_completion: Some(0.12),
            baseline_handshake_completion: Some(0.99),
            response_ratio: None,
        }),
        top_sources: sources
            .iter()
            .enumerate()
            .map(|(i, (addr, reflector))| TopSource {
                addr: *addr,
                share: 1.0 / n,
                pkts: 1000 + i as u64,
                bytes: 60_000 + 60 * i as u64,
                reflector: *reflector,
            })
            .collect(),
        norms: AlertNorms {
            violated: vec!["ungge2015.13f".into(), "us2015.no-ci-damage".into()],
            request_basis: vec![
                "ungge2015.13c".into(),
                "ungge2015.13h".into(),
                "us2015.cooperate-on-requests".into(),
            ],
            caveats: vec!["ungge2015.13b".into(), "ungge2015.13e".into()],
        },
        // Like the detector's, the summary names a source: no package may carry it.
        summary: format!(
            "SYN flood: 120000 packets/s towards port 502 from {} and others, 12% of handshakes complete",
            sources.first().map(|s| s.0.to_string()).unwrap_or_default()
        ),
        sources_total: None,
        spoofing: None,
        raised_at_ns: None,
    }
}

/// `per_source` flows from each source of `alert` to the victim's port 502, one second apart.
pub fn flows(alert: &Alert, per_source: usize) -> Vec<FlowRecord> {
    let victim: IpAddr = VICTIM.parse().unwrap_or(IpAddr::from([192, 0, 2, 10]));
    let sensor: Arc<str> = Arc::from("site-a");
    let mut out = Vec::new();
    let mut id = 0;
    for s in &alert.top_sources {
        for k in 0..per_source {
            id += 1;
            let first = START_NS + k as u64 * 1_000_000_000;
            out.push(FlowRecord {
                sensor_id: sensor.clone(),
                flow_id: id,
                orig_addr: s.addr,
                orig_port: 40_000 + (id % 20_000) as u16,
                resp_addr: victim,
                resp_port: 502,
                ip_proto: 6,
                first_ns: first,
                last_ns: first + 500_000_000,
                orig: DirStats {
                    pkts: 10,
                    ip_bytes: 600,
                    payload_bytes: 0,
                    tcp_flags: TcpFlags(TcpFlags::SYN),
                },
                resp: DirStats::default(),
                conn_state: ConnState::S0,
                asset: Some(AssetMatch {
                    id: alert.asset.clone(),
                    side: Side::Resp,
                }),
                ics: None,
                end_reason: EndReason::IdleTimeout,
                export: None,
                prior: None,
                attempts: None,
                orig_ttl: None,
                resp_ttl: None,
            });
        }
    }
    out
}

fn entry(code: &str, name: &str, tlp_max: Tlp) -> Recipient {
    Recipient {
        code: code.into(),
        name: name.into(),
        language: if code == "DE" {
            "de".into()
        } else {
            "en".into()
        },
        tlp_accepted: Tlp::ALL.into_iter().filter(|t| *t <= tlp_max).collect(),
        public_key: None,
        email: Some(format!("poc@{}.example", code.to_ascii_lowercase())),
        channels: vec![Channel::Directory {
            path: format!("outbox/{code}"),
        }],
    }
}

/// A directory with NL (the requesting State), DE and FR; SE accepts nothing above GREEN.
pub fn directory() -> Directory {
    Directory::new(vec![
        entry("NL", "NCSC-NL", Tlp::Red),
        entry("DE", "CERT-Bund", Tlp::AmberStrict),
        entry("FR", "CERT-FR", Tlp::AmberStrict),
        entry("SE", "CERT-SE", Tlp::Green),
    ])
    .unwrap_or_default()
}
