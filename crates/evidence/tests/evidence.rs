//! Integration tests of the evidence crate: attribution over MaxMind's test databases, the
//! choice of recipients, package building (determinism, contents) and verification.

// Tests time their own waits; the crate's clock ban (clippy.toml) is for the library.
#![allow(clippy::disallowed_methods)]

#[path = "evidence/content.rs"]
mod content;
#[path = "evidence/delivery.rs"]
mod delivery;
#[path = "evidence/followup.rs"]
mod followup;
#[path = "evidence/hostile.rs"]
mod hostile;
#[path = "evidence/tls.rs"]
mod tls;

use normwatch_config::norms::{parse_norms, NormCatalogue};
use normwatch_evidence::attribution::{Attribution, GeoDb, GeoPaths};
use normwatch_evidence::keys::SecretKey;
use normwatch_evidence::package::{self, BuildInput, Operator, Package, RequestSettings};
use normwatch_evidence::recipients::{self, Directory, Disposition, Plan, Routing};
use normwatch_evidence::tlp::Tlp;
use normwatch_evidence::verify::{read_tar, verify_files, verify_path};
use normwatch_evidence::{sample, Error};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

fn geoip(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/geoip")
        .join(name)
}

fn db() -> GeoDb {
    GeoDb::open(&GeoPaths {
        country: geoip("GeoLite2-Country-Test.mmdb"),
        asn: Some(geoip("GeoLite2-ASN-Test.mmdb")),
        anonymous_ip: Some(geoip("GeoIP2-Anonymous-IP-Test.mmdb")),
    })
    .unwrap()
}

/// The own State's recipients entry (NL, taking drops), first in a packager test's
/// recipients file.
const NL_RECIPIENT: &str = r#"
[[state]]
code = "NL"
name = "NCSC-NL"
[[state.channel]]
kind = "directory"
path = "drops/NL"
"#;

/// A packager's configuration under `dir` (MaxMind's test databases, own State NL, recipients
/// `recipients.toml`, key `evidence.key`, store `store`), with `evidence` added to the
/// `[evidence]` table and `tables` after it.
fn packager_config(
    dir: &std::path::Path,
    evidence: &str,
    tables: &str,
) -> normwatch_evidence::config::EvidenceConfig {
    let config = format!(
        r#"
[evidence]
own_state = "NL"
operator = "Example Grid Operator"
recipients = "recipients.toml"
signing_key = "evidence.key"
out_dir = "store"
{evidence}
[evidence.geoip]
country = "{}"
asn = "{}"
{tables}"#,
        geoip("GeoLite2-Country-Test.mmdb").display(),
        geoip("GeoLite2-ASN-Test.mmdb").display()
    );
    normwatch_evidence::config::EvidenceConfig::from_config_text(&config, dir).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn norms() -> NormCatalogue {
    let text = include_str!("../../../config/norms.toml");
    parse_norms(text, std::path::Path::new("norms.toml")).unwrap()
}

#[test]
fn test_database_rows_keep_geolocation_and_registration_apart() {
    let db = db();
    let a = db.lookup(ip("89.160.20.112")).unwrap();
    assert_eq!(a.registered_country.as_deref(), Some("DE"));
    assert_eq!(a.geo_country.as_deref(), Some("SE"));
    assert_eq!(a.asn, Some(29518));
    assert_eq!(a.as_org.as_deref(), Some("Bredband2 AB"));
    assert_eq!(a.prefix.unwrap().to_string(), "89.160.20.112/28");
    assert!(a.asn_prefix.is_some());

    let a = db.lookup(ip("2.125.160.216")).unwrap();
    assert_eq!(a.geo_country.as_deref(), Some("GB"));
    assert_eq!(a.registered_country.as_deref(), Some("FR"));

    let a = db.lookup(ip("216.160.83.56")).unwrap();
    assert_eq!(
        (a.geo_country.as_deref(), a.registered_country.as_deref()),
        (Some("US"), Some("GB"))
    );
    assert_eq!(a.asn, Some(209));
    assert_eq!(a.as_org, None);

    let a = db.lookup(ip("1.0.0.1")).unwrap();
    assert_eq!(
        (a.asn, a.as_org.as_deref()),
        (Some(15169), Some("Google Inc."))
    );

    let a = db.lookup(ip("203.0.113.10")).unwrap();
    assert_eq!(a.registered_country, None);
    assert_eq!(a.asn, None);

    let p = db.provenance();
    assert_eq!(p.len(), 3);
    assert_eq!(p[0].database_type, "GeoLite2-Country");
    assert_eq!(p[1].database_type, "GeoLite2-ASN");
    assert!(p
        .iter()
        .all(|d| d.build_epoch > 1_000_000_000 && d.sha256.len() == 64));
}

#[test]
fn broken_databases_give_a_clear_error_not_a_panic() {
    for name in [
        "GeoIP2-City-Test-Broken-Double-Format.mmdb",
        "GeoIP2-City-Test-Invalid-Node-Count.mmdb",
        "MaxMind-DB-test-broken-pointers-24.mmdb",
        "MaxMind-DB-test-broken-search-tree-24.mmdb",
    ] {
        let r = GeoDb::open(&GeoPaths {
            country: geoip(name),
            ..GeoPaths::default()
        });
        let msg = r.expect_err(name).to_string();
        assert!(msg.contains(name), "{msg}");
    }
    // The right file in the wrong role.
    let msg = GeoDb::open(&GeoPaths {
        country: geoip("GeoLite2-ASN-Test.mmdb"),
        ..GeoPaths::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("cannot serve as the country database"),
        "{msg}"
    );
    // Not a database at all; missing.
    let msg = GeoDb::open(&GeoPaths {
        country: geoip("LICENSE-MIT"),
        ..GeoPaths::default()
    })
    .unwrap_err()
    .to_string();
    assert!(
        msg.contains("LICENSE-MIT") && msg.contains("not a valid database"),
        "{msg}"
    );
    let e = GeoDb::open(&GeoPaths {
        country: geoip("nope.mmdb"),
        ..GeoPaths::default()
    })
    .unwrap_err();
    assert!(matches!(e, Error::Io { .. }));
}

const SOURCES: [(&str, bool); 6] = [
    ("89.160.20.112", false), // registered DE (geolocated SE)
    ("89.160.20.130", true),  // registered DE, a reflector
    ("2.125.160.216", false), // registered FR (geolocated GB)
    ("216.160.83.56", false), // registered GB: no directory entry
    ("10.9.8.7", false),      // private space: spoofed
    ("81.2.69.142", false),   // registered US: no directory entry
];

fn sample_alert() -> normwatch_model::Alert {
    let s: Vec<(IpAddr, bool)> = SOURCES.iter().map(|(a, r)| (ip(a), *r)).collect();
    sample::alert(&s)
}

fn attributions(alert: &normwatch_model::Alert) -> BTreeMap<IpAddr, Attribution> {
    let db = db();
    alert
        .top_sources
        .iter()
        .map(|s| (s.addr, db.lookup(s.addr).unwrap()))
        .collect()
}

fn plan_for(own: &str, tlp: Tlp) -> Plan {
    let alert = sample_alert();
    recipients::plan(
        &alert,
        &attributions(&alert),
        &[],
        &sample::directory(),
        own,
        tlp,
    )
    .unwrap()
}

#[test]
fn one_package_per_registered_state_reflectors_to_abuse_unknown_to_the_authority() {
    let plan = plan_for("NL", Tlp::Amber);
    let by: BTreeMap<Option<&str>, &recipients::PlannedPackage> = plan
        .packages
        .iter()
        .map(|p| (p.about_state.as_deref(), p))
        .collect();
    assert_eq!(
        by.keys().copied().collect::<Vec<_>>(),
        vec![None, Some("DE"), Some("FR"), Some("GB"), Some("US")]
    );
    // DE: registration, not geolocation (SE), chooses it; the reflector is not accused.
    let de = by[&Some("DE")];
    assert_eq!(de.recipient.code, "DE");
    assert_eq!(de.routing, Routing::Direct);
    assert_eq!(de.sources.len(), 1);
    assert_eq!(de.sources[0].source.addr, ip("89.160.20.112"));
    assert_eq!(de.provider_abuse.len(), 1);
    assert_eq!(de.provider_abuse[0].disposition, Disposition::Reflector);
    assert_eq!(by[&Some("FR")].recipient.code, "FR");
    // No POC for GB or US: their packages go to NL's national authority for routing.
    for s in [Some("GB"), Some("US")] {
        assert_eq!(by[&s].recipient.code, "NL");
        assert!(
            matches!(&by[&s].routing, Routing::ViaNationalAuthority { reason } if reason.contains("no point of contact"))
        );
    }
    // The spoofed source accuses no one.
    let unknown = by[&None];
    assert!(unknown.sources.is_empty());
    assert_eq!(unknown.provider_abuse[0].disposition, Disposition::Spoofed);
    assert_eq!(unknown.recipient.code, "NL");
    assert!(plan.own_state_sources.is_empty());
}

#[test]
fn own_sources_excluded_and_tlp_refusal_routes_via_the_authority() {
    let dir = Directory::parse(
        r#"
[[state]]
code = "FR"
name = "CERT-FR"
[[state]]
code = "DE"
name = "CERT-Bund"
tlp_accepted = ["clear", "green"]
[[state.channel]]
kind = "taxii"
url = "https://taxii.example/api1/"
collection = "91a7b528-80eb-42ed-a74d-c6fbd5a26116"
"#,
    )
    .unwrap();
    let alert = sample_alert();
    let plan =
        recipients::plan(&alert, &attributions(&alert), &[], &dir, "FR", Tlp::Amber).unwrap();
    assert_eq!(plan.own_state_sources, vec![ip("2.125.160.216")]);
    assert!(plan
        .packages
        .iter()
        .all(|p| p.about_state.as_deref() != Some("FR")));
    let de = plan
        .packages
        .iter()
        .find(|p| p.about_state.as_deref() == Some("DE"))
        .unwrap();
    assert_eq!(de.recipient.code, "FR");
    assert!(
        matches!(&de.routing, Routing::ViaNationalAuthority { reason } if reason.contains("TLP:AMBER"))
    );
    // A caller may name spoofed sources; the requesting State must be in the directory.
    let plan = recipients::plan(
        &alert,
        &attributions(&alert),
        &[ip("89.160.20.112")],
        &dir,
        "FR",
        Tlp::Clear,
    )
    .unwrap();
    assert!(plan.packages.iter().all(|p| p
        .sources
        .iter()
        .all(|s| s.source.addr != ip("89.160.20.112"))));
    let e =
        recipients::plan(&alert, &attributions(&alert), &[], &dir, "IT", Tlp::Clear).unwrap_err();
    assert!(e.to_string().contains("IT has no entry"), "{e}");
}

#[test]
fn directory_rejects_bad_entries_all_at_once() {
    let e = Directory::parse(
        "[[state]]\ncode = \"de\"\nname = \"\"\npublic_key = \"xyz\"\n[[state.channel]]\nkind = \"webhook\"\nurl = \"ftp://x\"\n",
    )
    .unwrap_err()
    .to_string();
    for want in [
        "ISO 3166-1",
        "name is empty",
        "public_key",
        "url must be http(s)",
    ] {
        assert!(e.contains(want), "{want}: {e}");
    }
    let e = Directory::parse("[[state]]\ncode = \"DE\"\nname = \"x\"\nfax = 1\n").unwrap_err();
    assert!(e.to_string().contains("unknown field `fax`"), "{e}");
}

struct Built {
    packages: Vec<Package>,
    key: SecretKey,
}

fn build_all(packaged_at_ns: u64) -> Built {
    let alert = sample_alert();
    let flows = sample::flows(&alert, 3);
    let plan = plan_for("NL", Tlp::Amber);
    let dir = sample::directory();
    let key = SecretKey::from_seed(&[42; 32]);
    let norms = norms();
    let geo = db().provenance();
    let operator = Operator {
        name: "Example Grid Operator".into(),
        email: Some("soc@grid.example".into()),
    };
    let settings = RequestSettings::default();
    let packages = plan
        .packages
        .iter()
        .map(|p| {
            package::build(
                BuildInput {
                    alert: &alert,
                    flows: &flows,
                    planned: p,
                    requester: dir.get("NL").unwrap(),
                    operator: &operator,
                    asset_operator: None,
                    settings: &settings,
                    norms: &norms,
                    geo: &geo,
                    packaged_at_ns,
                    flows_received_ns: None,
                },
                &key,
            )
            .unwrap()
        })
        .collect();
    Built { packages, key }
}

const T: u64 = sample::START_NS + 3_600_000_000_000;

fn text(p: &Package, f: &str) -> String {
    String::from_utf8(p.files[f].clone()).unwrap()
}

#[test]
fn packages_are_deterministic_complete_and_verify() {
    let a = build_all(T);
    let b = build_all(T);
    assert_eq!(a.packages, b.packages);
    assert_ne!(
        build_all(T + 1_000_000_000).packages[0].files["manifest.json"],
        a.packages[0].files["manifest.json"]
    );
    let pk = a.key.public();
    for p in &a.packages {
        let names: Vec<&str> = p.files.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "custody.jsonl",
                "evidence/alert.json",
                "evidence/attribution.json",
                "evidence/flows.jsonl",
                "manifest.intoto.dsse.json",
                "manifest.json",
                "misp/event.json",
                "request.md",
                "stix/bundle.json"
            ]
        );
        let v = verify_files(&p.files, &pk).unwrap();
        assert_eq!(v.package_id, p.id);
        assert_eq!(v.custody_entries, 4);
        assert_eq!(
            read_tar(p.tar_bytes().unwrap().as_slice()).unwrap(),
            p.files
        );
    }
    assert_eq!(
        a.packages[0].tar_bytes().unwrap(),
        b.packages[0].tar_bytes().unwrap()
    );
}

#[test]
fn the_de_package_holds_only_de_sources_and_says_what_it_must() {
    let built = build_all(T);
    let de = built
        .packages
        .iter()
        .find(|p| p.id.contains("-DE-"))
        .unwrap();
    let flows = text(de, "evidence/flows.jsonl");
    assert_eq!(flows.lines().count(), 6); // 3 each from the DE source and the DE reflector
    for l in flows.lines() {
        let f: normwatch_model::FlowRecord = serde_json::from_str(l).unwrap();
        assert!(f.orig_addr == ip("89.160.20.112") || f.orig_addr == ip("89.160.20.130"));
    }
    let alert: normwatch_model::Alert =
        serde_json::from_str(&text(de, "evidence/alert.json")).unwrap();
    assert_eq!(alert.top_sources.len(), 2);

    let letter = text(de, "request.md");
    for want in [
        "electricity distribution control",
        "12%",
        "## Timeline (UTC)",
        "2026-03-01T10:00:00Z",
        "| 89.160.20.112 | AS29518 Bredband2 AB | 89.160.0.0/17 | DE | SE |",
        "89.160.20.130 | reflector",
        "reply by **2026-03-02T11:00:00Z UTC**",
        "A/70/174 para 13(h)",
        "No attribution of this activity to any State is made",
    ] {
        assert!(letter.contains(want), "{want} not in request.md:\n{letter}");
    }
    assert!(!letter.contains("2.125.160.216"));

    let bundle: serde_json::Value = serde_json::from_str(&text(de, "stix/bundle.json")).unwrap();
    let objs = bundle["objects"].as_array().unwrap();
    let of = |t: &str| objs.iter().filter(|o| o["type"] == t).collect::<Vec<_>>();
    for t in [
        "report",
        "incident",
        "observed-data",
        "sighting",
        "indicator",
        "attack-pattern",
        "note",
        "marking-definition",
        "extension-definition",
        "ipv4-addr",
        "autonomous-system",
        "network-traffic",
    ] {
        assert!(!of(t).is_empty(), "no {t}");
    }
    assert_eq!(of("marking-definition")[0]["id"], Tlp::Amber.stix_id());
    let inc = of("incident")[0];
    let ext = &inc["extensions"][normwatch_evidence::stix::EXTENSION_ID];
    assert_eq!(ext["requested_state"], "DE");
    assert_eq!(ext["norms_request_basis"][1], "ungge2015.13h");
    assert_eq!(
        inc["extensions"][normwatch_evidence::stix::INCIDENT_CORE_EXTENSION]["determination"],
        "successful-attempt"
    );
    let pattern = of("indicator")[0]["pattern"].as_str().unwrap();
    assert!(
        pattern.contains("'89.160.20.112'") && pattern.contains("'192.0.2.10'"),
        "{pattern}"
    );
    let ids: Vec<&str> = of("attack-pattern")
        .iter()
        .map(|a| a["external_references"][0]["external_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["T1499.001", "T0814"]);

    let misp: serde_json::Value = serde_json::from_str(&text(de, "misp/event.json")).unwrap();
    let tags: Vec<&str> = misp["Event"]["Tag"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for want in [
        "tlp:amber",
        "PAP:GREEN",
        "rsit:availability=\"ddos\"",
        "cyber-norms:un-gge-2015=\"13h\"",
    ] {
        assert!(tags.contains(&want), "{want} not in {tags:?}");
    }
    let attrs = misp["Event"]["Attribute"].as_array().unwrap();
    let reflector = attrs
        .iter()
        .find(|a| a["value"] == "89.160.20.130")
        .unwrap();
    assert_eq!(reflector["to_ids"], false);
}

#[test]
fn tampering_with_any_file_is_caught_and_named() {
    let built = build_all(T);
    let p = &built.packages[1];
    let pk = built.key.public();
    for name in p.files.keys() {
        let mut files = p.files.clone();
        let f = files.get_mut(name).unwrap();
        let i = f.len() / 2;
        f[i] ^= 0x01;
        let fault = verify_files(&files, &pk).unwrap_err().to_string();
        let want = match name.as_str() {
            "manifest.json" => {
                "manifest.json: SHA-256 does not match the signed statement".to_string()
            }
            "manifest.intoto.dsse.json" => "manifest.intoto.dsse.json: ".to_string(),
            other => format!("{other}: SHA-256 does not match the manifest"),
        };
        assert!(fault.starts_with(&want), "{name}: {fault}");
    }
    let mut files = p.files.clone();
    files.remove("request.md");
    assert_eq!(
        verify_files(&files, &pk).unwrap_err().to_string(),
        "missing file request.md"
    );
    let mut files = p.files.clone();
    files.insert("evidence/extra.pcap".into(), b"x".to_vec());
    assert!(verify_files(&files, &pk)
        .unwrap_err()
        .to_string()
        .contains("unexpected file evidence/extra.pcap"));
    let other = SecretKey::from_seed(&[1; 32]).public();
    assert!(verify_files(&p.files, &other)
        .unwrap_err()
        .to_string()
        .contains("signature invalid"));
}

#[test]
fn directory_and_tar_on_disk_verify() {
    let built = build_all(T);
    let tmp = tempfile::tempdir().unwrap();
    let p = &built.packages[0];
    let dir = p.write_dir(tmp.path()).unwrap();
    let tar = p.write_tar(tmp.path()).unwrap();
    let pk = built.key.public();
    assert_eq!(verify_path(&dir, &pk).unwrap().package_id, p.id);
    assert_eq!(verify_path(&tar, &pk).unwrap().package_id, p.id);
    std::fs::write(dir.join("stix/notes.txt"), "x").unwrap();
    assert!(verify_path(&dir, &pk)
        .unwrap_err()
        .to_string()
        .contains("unexpected file stix/notes.txt"));
    assert!(
        p.write_dir(tmp.path()).is_err(),
        "never overwrites a package"
    );
    let msg = verify_path(&tmp.path().join("nope"), &pk)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("nope"), "{msg}");
    std::fs::write(tmp.path().join("junk.tar"), b"not a tar at all, just text").unwrap();
    assert!(verify_path(&tmp.path().join("junk.tar"), &pk).is_err());
}

#[test]
fn anonymisers_go_to_the_provider_abuse_section() {
    let db = db();
    let a = db.lookup(ip("1.2.3.4")).unwrap();
    assert!(a
        .anonymous
        .as_ref()
        .is_some_and(|f| f.vpn && f.hides_origin()));
    let alert = sample::alert(&[(ip("1.2.3.4"), false), (ip("89.160.20.112"), false)]);
    let attrs: BTreeMap<IpAddr, Attribution> = alert
        .top_sources
        .iter()
        .map(|s| (s.addr, db.lookup(s.addr).unwrap()))
        .collect();
    let plan =
        recipients::plan(&alert, &attrs, &[], &sample::directory(), "NL", Tlp::Amber).unwrap();
    let anon = plan
        .packages
        .iter()
        .flat_map(|p| &p.provider_abuse)
        .find(|s| s.source.addr == ip("1.2.3.4"))
        .unwrap();
    assert_eq!(anon.disposition, Disposition::Anonymiser);
    assert!(plan
        .packages
        .iter()
        .all(|p| p.sources.iter().all(|s| s.source.addr != ip("1.2.3.4"))));
}

#[test]
fn deliveries_append_signed_sent_entries_and_nothing_else_may_be_added() {
    use normwatch_evidence::custody::{self, Action, Event};
    let built = build_all(T);
    let tmp = tempfile::tempdir().unwrap();
    let p = &built.packages[0];
    let dir = p.write_dir(tmp.path()).unwrap();
    let pk = built.key.public();
    package::record_sent(
        &dir,
        &built.key,
        "NCSC-NL",
        "taxii https://taxii.example/api1/",
        T + 60_000_000_000,
    )
    .unwrap();
    package::record_sent(
        &dir,
        &built.key,
        "NCSC-NL",
        "directory outbox/DE",
        T + 120_000_000_000,
    )
    .unwrap();
    let v = verify_path(&dir, &pk).unwrap();
    assert_eq!(v.custody_entries, 6);
    let log = std::fs::read(dir.join("custody.jsonl")).unwrap();
    let entries = custody::check(&log).unwrap();
    assert_eq!(entries[5].action, Action::Sent);
    assert!(entries[5].note.contains("outbox/DE"));
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        1,
        "no temporary file left"
    );

    let ev = |action| Event {
        action,
        actor: "someone".into(),
        at: "2026-03-01T12:00:00.000Z".into(),
        tool: "t".into(),
        tool_version: "1".into(),
        subjects: vec![],
        note: String::new(),
    };
    let mut files = p.files.clone();
    // Signed by another key.
    let other = SecretKey::from_seed(&[3; 32]);
    files.insert(
        "custody.jsonl".into(),
        custody::append_signed(&log, ev(Action::Sent), &other).unwrap(),
    );
    let f = verify_files(&files, &pk).unwrap_err().to_string();
    assert!(
        f.contains("custody.jsonl: line 7: entry added after packaging"),
        "{f}"
    );
    // Signed, but claiming a packaging step.
    files.insert(
        "custody.jsonl".into(),
        custody::append_signed(&log, ev(Action::Derived), &built.key).unwrap(),
    );
    let f = verify_files(&files, &pk).unwrap_err().to_string();
    assert!(f.contains("line 7: entry added after packaging"), "{f}");
    // An appended entry edited afterwards.
    let text = String::from_utf8(log.clone())
        .unwrap()
        .replace("outbox/DE", "outbox/FR");
    files.insert("custody.jsonl".into(), text.into_bytes());
    let f = verify_files(&files, &pk).unwrap_err().to_string();
    assert!(f.contains("line 6: entry added after packaging"), "{f}");
    // Cut inside the signed part.
    files.insert("custody.jsonl".into(), log[..100].to_vec());
    let f = verify_files(&files, &pk).unwrap_err().to_string();
    assert!(
        f.contains("custody.jsonl: shorter than the signed log"),
        "{f}"
    );
}
