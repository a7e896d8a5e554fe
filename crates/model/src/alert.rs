//! Alerts: an attack on a protected asset, as the detector reports it while it lasts.

use crate::asset::{AssetId, Rates, Sector};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// What kind of attack.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    /// Traffic towards the asset above its threshold or far above its baseline.
    VolumetricFlood,
    /// Mostly unanswered SYNs towards the asset.
    SynFlood,
    /// Replies from reflectors (DNS, NTP, SSDP, memcached, …) that no one asked for.
    UdpAmplification,
    /// Service ports stop completing handshakes or answering while load rises.
    ServiceImpairment,
    /// Industrial write/control/stop/program commands from a source not on the allow list.
    IcsCommandAbuse,
    /// Reconnaissance: one source probing many ports or addresses of the asset.
    Scan,
    /// Bulk transfer out of an asset holding intellectual property.
    BulkExfiltration,
    /// A flood spread across many addresses of an asset's prefixes.
    CarpetBombing,
}

impl AlertKind {
    pub const ALL: [AlertKind; 8] = [
        AlertKind::VolumetricFlood,
        AlertKind::SynFlood,
        AlertKind::UdpAmplification,
        AlertKind::ServiceImpairment,
        AlertKind::IcsCommandAbuse,
        AlertKind::Scan,
        AlertKind::BulkExfiltration,
        AlertKind::CarpetBombing,
    ];

    /// The name used in JSON, metrics and the norm catalogue.
    pub const fn as_str(self) -> &'static str {
        match self {
            AlertKind::VolumetricFlood => "volumetric_flood",
            AlertKind::SynFlood => "syn_flood",
            AlertKind::UdpAmplification => "udp_amplification",
            AlertKind::ServiceImpairment => "service_impairment",
            AlertKind::IcsCommandAbuse => "ics_command_abuse",
            AlertKind::Scan => "scan",
            AlertKind::BulkExfiltration => "bulk_exfiltration",
            AlertKind::CarpetBombing => "carpet_bombing",
        }
    }
}

/// How bad.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// Where the alert is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    Open,
    Update,
    Closed,
}

/// Measured rates of the attack traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub pps: f64,
    pub bps: f64,
    pub new_flows_per_s: f64,
}

/// How well the asset still serves its public, on its service ports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Impairment {
    /// Share of connection attempts that completed a handshake, now.
    pub handshake_completion: Option<f64>,
    /// The same in the asset's learned baseline.
    pub baseline_handshake_completion: Option<f64>,
    /// Share of requests (flows) that got any answer, now.
    pub response_ratio: Option<f64>,
}

/// One of the attack's sources and its share of the attack traffic (a flood's sources are
/// those of the attack, not the clients the asset served meanwhile).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TopSource {
    pub addr: IpAddr,
    /// Share of the attack's packets, 0 to 1.
    pub share: f64,
    /// Packets and IP bytes it sent the asset while the detector followed it.
    pub pkts: u64,
    pub bytes: u64,
    /// The source is a reflector answering spoofed requests, not the attacker itself.
    pub reflector: bool,
}

/// Whether an attack's source addresses are likely forged, and the measures that say so. Set by
/// the detector on flood alerts; the evidence packager asks no State about forged addresses.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SpoofingAssessment {
    pub likely_spoofed: bool,
    /// Distinct source addresses counted over the attack.
    pub distinct_sources: u64,
    /// Share of the attack's connection attempts that were one packet and never completed
    /// (half-open), 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_packet_half_open_share: Option<f64>,
    /// Share of sources seen in one flow only, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_once_share: Option<f64>,
    /// Share of sources in reserved or unallocated (bogon) space, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bogon_share: Option<f64>,
    /// Spread of the IP TTLs (IPv6 hop limits) of the attack packets (max − min), where the
    /// sensor sees them: near zero across many sources, the packets come from one place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_spread: Option<u8>,
    /// Spread of the attack packets' TCP or UDP source ports (max − min), where seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_port_spread: Option<u16>,
    /// How the verdict was reached, in words.
    #[serde(default)]
    pub method: String,
}

/// Norm catalogue ids attached to an alert.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertNorms {
    /// Norms the activity would violate if State-conducted or knowingly supported.
    pub violated: Vec<String>,
    /// Norms a request for assistance rests on.
    pub request_basis: Vec<String>,
    /// Caveats and handling constraints (13(b), 13(e)).
    pub caveats: Vec<String>,
}

/// An alert event. Every event of one attack carries the same `id`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    pub id: String,
    pub state: AlertState,
    pub kind: AlertKind,
    pub severity: Severity,
    pub asset: AssetId,
    pub sector: Sector,
    /// The public service the asset provides.
    pub service: String,
    /// Event time (ns since the epoch) of the attack's first and latest evidence.
    pub window_start_ns: u64,
    pub window_end_ns: u64,
    /// The attack's rates in its latest second.
    pub measured: Measured,
    /// The configured thresholds it is compared with.
    pub threshold: Rates,
    /// The asset's learned normal, if known.
    pub baseline: Option<Measured>,
    pub impairment: Option<Impairment>,
    pub top_sources: Vec<TopSource>,
    pub norms: AlertNorms,
    /// What was seen, in words. Written for the operator: it may name any source, so it is
    /// never copied into an evidence package.
    pub summary: String,
    /// Distinct sources the detector counted over the attack (its sources, not the clients
    /// the asset served meanwhile); `top_sources` may be a sample of them. `None` from
    /// detectors that do not count them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sources_total: Option<u64>,
    /// Whether the sources are likely forged (flood alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spoofing: Option<SpoofingAssessment>,
    /// Wall-clock time (ns since the epoch) at which the alert's first event was recorded by
    /// a stage that saw it happen (the detector itself reads no clock, and its events stay
    /// reproducible without it); the custody log's "derived" entry is this moment, not a
    /// reconstruction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_at_ns: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn kinds_spell_like_the_catalogue_and_alerts_round_trip_as_json() {
        for k in AlertKind::ALL {
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        let a = Alert {
            id: "grid-scada/syn_flood/1700000000".into(),
            state: AlertState::Open,
            kind: AlertKind::SynFlood,
            severity: Severity::High,
            asset: AssetId(Arc::from("grid-scada")),
            sector: Sector::Energy,
            service: "electricity distribution control".into(),
            window_start_ns: 1,
            window_end_ns: 2,
            measured: Measured {
                pps: 1e5,
                bps: 4e7,
                new_flows_per_s: 1e5,
            },
            threshold: Rates {
                pps: Some(50_000),
                ..Rates::default()
            },
            baseline: None,
            impairment: Some(Impairment {
                handshake_completion: Some(0.1),
                ..Impairment::default()
            }),
            top_sources: vec![TopSource {
                addr: "198.51.100.7".parse().unwrap(),
                share: 0.4,
                pkts: 10,
                bytes: 600,
                reflector: false,
            }],
            norms: AlertNorms {
                violated: vec!["ungge2015.13f".into()],
                request_basis: vec!["ungge2015.13h".into()],
                caveats: vec!["ungge2015.13b".into()],
            },
            summary: "SYN flood".into(),
            sources_total: None,
            spoofing: None,
            raised_at_ns: None,
        };
        let json = serde_json::to_string(&a).unwrap();
        assert!(json.contains("\"state\":\"open\"") && json.contains("\"kind\":\"syn_flood\""));
        let back: Alert = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
        assert!(!json.contains("spoofing") && !json.contains("sources_total"));
    }

    /// Alerts written before the spoofing assessment existed still decode, and one with it
    /// round-trips.
    #[test]
    fn alerts_without_a_spoofing_assessment_still_decode() {
        let old = r#"{"id":"a","state":"closed","kind":"syn_flood","severity":"high",
            "asset":"grid","sector":"energy","service":"s","window_start_ns":1,"window_end_ns":2,
            "measured":{"pps":1.0,"bps":1.0,"new_flows_per_s":1.0},"threshold":{},
            "baseline":null,"impairment":null,"top_sources":[],
            "norms":{"violated":[],"request_basis":[],"caveats":[]},"summary":"x"}"#;
        let mut a: Alert = serde_json::from_str(old).unwrap();
        assert_eq!(a.spoofing, None);
        a.spoofing = Some(SpoofingAssessment {
            likely_spoofed: true,
            distinct_sources: 37_669,
            one_packet_half_open_share: Some(1.0),
            seen_once_share: Some(0.99),
            bogon_share: Some(0.04),
            ttl_spread: Some(2),
            source_port_spread: Some(65_530),
            method: "one-packet half-open SYNs from sources seen once".into(),
        });
        a.sources_total = Some(37_669);
        let back: Alert = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
        assert_eq!(back, a);
    }
}
