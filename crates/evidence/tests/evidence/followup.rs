//! Follow-up of delivered requests: the packager watches the sources a request named, in event
//! time, and sends a signed follow-up when their activity stops and at the deadline, through the
//! outbox; a restart between the request and the follow-ups loses and repeats nothing; a
//! signed reply dropped beside a package is recorded in the ledger.

use super::ip;
use normwatch_evidence::config::EvidenceConfig;
use normwatch_evidence::followup::FollowUpKind;
use normwatch_evidence::keys::{PublicKey, SecretKey};
use normwatch_evidence::packager::Packager;
use normwatch_evidence::sample;
use normwatch_evidence::verify::verify_path;
use normwatch_model::FlowRecord;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

const S: u64 = 1_000_000_000;
/// Wall-clock time of packaging and delivery (never used for the follow-up decisions).
const WALL: u64 = sample::START_NS + 7 * 86_400 * S;

const DE: [&str; 2] = ["89.160.20.112", "89.160.20.113"];
const FR: [&str; 2] = ["2.125.160.216", "2.125.160.217"];

fn setup(tmp: &Path, reply_key: &SecretKey) -> (EvidenceConfig, PathBuf) {
    let pk_hex = normwatch_evidence::canon::hex(reply_key.public().key.as_bytes());
    std::fs::write(
        tmp.join("recipients.toml"),
        format!(
            r#"
[[state]]
code = "NL"
name = "NCSC-NL"
[[state.channel]]
kind = "directory"
path = "drops/NL"

[[state]]
code = "DE"
name = "CERT-Bund"
public_key = "{pk_hex}"
[[state.channel]]
kind = "directory"
path = "drops/DE"

[[state]]
code = "FR"
name = "CERT-FR"
[[state.channel]]
kind = "directory"
path = "drops/FR"
"#
        ),
    )
    .unwrap();
    let geoip = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/geoip");
    let config = format!(
        r#"
[evidence]
own_state = "NL"
operator = "Example Grid Operator"
recipients = "recipients.toml"
signing_key = "evidence.key"
out_dir = "store"
[evidence.geoip]
country = "{0}/GeoLite2-Country-Test.mmdb"
asn = "{0}/GeoLite2-ASN-Test.mmdb"
[evidence.follow_up]
quiet = "30s"
deadline = "3m"
"#,
        geoip.display()
    );
    let cfg = EvidenceConfig::from_config_text(&config, tmp).unwrap();
    let key = SecretKey::generate().unwrap();
    let pub_path = key.write(&tmp.join("evidence.key")).unwrap();
    (cfg, pub_path)
}

/// A record of traffic from `src` to the sample victim, ending at `t`.
fn rec(template: &FlowRecord, src: &str, t: u64, id: u64) -> FlowRecord {
    let mut r = template.clone();
    r.orig_addr = ip(src);
    r.flow_id = 1_000_000 + id;
    r.first_ns = t - S / 2;
    r.last_ns = t;
    r
}

fn follow_up_ids(p: &Packager) -> Vec<String> {
    p.store()
        .package_ids()
        .unwrap()
        .into_iter()
        .filter(|id| id.contains("-FU-"))
        .collect()
}

#[test]
fn stopped_and_continuing_activity_is_followed_up_once_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let reply_key = SecretKey::generate().unwrap();
    let (cfg, pub_path) = setup(tmp.path(), &reply_key);
    let pk = PublicKey::load(&pub_path).unwrap();
    let sources: Vec<(IpAddr, bool)> = DE.iter().chain(&FR).map(|a| (ip(a), false)).collect();
    let alert = sample::alert(&sources);
    let flows = sample::flows(&alert, 2);
    let template = flows[0].clone();

    let mut p = Packager::open(cfg.clone(), super::norms()).unwrap();
    p.observe(&flows);
    let out = p.package(&alert, &flows, WALL).unwrap();
    let mut states: Vec<&str> = out.requests.iter().map(|(_, s)| s.as_str()).collect();
    states.sort_unstable();
    assert_eq!(states, ["DE", "FR"], "{out:?}");
    // The request is the flows' time when it was packaged: the alert's end here.
    let requested = alert.window_end_ns;
    let de_id = out.requests.iter().find(|r| r.1 == "DE").unwrap().0.clone();
    let fr_id = out.requests.iter().find(|r| r.1 == "FR").unwrap().0.clone();

    assert_eq!(p.deliver_due(WALL).unwrap().sent, 2);

    // Every host goes on for 30 s, then DE's stop; FR's go on every 10 s. The packager is
    // restarted half-way.
    let mut stored: Vec<(String, FollowUpKind, String)> = Vec::new();
    let mut n = 0;
    for step in 1..=22u64 {
        let t = requested + step * 10 * S;
        let batch: Vec<FlowRecord> = FR
            .iter()
            .chain(if step <= 7 { &DE[..] } else { &[] })
            .map(|a| {
                n += 1;
                rec(&template, a, t, n)
            })
            .collect();
        p.observe(&batch);
        for f in p.follow_up(WALL + step * S).unwrap() {
            assert!(f.new);
            stored.push((f.id.clone(), f.kind, f.watch.status().to_string()));
        }
        p.deliver_due(WALL + step * S).unwrap();
        if step == 8 {
            drop(p);
            p = Packager::open(cfg.clone(), super::norms()).unwrap();
        }
    }
    // DE: stopped once the quiet period passed, then the deadline one; FR: only
    // the deadline follow-up, saying the activity continues.
    assert_eq!(
        stored,
        [
            (
                format!("{de_id}-FU-stopped"),
                FollowUpKind::Stopped,
                "stopped".to_string()
            ),
            (
                format!("{de_id}-FU-deadline"),
                FollowUpKind::Deadline,
                "stopped".to_string()
            ),
            (
                format!("{fr_id}-FU-deadline"),
                FollowUpKind::Deadline,
                "continues".to_string()
            ),
        ]
    );
    assert_eq!(follow_up_ids(&p).len(), 3);
    assert_eq!(p.store().pending().unwrap(), 0);

    let de_letter =
        std::fs::read_to_string(p.store().package_dir(&stored[0].0).join("follow-up.md")).unwrap();
    assert!(
        de_letter.contains(
            "The activity from the 2 listed hosts stopped at 2026-03-01T10:02:10Z, \
             70 seconds after the request, before the deadline."
        ),
        "{de_letter}"
    );
    let fr_letter =
        std::fs::read_to_string(p.store().package_dir(&stored[2].0).join("follow-up.md")).unwrap();
    assert!(
        fr_letter.contains("The activity continues from 2 of the 2 listed hosts"),
        "{fr_letter}"
    );
    assert!(fr_letter.contains("no State attribution is made"));
    for (id, _, _) in &stored {
        let dir = p.store().package_dir(id);
        let v = verify_path(&dir, &pk).unwrap();
        assert_eq!(&v.package_id, id);
        // Delivered once, as a `.tar` beside the request's.
        let drop_dir = tmp.path().join(if id.contains("-DE-") {
            "drops/DE"
        } else {
            "drops/FR"
        });
        assert!(verify_path(&drop_dir.join(format!("{id}.tar")), &pk).is_ok());
        let bundle: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("stix/bundle.json")).unwrap()).unwrap();
        let request = id.split("-FU-").next().unwrap();
        let report_ref = format!(
            "report--{}",
            normwatch_evidence::stix::sdo_uuid(request, "report")
        );
        let sighting = bundle["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["type"] == "sighting")
            .unwrap();
        assert_eq!(
            sighting["sighting_of_ref"],
            format!(
                "indicator--{}",
                normwatch_evidence::stix::sdo_uuid(request, "sources")
            )
        );
        assert!(bundle.to_string().contains(&report_ref));
    }
    // The request's indicator is in the request's own bundle.
    let request_bundle =
        std::fs::read_to_string(p.store().package_dir(&de_id).join("stix/bundle.json")).unwrap();
    assert!(request_bundle.contains(&format!(
        "indicator--{}",
        normwatch_evidence::stix::sdo_uuid(&de_id, "sources")
    )));

    // The ledger: outcomes per request.
    let requests = p.store().requests().unwrap();
    assert_eq!(requests.len(), 2);
    let de = requests
        .iter()
        .find(|r| r.watch.package_id == de_id)
        .unwrap();
    assert_eq!(de.watch.status(), "stopped");
    assert!(de.sent_ns.is_some());
    assert_eq!(de.follow_ups.len(), 2);
    assert!(de.follow_ups.iter().all(|f| f.delivered));
    let fr = requests
        .iter()
        .find(|r| r.watch.package_id == fr_id)
        .unwrap();
    assert_eq!(fr.watch.status(), "continues");
    assert_eq!(fr.watch.active_at_deadline, Some(2));
    let figures = normwatch_evidence::followup::figures(&requests);
    let got: Vec<_> = figures
        .iter()
        .map(|f| {
            (
                f.state.as_str(),
                f.requests,
                f.followed_up,
                f.stopped_before_deadline,
                f.continuing,
                f.median_seconds_to_stop,
            )
        })
        .collect();
    assert_eq!(
        got,
        [("DE", 1, 1, 1, 0, Some(70.0)), ("FR", 1, 1, 0, 1, None)]
    );

    // A reply signed with DE's key is recorded as verified, once; one in FR's drop without
    // a known key is recorded, unverified.
    let reply = normwatch_evidence::dsse::sign(
        serde_json::json!({"package_id": de_id, "text": "Hosts taken offline by the provider."})
            .to_string()
            .as_bytes(),
        &reply_key,
    );
    std::fs::write(
        tmp.path().join(format!("drops/DE/{de_id}.reply.json")),
        serde_json::to_vec(&reply).unwrap(),
    )
    .unwrap();
    let forged = normwatch_evidence::dsse::sign(
        serde_json::json!({"package_id": fr_id, "text": "done"})
            .to_string()
            .as_bytes(),
        &SecretKey::generate().unwrap(),
    );
    std::fs::write(
        tmp.path().join(format!("drops/FR/{fr_id}.reply.json")),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    let got = p.poll_replies(WALL + 100 * S).unwrap();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(p.poll_replies(WALL + 101 * S).unwrap().is_empty());
    let requests = p.store().requests().unwrap();
    let de = requests
        .iter()
        .find(|r| r.watch.package_id == de_id)
        .unwrap();
    assert_eq!(de.replies.len(), 1);
    assert!(de.replies[0].verified);
    assert_eq!(de.replies[0].text, "Hosts taken offline by the provider.");
    let fr = requests
        .iter()
        .find(|r| r.watch.package_id == fr_id)
        .unwrap();
    assert!(!fr.replies[0].verified);
}

#[test]
fn a_follow_up_waits_for_its_request_s_delivery_and_is_the_same_bytes_whatever_the_wall_clock() {
    let run = |wall: u64| {
        let tmp = tempfile::tempdir().unwrap();
        let (cfg, _) = setup(tmp.path(), &SecretKey::from_seed(&[3; 32]));
        let sources: Vec<(IpAddr, bool)> = DE.iter().map(|a| (ip(a), false)).collect();
        let alert = sample::alert(&sources);
        let flows = sample::flows(&alert, 1);
        let mut p = Packager::open(cfg, super::norms()).unwrap();
        p.observe(&flows);
        p.package(&alert, &flows, wall).unwrap();
        // Quiet for longer than the period, but the request is not delivered yet.
        p.observe(&[rec(
            &flows[0],
            "192.0.2.77",
            alert.window_end_ns + 40 * S,
            0,
        )]);
        assert!(p.follow_up(wall).unwrap().is_empty());
        p.deliver_due(wall).unwrap();
        let f = p.follow_up(wall + 1).unwrap();
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].kind, FollowUpKind::Stopped);
        let dir = p.store().package_dir(&f[0].id);
        [
            "follow-up.md",
            "stix/bundle.json",
            "misp/event.json",
            "evidence/follow-up.json",
        ]
        .iter()
        .map(|n| std::fs::read(dir.join(n)).unwrap())
        .collect::<Vec<_>>()
    };
    assert_eq!(run(WALL), run(WALL + 3_600 * S));
}

/// Alerts on three operators' assets from the same hosts are one campaign: one request per
/// State, the later alerts' packages are updates of it (naming every service impaired so far,
/// carrying their own evidence, verifying like any package), and their sources join the
/// request's follow-up. An alert from other hosts starts a campaign of its own.
#[test]
fn alerts_sharing_hosts_are_one_campaign_with_one_request_per_state_and_updates() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, pub_path) = setup(tmp.path(), &SecretKey::generate().unwrap());
    let pk = PublicKey::load(&pub_path).unwrap();
    let mut p = Packager::open(cfg, super::norms()).unwrap();
    let sources: Vec<(IpAddr, bool)> = DE.iter().chain(&FR).map(|a| (ip(a), false)).collect();
    let on = |asset: &str, service: &str, shift: u64, sources: &[(IpAddr, bool)]| {
        let mut a = sample::alert(sources);
        a.asset = normwatch_model::AssetId(std::sync::Arc::from(asset));
        a.id = format!("{asset}/syn_flood/{}", a.window_start_ns / S + shift);
        a.service = service.into();
        a.window_start_ns += shift * S;
        a.window_end_ns += shift * S;
        a
    };
    let first = on(sample::ASSET, "grid control", 0, &sources);
    let second = on("hospital-portal", "patient records", 20, &sources[1..]);
    let third = on("water-web", "water billing", 40, &sources);
    let mut ids = Vec::new();
    for a in [&first, &second, &third] {
        let flows = sample::flows(a, 1);
        p.observe(&flows);
        let out = p.package(a, &flows, WALL).unwrap();
        ids.push(out.stored.clone());
        if a.id != first.id {
            assert!(out.requests.is_empty(), "{out:?}");
        }
    }
    // The first alert made the requests (DE, FR); the later ones updates of them.
    assert_eq!(ids[0].len(), 2);
    for (later, n) in [(&ids[1], 2), (&ids[2], 2)] {
        assert_eq!(later.len(), n, "{later:?}");
        for id in later {
            let request = id.split("-UP-").next().unwrap();
            assert!(ids[0].contains(&request.to_string()), "{id}");
            let dir = p.store().package_dir(id);
            assert_eq!(verify_path(&dir, &pk).unwrap().package_id, *id);
            let letter = std::fs::read_to_string(dir.join("request.md")).unwrap();
            assert!(
                letter.contains(&format!("Update of request `{request}`")),
                "{letter}"
            );
        }
    }
    let last = p.store().package_dir(&ids[2][0]);
    let letter = std::fs::read_to_string(last.join("request.md")).unwrap();
    for service in ["grid control", "patient records", "water billing"] {
        assert!(letter.contains(service), "{service}: {letter}");
    }
    let requests = p.store().requests().unwrap();
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.watch.updates.len(), 2);
        assert!(r.watch.campaign.is_some());
    }
    // Other hosts, same time: a campaign of its own, so a request of its own.
    let other = on(
        "hospital-portal",
        "patient records",
        30,
        &[(ip("89.160.20.120"), false), (ip("89.160.20.121"), false)],
    );
    let flows = sample::flows(&other, 1);
    let out = p.package(&other, &flows, WALL).unwrap();
    assert_eq!(out.requests.len(), 1, "{out:?}");
    assert!(!out.stored[0].contains("-UP-"));
}
