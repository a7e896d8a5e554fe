//! What packages say: each written for its recipient from its own sources, spoofed floods,
//! anonymisers and satellite providers, markings, the sender, stable identities.

use super::{db, ip, norms};
use normwatch_evidence::attribution::Attribution;
use normwatch_evidence::keys::SecretKey;
use normwatch_evidence::package::{self, BuildInput, Operator, Package, RequestSettings};
use normwatch_evidence::recipients::{self, Directory, Disposition, Purpose, Routing};
use normwatch_evidence::sample;
use normwatch_evidence::tlp::Tlp;
use normwatch_model::{
    Alert, AlertKind, FlowRecord, IcsCounts, IcsProto, IcsSummary, SpoofingAssessment,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// The requesting State's own sources (registered DE), then sources registered in six other
/// States (FR, US, RO, CN, GB, PH). No address is a prefix of another, so a substring search
/// finds exactly the address.
const DOMESTIC: [&str; 2] = ["89.160.20.115", "89.160.20.116"];
const FOREIGN: [(&str, &str); 7] = [
    ("2.125.160.218", "FR"),
    ("81.2.69.143", "US"),
    ("50.114.0.7", "US"),
    ("67.43.156.9", "RO"),
    ("111.235.160.33", "CN"),
    ("216.160.83.58", "GB"),
    ("202.196.224.41", "PH"),
];

fn directory() -> Directory {
    Directory::parse(
        r#"
[[state]]
code = "DE"
name = "BSI"
[[state]]
code = "FR"
name = "CERT-FR"
[[state]]
code = "US"
name = "CISA"
[[state]]
code = "RO"
name = "DNSC"
[[state]]
code = "GB"
name = "NCSC-UK"
tlp_accepted = ["clear", "green"]
"#,
    )
    .unwrap()
}

fn operator() -> Operator {
    Operator {
        name: "Example Grid Operator".into(),
        email: None,
    }
}

fn attributions(alert: &Alert) -> BTreeMap<IpAddr, Attribution> {
    let db = db();
    alert
        .top_sources
        .iter()
        .map(|s| (s.addr, db.lookup(s.addr).unwrap()))
        .collect()
}

fn build(
    alert: &Alert,
    flows: &[FlowRecord],
    attrs: &BTreeMap<IpAddr, Attribution>,
    own: &str,
    tlp: Tlp,
) -> (recipients::Plan, Vec<Package>) {
    build_recorded(alert, flows, attrs, own, tlp, None)
}

fn build_recorded(
    alert: &Alert,
    flows: &[FlowRecord],
    attrs: &BTreeMap<IpAddr, Attribution>,
    own: &str,
    tlp: Tlp,
    flows_received_ns: Option<u64>,
) -> (recipients::Plan, Vec<Package>) {
    let dir = directory();
    let plan = recipients::plan(alert, attrs, &[], &dir, own, tlp).unwrap();
    let key = SecretKey::from_seed(&[5; 32]);
    let norms = norms();
    let operator = operator();
    let settings = RequestSettings {
        tlp,
        ..RequestSettings::default()
    };
    let pkgs = plan
        .packages
        .iter()
        .map(|p| {
            package::build(
                BuildInput {
                    alert,
                    flows,
                    planned: p,
                    requester: dir.get(own).unwrap(),
                    operator: &operator,
                    asset_operator: Some("Stadtwerke Beispiel (asset operator)"),
                    settings: &settings,
                    norms: &norms,
                    geo: &db().provenance(),
                    packaged_at_ns: sample::START_NS + 3_600_000_000_000,
                    flows_received_ns,
                },
                &key,
            )
            .unwrap()
        })
        .collect();
    (plan, pkgs)
}

fn all_text(p: &Package) -> String {
    p.files
        .values()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

fn file(p: &Package, f: &str) -> String {
    String::from_utf8(p.files[f].clone()).unwrap()
}

fn multi_state_alert() -> Alert {
    let mut s: Vec<(IpAddr, bool)> = DOMESTIC.iter().map(|a| (ip(a), false)).collect();
    s.extend(FOREIGN.iter().map(|(a, _)| (ip(a), false)));
    let mut alert = sample::alert(&s);
    // The detector's summary names a domestic source, as in the report that opened issue 18.
    assert!(alert.summary.contains(DOMESTIC[0]));
    alert.sources_total = Some(35);
    alert
}

#[test]
fn no_package_carries_another_packages_or_a_domestic_source_address() {
    let alert = multi_state_alert();
    let flows = sample::flows(&alert, 2);
    let (plan, pkgs) = build(&alert, &flows, &attributions(&alert), "DE", Tlp::Amber);
    assert_eq!(
        plan.own_state_sources,
        DOMESTIC.iter().map(|a| ip(a)).collect::<Vec<_>>()
    );
    // FR, US, RO direct; GB refuses AMBER (via the authority); CN and PH have no entry.
    let abouts: Vec<Option<&str>> = plan
        .packages
        .iter()
        .map(|p| p.about_state.as_deref())
        .collect();
    assert_eq!(
        abouts,
        [
            Some("CN"),
            Some("FR"),
            Some("GB"),
            Some("PH"),
            Some("RO"),
            Some("US")
        ]
    );
    assert!(pkgs.len() >= 6);
    for (p, pkg) in plan.packages.iter().zip(&pkgs) {
        let text = all_text(pkg);
        let mine: Vec<IpAddr> = p.addrs().collect();
        assert!(!mine.is_empty());
        for a in &mine {
            assert!(
                text.contains(&a.to_string()),
                "{} lacks its own {a}",
                pkg.id
            );
        }
        for d in DOMESTIC {
            assert!(
                !text.contains(d),
                "{} names the domestic source {d}",
                pkg.id
            );
        }
        for (other, state) in FOREIGN {
            if !mine.contains(&ip(other)) {
                assert!(
                    !text.contains(other),
                    "{} (about {:?}) names {other} of {state}",
                    pkg.id,
                    p.about_state
                );
            }
        }
        // Counts of the whole attack only as N of M; the letter says the share.
        let letter = file(pkg, "request.md");
        if !p.sources.is_empty() {
            assert!(
                letter.contains(&format!("{} of the attack's 35 sources", p.sources.len())),
                "{letter}"
            );
        }
        assert!(
            letter.contains("192.0.2.10") && letter.contains("port 502"),
            "{letter}"
        );
        assert!(letter.contains("The detector listed 9 of them"), "{letter}");
        let view: Alert = serde_json::from_str(&file(pkg, "evidence/alert.json")).unwrap();
        assert_ne!(view.summary, alert.summary);
        let mut listed: Vec<IpAddr> = view.top_sources.iter().map(|s| s.addr).collect();
        let mut mine = mine.clone();
        listed.sort();
        mine.sort();
        assert_eq!(listed, mine);
    }
    // The FR package points out that its source is registered in FR but located in GB.
    let fr = pkgs.iter().find(|p| p.id.contains("-FR-")).unwrap();
    let letter = file(fr, "request.md");
    assert!(
        letter.contains("2.125.160.218: registered in FR, geolocated in GB"),
        "{letter}"
    );
    // The PH source represents the US (MaxMind represented_country).
    let ph = pkgs.iter().find(|p| p.id.contains("-PH-")).unwrap();
    assert!(file(ph, "request.md").contains("serves US's representation"));
}

#[test]
fn an_ics_letter_counts_commands_and_function_codes_not_packets_per_second() {
    let mut alert = multi_state_alert();
    alert.kind = AlertKind::IcsCommandAbuse;
    alert.measured = Default::default();
    let mut flows = sample::flows(&alert, 1);
    for f in &mut flows {
        let mut c = IcsCounts::default();
        c.command(normwatch_model::CommandClass::Write, 6);
        c.command(normwatch_model::CommandClass::Write, 16);
        c.command(normwatch_model::CommandClass::Write, 16);
        let mut s = IcsSummary::new(IcsProto::Modbus);
        s.orig = c;
        f.ics = Some(Box::new(s));
    }
    let (_, pkgs) = build(&alert, &flows, &attributions(&alert), "DE", Tlp::Amber);
    let fr = pkgs.iter().find(|p| p.id.contains("-FR-")).unwrap();
    let letter = file(fr, "request.md");
    // One FR source, three writes.
    assert!(
        letter.contains(
            "These sources sent 3 industrial commands over Modbus/TCP (3 write; function codes 6, 16)"
        ),
        "{letter}"
    );
    assert!(!letter.contains("packets/s"), "{letter}");
    assert!(letter.contains("1 of them, registered in FR"), "{letter}");
}

#[test]
fn a_spoofed_flood_asks_no_state_and_asks_the_own_authority_for_traceback() {
    let mut alert = multi_state_alert();
    alert.sources_total = Some(37_669);
    alert.spoofing = Some(SpoofingAssessment {
        likely_spoofed: true,
        distinct_sources: 37_669,
        one_packet_half_open_share: Some(1.0),
        seen_once_share: Some(1.0),
        bogon_share: Some(0.05),
        ttl_spread: Some(2),
        source_port_spread: Some(65_530),
        method: "every source sent one SYN and was never seen again".into(),
    });
    let flows = sample::flows(&alert, 1);
    let (plan, pkgs) = build(&alert, &flows, &attributions(&alert), "DE", Tlp::Amber);
    assert_eq!(plan.packages.len(), 1, "{:?}", plan.packages);
    let p = &plan.packages[0];
    assert_eq!(p.purpose, Purpose::Traceback);
    assert_eq!(p.recipient.code, "DE");
    assert!(p.sources.is_empty());
    assert!(matches!(p.routing, Routing::ForNationalAuthority { .. }));
    assert!(p
        .provider_abuse
        .iter()
        .all(|s| s.disposition == Disposition::Spoofed));
    // Forged addresses registered in the own State are forged too: listed, not "domestic".
    assert!(plan.own_state_sources.is_empty());
    let letter = file(&pkgs[0], "request.md");
    for want in [
        "Request for traceback",
        "source-address validation (BCP 38",
        "Forged source addresses (9 of 37 669, a sample)",
        "distinct source addresses: 37 669",
        "never completed: 100%",
        "spread of the packets' IP TTLs: 2\n",
        "spread of the packets' source ports: 65 530\n",
        "every source sent one SYN",
        "not to be routed onward",
    ] {
        assert!(letter.contains(want), "{want} not in:\n{letter}");
    }
    assert!(!letter.contains("identify the hosts"), "{letter}");
    let bundle = file(&pkgs[0], "stix/bundle.json");
    assert!(
        !bundle.contains("malicious-activity"),
        "forged addresses in an indicator"
    );
    let misp: serde_json::Value = serde_json::from_str(&file(&pkgs[0], "misp/event.json")).unwrap();
    assert!(misp["Event"]["Attribute"]
        .as_array()
        .unwrap()
        .iter()
        .all(|a| a["to_ids"] == false));
}

#[test]
fn anonymous_proxy_and_satellite_traits_go_to_provider_abuse_not_a_state() {
    let alert = multi_state_alert();
    let mut attrs = attributions(&alert);
    // MaxMind's Country/City test databases here carry neither trait, so the lookup result
    // is given the traits as a GeoIP2 Country database would report them.
    attrs.get_mut(&ip("2.125.160.218")).unwrap().anonymous_proxy = true;
    attrs
        .get_mut(&ip("67.43.156.9"))
        .unwrap()
        .satellite_provider = true;
    let flows = sample::flows(&alert, 1);
    let (plan, pkgs) = build(&alert, &flows, &attrs, "DE", Tlp::Amber);
    let find = |a: &str| {
        plan.packages
            .iter()
            .flat_map(|p| p.sources.iter().chain(&p.provider_abuse))
            .find(|s| s.source.addr == ip(a))
            .unwrap()
            .disposition
    };
    assert_eq!(find("2.125.160.218"), Disposition::Anonymiser);
    assert_eq!(find("67.43.156.9"), Disposition::SatelliteProvider);
    for p in &plan.packages {
        assert!(p.sources.iter().all(|s| !matches!(
            s.source.addr.to_string().as_str(),
            "2.125.160.218" | "67.43.156.9"
        )));
    }
    let ro = pkgs.iter().find(|p| p.id.contains("-RO-")).unwrap();
    let letter = file(ro, "request.md");
    assert!(
        letter.contains("| 67.43.156.9 | satellite provider |"),
        "{letter}"
    );
    let bundle: serde_json::Value = serde_json::from_str(&file(ro, "stix/bundle.json")).unwrap();
    let objs = bundle["objects"].as_array().unwrap();
    assert!(objs.iter().all(|o| o["type"] != "indicator"));
    assert!(objs.iter().any(|o| o["type"] == "infrastructure"));
}

#[test]
fn reflectors_are_amplification_infrastructure_never_malicious_indicators() {
    let s = [(ip("89.160.20.130"), true), (ip("2.125.160.218"), false)];
    let alert = sample::alert(&s);
    let flows = sample::flows(&alert, 1);
    let (_, pkgs) = build(&alert, &flows, &attributions(&alert), "US", Tlp::Amber);
    // The detector did not count the attack's sources: the letter does not claim a total.
    for p in &pkgs {
        let letter = file(p, "request.md");
        assert!(
            letter.contains(
                "The detector listed 2 source addresses (the largest; it did not count all"
            ),
            "{letter}"
        );
        assert!(!letter.contains("distinct source"), "{letter}");
    }
    let bundles: Vec<serde_json::Value> = pkgs
        .iter()
        .map(|p| serde_json::from_str(&file(p, "stix/bundle.json")).unwrap())
        .collect();
    for b in &bundles {
        for o in b["objects"].as_array().unwrap() {
            if o["type"] == "indicator" {
                assert!(!o["pattern"].as_str().unwrap().contains("89.160.20.130"));
            }
            if o["type"] == "infrastructure" {
                assert_eq!(o["infrastructure_types"][0], "amplification");
            }
            // Every object but the marking definitions carries a marking, SCOs included.
            if o["type"] != "marking-definition" {
                assert!(o["object_marking_refs"].is_array(), "{o}");
            }
        }
    }
}

#[test]
fn tlp_red_and_amber_strict_are_never_routed_onward() {
    for tlp in [Tlp::Red, Tlp::AmberStrict] {
        let alert = multi_state_alert();
        let flows = sample::flows(&alert, 1);
        let (plan, pkgs) = build(&alert, &flows, &attributions(&alert), "DE", tlp);
        for (p, pkg) in plan.packages.iter().zip(&pkgs) {
            assert!(
                !matches!(p.routing, Routing::ViaNationalAuthority { .. }),
                "{tlp:?}: {:?}",
                p.routing
            );
            let letter = file(pkg, "request.md");
            assert!(!letter.contains("for onward routing"), "{letter}");
            assert!(letter.contains("(not to be passed on)"), "{letter}");
        }
        // A State without a point of contact still gets nothing through the authority.
        let cn = plan
            .packages
            .iter()
            .find(|p| p.about_state.as_deref() == Some("CN"))
            .unwrap();
        assert!(
            matches!(&cn.routing, Routing::ForNationalAuthority { reason } if reason.contains("forbids routing it onward"))
        );
    }
}

#[test]
fn the_letter_names_the_real_sender_and_the_asset_operator_and_pap_permits_filtering() {
    let alert = multi_state_alert();
    let flows = sample::flows(&alert, 1);
    let (_, pkgs) = build(&alert, &flows, &attributions(&alert), "DE", Tlp::Amber);
    let fr = pkgs.iter().find(|p| p.id.contains("-FR-")).unwrap();
    let letter = file(fr, "request.md");
    for want in [
        "- From: Example Grid Operator, sent by its own monitoring system",
        "- Operator of the attacked asset: Stadtwerke Beispiel (asset operator)",
        "- Requesting State: DE (national authority: BSI)",
        "- Routing: sent directly to the point of contact of FR",
        "PAP:GREEN",
    ] {
        assert!(letter.contains(want), "{want} not in:\n{letter}");
    }
    assert!(!letter.contains("on behalf of"));
    let misp = file(fr, "misp/event.json");
    assert!(misp.contains("\"PAP:GREEN\"") && !misp.contains("PAP:WHITE"));
}

#[test]
fn the_operator_identity_and_misp_organisation_are_the_same_in_every_package() {
    let alert = multi_state_alert();
    let flows = sample::flows(&alert, 1);
    let (_, pkgs) = build(&alert, &flows, &attributions(&alert), "DE", Tlp::Amber);
    let ids: std::collections::BTreeSet<(String, String)> = pkgs
        .iter()
        .map(|p| {
            let b: serde_json::Value = serde_json::from_str(&file(p, "stix/bundle.json")).unwrap();
            let op = b["objects"]
                .as_array()
                .unwrap()
                .iter()
                .find(|o| o["type"] == "identity" && o["name"] == "Example Grid Operator")
                .unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string();
            let m: serde_json::Value = serde_json::from_str(&file(p, "misp/event.json")).unwrap();
            (op, m["Event"]["Orgc"]["uuid"].as_str().unwrap().to_string())
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
}

#[test]
fn recipient_codes_are_iso_3166_and_uk_gets_a_hint_for_gb() {
    let e = Directory::parse("[[state]]\ncode = \"UK\"\nname = \"NCSC\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("\"UK\" is not an ISO 3166-1 alpha-2 code: use GB"),
        "{e}"
    );
    let e = Directory::parse("[[state]]\ncode = \"QQ\"\nname = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(e.contains("not an assigned ISO 3166-1 alpha-2 code"), "{e}");
    let e = Directory::parse("[[state]]\ncode = \"de\"\nname = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("must be an ISO 3166-1 code in upper case: DE"),
        "{e}"
    );
    assert!(Directory::parse("[[state]]\ncode = \"GB\"\nname = \"NCSC\"\n").is_ok());
}

#[test]
fn custody_entries_carry_the_times_their_stages_recorded_never_back_dated_ones() {
    use normwatch_evidence::custody::{self, Action};
    let mut alert = multi_state_alert();
    let flows = sample::flows(&alert, 1);
    let received = sample::START_NS + 2_000_000_000;
    alert.raised_at_ns = Some(sample::START_NS + 3_000_000_000);
    let (_, pkgs) = build_recorded(
        &alert,
        &flows,
        &attributions(&alert),
        "DE",
        Tlp::Amber,
        Some(received),
    );
    let entries = custody::check(&pkgs[0].files["custody.jsonl"]).unwrap();
    let captured = entries
        .iter()
        .find(|e| e.action == Action::Captured)
        .unwrap();
    assert_eq!(captured.at, "2026-03-01T10:00:02.000Z");
    assert!(captured
        .note
        .contains("received from the sensors by the packaging stage"));
    assert_eq!(captured.actor, "sensor site-a");
    let derived = entries
        .iter()
        .find(|e| e.action == Action::Derived)
        .unwrap();
    assert_eq!(derived.at, "2026-03-01T10:00:03.000Z");
    assert_eq!(derived.actor, "normwatch detector stage");
    // Not recorded: the packaging time, said to be one.
    alert.raised_at_ns = None;
    let (_, pkgs) = build(&alert, &flows, &attributions(&alert), "DE", Tlp::Amber);
    let entries = custody::check(&pkgs[0].files["custody.jsonl"]).unwrap();
    for e in entries
        .iter()
        .filter(|e| e.action != Action::Packaged)
        .take(2)
    {
        assert_eq!(e.at, "2026-03-01T11:00:00.000Z", "{e:?}");
        assert!(e.note.contains("this entry is the packaging time"), "{e:?}");
    }
    // No entry names a local path.
    let log = String::from_utf8(pkgs[0].files["custody.jsonl"].clone()).unwrap();
    assert!(!log.contains("/tmp") && !log.contains("/home") && !log.contains("/var"));
}
