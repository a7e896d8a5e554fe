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

/// The store's configuration under `tmp`, holding a new campaign's requests for `hold`,
/// signing with `signer`; DE (replies signed with `reply_key`) and FR take drops.
fn setup(
    tmp: &Path,
    reply_key: &SecretKey,
    hold: &str,
    signer: &SecretKey,
) -> (EvidenceConfig, PathBuf) {
    let pk_hex = normwatch_evidence::canon::hex(reply_key.public().key.as_bytes());
    let states = format!(
        r#"
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
    );
    setup_with(
        tmp,
        &states,
        &format!("[evidence.campaign]\nhold = \"{hold}\"\n"),
        signer,
    )
}

/// The store's configuration under `tmp`: NL (the own State, taking drops) and the
/// `[[state]]` tables `states` as recipients, `extra` appended to the configuration, signing
/// with `signer`. Returns it with the signer's public key file.
fn setup_with(
    tmp: &Path,
    states: &str,
    extra: &str,
    signer: &SecretKey,
) -> (EvidenceConfig, PathBuf) {
    std::fs::write(
        tmp.join("recipients.toml"),
        format!("{}{states}", super::NL_RECIPIENT),
    )
    .unwrap();
    let cfg = super::packager_config(
        tmp,
        "",
        &format!("[evidence.follow_up]\nquiet = \"30s\"\ndeadline = \"3m\"\n{extra}"),
    );
    let pub_path = signer.write(&tmp.join("evidence.key")).unwrap();
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

/// The request is held for the campaign hold (event time), kept in the ledger across a
/// restart, built once the flows' time passes the hold; a restart between the request and its
/// follow-ups, and a release repeated after a crash, lose and repeat nothing.
#[test]
fn stopped_and_continuing_activity_is_followed_up_once_across_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let reply_key = SecretKey::generate().unwrap();
    let (cfg, pub_path) = setup(
        tmp.path(),
        &reply_key,
        "20s",
        &SecretKey::generate().unwrap(),
    );
    let pk = PublicKey::load(&pub_path).unwrap();
    let sources: Vec<(IpAddr, bool)> = DE.iter().chain(&FR).map(|a| (ip(a), false)).collect();
    let alert = sample::alert(&sources);
    let flows = sample::flows(&alert, 2);
    let template = flows[0].clone();

    let mut p = Packager::open(cfg.clone(), super::norms()).unwrap();
    p.observe(&flows);
    let out = p.package(&alert, &flows, WALL).unwrap();
    // Held for the campaign hold: nothing built yet, and the hold is in the ledger.
    assert!(out.held && out.stored.is_empty(), "{out:?}");
    assert!(p.store().has_alert(&alert.id).unwrap());
    assert!(p.release_held(WALL, false).unwrap().is_empty());
    assert_eq!(p.deliver_due(WALL).unwrap().sent, 0);
    let held = p.store().holds().unwrap();
    assert_eq!(held.len(), 1);

    // Every host goes on for 70 s, then DE's stop; FR's go on every 10 s. The packager is
    // restarted while the alert is held and again between the request and its follow-ups.
    let end = alert.window_end_ns;
    let mut requests: Vec<(String, String)> = Vec::new();
    let mut stored: Vec<(String, FollowUpKind, String)> = Vec::new();
    let mut n = 0;
    for step in 1..=22u64 {
        let t = end + step * 10 * S;
        let batch: Vec<FlowRecord> = FR
            .iter()
            .chain(if step <= 7 { &DE[..] } else { &[] })
            .map(|a| {
                n += 1;
                rec(&template, a, t, n)
            })
            .collect();
        p.observe(&batch);
        for (a, out) in p.release_held(WALL + step * S, false).unwrap() {
            assert_eq!(a.id, alert.id);
            requests.extend(out.requests);
        }
        for f in p.follow_up(WALL + step * S).unwrap() {
            assert!(f.new);
            stored.push((f.id.clone(), f.kind, f.watch.status().to_string()));
        }
        p.deliver_due(WALL + step * S).unwrap();
        if step == 1 || step == 8 {
            drop(p);
            p = Packager::open(cfg.clone(), super::norms()).unwrap();
        }
    }
    // Released once the flows' time passed the hold (20 s after the alert's end): the
    // request's time.
    requests.sort_by(|a, b| a.1.cmp(&b.1));
    let states: Vec<&str> = requests.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(states, ["DE", "FR"], "{requests:?}");
    let requested = end + 20 * S;
    let de_id = requests[0].0.clone();
    let fr_id = requests[1].0.clone();
    assert!(p.store().holds().unwrap().is_empty());
    assert_eq!(p.held(), 0);
    // Built after the restart from the ledger's hold: with the alert's flows.
    let kept = std::fs::read_to_string(p.store().package_dir(&de_id).join("evidence/flows.jsonl"))
        .unwrap()
        .lines()
        .count();
    let de_flows = flows
        .iter()
        .filter(|f| DE.contains(&f.orig_addr.to_string().as_str()))
        .count();
    assert!(de_flows > 0);
    assert_eq!(kept, de_flows);

    // A crash after the packages were stored but before the hold was ended: the release is
    // repeated after the restart, and stores, queues and registers nothing twice.
    let before = p.store().package_ids().unwrap();
    drop(p);
    {
        let mut store = normwatch_evidence::store::Store::open(&cfg.out_dir).unwrap();
        store.add_hold(&held[0]).unwrap();
    }
    p = Packager::open(cfg.clone(), super::norms()).unwrap();
    assert_eq!(p.held(), 1);
    let again = p.release_held(WALL + 30 * S, true).unwrap();
    assert_eq!(again.len(), 1);
    assert!(again[0].1.stored.is_empty(), "{:?}", again[0].1);
    assert!(again[0].1.requests.is_empty(), "{:?}", again[0].1);
    assert_eq!(p.store().package_ids().unwrap(), before);
    assert_eq!(p.store().requests().unwrap().len(), 2);
    // The same alert's close delivered again packages nothing.
    let out = p.package(&alert, &flows, WALL + 31 * S).unwrap();
    assert!(!out.held && out.stored.is_empty(), "{out:?}");
    assert_eq!(p.store().package_ids().unwrap(), before);

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
             50 seconds after the request, before the deadline."
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
    assert_eq!(de.watch.requested_ns, requested);
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
        [("DE", 1, 1, 1, 0, Some(50.0)), ("FR", 1, 1, 0, 1, None)]
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
        let (cfg, _) = setup(
            tmp.path(),
            &SecretKey::from_seed(&[3; 32]),
            "0s",
            &SecretKey::generate().unwrap(),
        );
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

/// An alert on `asset` from `sources`, `shift` seconds after the sample alert.
fn alert_on(
    asset: &str,
    service: &str,
    shift: u64,
    sources: &[(IpAddr, bool)],
) -> normwatch_model::Alert {
    let mut a = sample::alert(sources);
    a.asset = normwatch_model::AssetId(std::sync::Arc::from(asset));
    a.id = format!("{asset}/syn_flood/{}", a.window_start_ns / S + shift);
    a.service = service.into();
    a.window_start_ns += shift * S;
    a.window_end_ns += shift * S;
    a
}

/// Every file of a package directory, by relative path.
fn files_of(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Alerts on three operators' assets from the same hosts, closing within the campaign hold,
/// are one campaign: one request per State naming all three services and carrying each
/// alert's evidence (one STIX report over the three incidents, one MISP event, every alert and
/// its flows), verifying like any package, and byte for byte the same whatever order the
/// alerts arrive in. An alert of the campaign after its requests were sent gives an update;
/// an alert from other hosts makes a campaign, and a request, of its own.
#[test]
fn alerts_sharing_hosts_are_one_campaign_with_one_request_per_state_whatever_their_order() {
    let sources: Vec<(IpAddr, bool)> = DE.iter().chain(&FR).map(|a| (ip(a), false)).collect();
    let first = alert_on(sample::ASSET, "grid control", 0, &sources);
    let second = alert_on("hospital-portal", "patient records", 20, &sources[1..]);
    let third = alert_on("water-web", "water billing", 40, &sources);
    let signer = SecretKey::from_seed(&[7; 32]);
    let run = |order: [&normwatch_model::Alert; 3]| {
        let tmp = tempfile::tempdir().unwrap();
        let (cfg, pub_path) = setup(tmp.path(), &SecretKey::generate().unwrap(), "60s", &signer);
        let mut p = Packager::open(cfg, super::norms()).unwrap();
        for a in order {
            let flows = sample::flows(a, 1);
            p.observe(&flows);
            let out = p.package(a, &flows, WALL).unwrap();
            assert!(out.held && out.stored.is_empty(), "{out:?}");
        }
        // The flows' time passes the hold after the newest alert's close.
        let mut tick = sample::flows(&third, 1)[0].clone();
        tick.orig_addr = ip("192.0.2.77");
        tick.last_ns = third.window_end_ns + 59 * S;
        p.observe(std::slice::from_ref(&tick));
        assert!(p.release_held(WALL, false).unwrap().is_empty());
        tick.last_ns = third.window_end_ns + 60 * S;
        p.observe(std::slice::from_ref(&tick));
        let released = p.release_held(WALL, false).unwrap();
        assert_eq!(released.len(), 3);
        let mut requests: Vec<(String, String)> = released
            .iter()
            .flat_map(|(_, o)| o.requests.clone())
            .collect();
        requests.sort_by(|a, b| a.1.cmp(&b.1));
        let files: Vec<_> = requests
            .iter()
            .map(|(id, _)| files_of(&p.store().package_dir(id)))
            .collect();
        (tmp, p, pub_path, requests, files)
    };
    let (tmp, mut p, pub_path, requests, files) = run([&first, &second, &third]);
    let (_tmp2, _p2, _, requests2, files2) = run([&third, &first, &second]);
    // The same alerts in another order: the same packages, byte for byte (Ed25519 signatures
    // are deterministic).
    assert_eq!(requests, requests2);
    assert_eq!(files, files2);

    let pk = PublicKey::load(&pub_path).unwrap();
    let states: Vec<&str> = requests.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(states, ["DE", "FR"]);
    assert_eq!(p.store().package_ids().unwrap().len(), 2);
    for (id, _) in &requests {
        assert!(!id.contains("-UP-"), "{id}");
        let dir = p.store().package_dir(id);
        assert_eq!(verify_path(&dir, &pk).unwrap().package_id, *id);
        let letter = std::fs::read_to_string(dir.join("request.md")).unwrap();
        for service in ["grid control", "patient records", "water billing"] {
            assert!(letter.contains(service), "{service}: {letter}");
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(
            manifest["alert_ids"],
            serde_json::json!([first.id, second.id, third.id])
        );
        assert!(manifest["campaign"].as_str().unwrap().starts_with("CP-"));
        let alerts: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("evidence/alerts.json")).unwrap())
                .unwrap();
        assert_eq!(alerts.as_array().unwrap().len(), 3);
        let flows = std::fs::read_to_string(dir.join("evidence/flows.jsonl")).unwrap();
        for asset in [sample::ASSET, "hospital-portal", "water-web"] {
            assert!(flows.contains(&format!("\"{asset}\"")), "{asset}");
        }
        // STIX: one report, over each alert's incident, indicator and observed data, and the
        // indicator over every listed source a follow-up's sighting names.
        let bundle: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("stix/bundle.json")).unwrap()).unwrap();
        let objects = bundle["objects"].as_array().unwrap();
        let of = |ty: &str| {
            objects
                .iter()
                .filter(|o| o["type"] == ty)
                .collect::<Vec<_>>()
        };
        let reports = of("report");
        assert_eq!(reports.len(), 1);
        assert_eq!(
            reports[0]["id"],
            format!(
                "report--{}",
                normwatch_evidence::stix::sdo_uuid(id, "report")
            )
        );
        let refs = reports[0]["object_refs"].as_array().unwrap();
        for ty in ["incident", "observed-data"] {
            let all = of(ty);
            assert_eq!(all.len(), 3, "{ty}");
            assert!(all.iter().all(|o| refs.contains(&o["id"])), "{ty}");
        }
        // Three alerts' indicators and the request's own.
        assert_eq!(of("indicator").len(), 4);
        assert!(refs.contains(&serde_json::json!(format!(
            "indicator--{}",
            normwatch_evidence::stix::sdo_uuid(id, "sources")
        ))));
        assert_eq!(of("note").len(), 1);
        let event: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("misp/event.json")).unwrap()).unwrap();
        let victims: Vec<&str> = event["Event"]["Attribute"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["type"] == "ip-dst")
            .map(|a| a["comment"].as_str().unwrap())
            .collect();
        for service in ["grid control", "patient records", "water billing"] {
            assert!(
                victims.iter().any(|c| c.contains(service)),
                "{service}: {victims:?}"
            );
        }
    }
    let ledger = p.store().requests().unwrap();
    assert_eq!(ledger.len(), 2);
    for r in &ledger {
        assert_eq!(r.watch.services.len(), 3, "{:?}", r.watch.services);
        // Every listed source of the three alerts in the State is followed up.
        assert_eq!(r.watch.sources.len(), 2);
        assert!(r.watch.campaign.is_some());
    }

    // After the requests were sent: an alert of the campaign is an update of its State's
    // request, naming every service so far; its sources join the request's follow-up.
    let fourth = alert_on("rail-web", "rail timetables", 200, &sources);
    let flows = sample::flows(&fourth, 1);
    p.observe(&flows);
    let out = p.package(&fourth, &flows, WALL).unwrap();
    assert!(!out.held && out.requests.is_empty(), "{out:?}");
    assert_eq!(out.stored.len(), 2, "{out:?}");
    for id in &out.stored {
        let request = id.split("-UP-").next().unwrap();
        assert!(requests.iter().any(|r| r.0 == request), "{id}");
        let dir = p.store().package_dir(id);
        assert_eq!(verify_path(&dir, &pk).unwrap().package_id, *id);
        let letter = std::fs::read_to_string(dir.join("request.md")).unwrap();
        assert!(
            letter.contains(&format!("Update of request `{request}`")),
            "{letter}"
        );
        for service in [
            "grid control",
            "patient records",
            "water billing",
            "rail timetables",
        ] {
            assert!(letter.contains(service), "{service}: {letter}");
        }
    }
    for r in p.store().requests().unwrap() {
        assert_eq!(r.watch.updates.len(), 1);
        assert_eq!(r.watch.services.len(), 4);
    }
    // A reply to an update counts as a reply to its request.
    assert_eq!(p.deliver_due(WALL).unwrap().sent, 4);
    let update = out.stored.iter().find(|id| id.contains("-DE-")).unwrap();
    std::fs::write(
        tmp.path().join(format!("drops/DE/{update}.reply.json")),
        b"seen, acting on it",
    )
    .unwrap();
    assert_eq!(p.poll_replies(WALL).unwrap().len(), 1);
    let ledger = p.store().requests().unwrap();
    let de = ledger.iter().find(|r| r.watch.recipient == "DE").unwrap();
    assert_eq!(de.replies.len(), 1);
    assert_eq!(de.replies[0].package_id, *update);
    assert!(!de.replies[0].verified);
    assert!(ledger
        .iter()
        .filter(|r| r.watch.recipient != "DE")
        .all(|r| r.replies.is_empty()));

    // Other hosts, same time: a campaign of its own, held and then its own request.
    let other = alert_on(
        "hospital-portal",
        "patient records",
        210,
        &[(ip("89.160.20.120"), false), (ip("89.160.20.121"), false)],
    );
    let flows = sample::flows(&other, 1);
    let out = p.package(&other, &flows, WALL).unwrap();
    assert!(out.held, "{out:?}");
    // The end of input: every held alert is packaged at once.
    let released = p.release_held(WALL, true).unwrap();
    assert_eq!(released.len(), 1);
    assert_eq!(released[0].1.requests.len(), 1, "{released:?}");
    assert!(!released[0].1.stored[0].contains("-UP-"));
    drop(tmp);
}

/// A recipient on TAXII answers with a STIX note on the collection naming the request's
/// report: the packager's reply poll (bounded, `added_after`) records it in the ledger as an
/// unverified reply to the request, once; its own request and follow-up notes, and a note
/// about another report, are not replies. Against a real TAXII 2.1 server (medallion).
#[test]
fn a_taxii_note_naming_the_request_is_recorded_as_an_unverified_reply() {
    use super::delivery::{start_medallion, COLLECTION};
    let tmp = tempfile::tempdir().unwrap();
    let port = super::delivery::free_port();
    let _server = start_medallion(tmp.path(), port, None);
    std::env::set_var("NORMWATCH_TEST_REPLY_TAXII_PASSWORD", "s3cret-for-tests");
    let de = format!(
        r#"
[[state]]
code = "DE"
name = "CERT-Bund"
[[state.channel]]
kind = "taxii"
url = "http://127.0.0.1:{port}/api1/"
collection = "{COLLECTION}"
user = "cert-bund"
password_env = "NORMWATCH_TEST_REPLY_TAXII_PASSWORD"
"#
    );
    let (cfg, _) = setup_with(tmp.path(), &de, "", &SecretKey::generate().unwrap());
    let mut p = Packager::open(cfg, super::norms()).unwrap();
    let sources: Vec<(IpAddr, bool)> = DE.iter().map(|a| (ip(a), false)).collect();
    let alert = sample::alert(&sources);
    let flows = sample::flows(&alert, 1);
    p.observe(&flows);
    assert!(p.package(&alert, &flows, WALL).unwrap().held);
    let released = p.release_held(WALL, true).unwrap();
    let request = released[0].1.requests[0].0.clone();
    assert_eq!(p.deliver_due(WALL).unwrap().sent, 1);
    // The request is in the collection, with its own note: no reply.
    let (got, unread) = p.poll_replies_reporting(WALL + S).unwrap();
    assert!(got.is_empty() && unread.is_empty(), "{got:?} {unread:?}");
    // The activity stops: the follow-up (whose note names the request's report) goes to the
    // same collection, and is not a reply either.
    let mut quiet = flows[0].clone();
    quiet.orig_addr = ip("192.0.2.77");
    quiet.last_ns = alert.window_end_ns + 40 * S;
    p.observe(&[quiet]);
    assert_eq!(p.follow_up(WALL + 2 * S).unwrap().len(), 1);
    assert_eq!(p.deliver_due(WALL + 2 * S).unwrap().sent, 1);
    assert!(p.poll_replies(WALL + 3 * S).unwrap().is_empty());

    // CERT-Bund adds a note about the request's report, and one about something else.
    let report = format!(
        "report--{}",
        normwatch_evidence::stix::sdo_uuid(&request, "report")
    );
    let note = |id: &str, refs: &str, text: &str| {
        serde_json::json!({
            "type": "note",
            "spec_version": "2.1",
            "id": id,
            "created": "2026-03-01T12:00:00.000Z",
            "modified": "2026-03-01T12:00:00.000Z",
            "created_by_ref": "identity--0b3c1c2e-3b1a-4f6e-9a4e-5d2f7c8b9a10",
            "abstract": "Reply from CERT-Bund",
            "content": text,
            "object_refs": [refs],
        })
    };
    let push = |objects: Vec<serde_json::Value>| {
        let (agent, auth) = super::delivery::taxii_client();
        let mut r = agent
            .post(&format!(
                "http://127.0.0.1:{port}/api1/collections/{COLLECTION}/objects/"
            ))
            .header("Accept", "application/taxii+json;version=2.1")
            .header("Content-Type", "application/taxii+json;version=2.1")
            .header("Authorization", &auth)
            .send(serde_json::to_vec(&serde_json::json!({ "objects": objects })).unwrap())
            .unwrap();
        assert_eq!(
            r.status().as_u16(),
            202,
            "{:?}",
            r.body_mut().read_to_string()
        );
    };
    push(vec![
        note(
            "note--6f0c9c5e-2a3b-4c5d-8e9f-0a1b2c3d4e5f",
            &report,
            "The hosts were taken offline by their provider.",
        ),
        note(
            "note--7a1d0d6f-3b4c-4d6e-9f0a-1b2c3d4e5f60",
            "report--11111111-2222-4333-8444-555555555555",
            "Not about your request.",
        ),
    ]);
    let (got, unread) = p.poll_replies_reporting(WALL + 4 * S).unwrap();
    assert!(unread.is_empty(), "{unread:?}");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].package_id, request);
    assert!(!got[0].verified, "a note carries no signature");
    assert!(got[0]
        .text
        .contains("The hosts were taken offline by their provider."));
    // Polled again: nothing new (the collection is read after the last note seen, kept in
    // the ledger, and a note is recorded once).
    let ledger = rusqlite::Connection::open(tmp.path().join("store/ledger.sqlite3")).unwrap();
    let after: String = ledger
        .query_row("SELECT added_after FROM taxii_reply_cursor", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(after.starts_with("20"), "{after}");
    assert!(p.poll_replies(WALL + 5 * S).unwrap().is_empty());
    let ledger = p.store().requests().unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].replies.len(), 1);
    assert!(!ledger[0].replies[0].verified);
    assert_eq!(normwatch_evidence::followup::figures(&ledger)[0].replies, 1);
}

/// A held alert linked to a campaign whose requests were sent, by an alert that joined that
/// campaign meanwhile, joins it too when its hold ends: updates, not a second request.
#[test]
fn a_held_alert_linked_to_a_sent_campaign_gives_updates_not_a_second_request() {
    let tmp = tempfile::tempdir().unwrap();
    let (cfg, _) = setup(
        tmp.path(),
        &SecretKey::generate().unwrap(),
        "10s",
        &SecretKey::generate().unwrap(),
    );
    let mut p = Packager::open(cfg, super::norms()).unwrap();
    let de: Vec<(IpAddr, bool)> = DE.iter().map(|a| (ip(a), false)).collect();
    let others = [(ip("89.160.20.120"), false), (ip("89.160.20.121"), false)];
    let a = alert_on(sample::ASSET, "grid control", 0, &de);
    let flows = sample::flows(&a, 1);
    assert!(p.package(&a, &flows, WALL).unwrap().held);
    let first = p.release_held(WALL, true).unwrap();
    let request = first[0].1.requests[0].0.clone();
    // Other hosts: held, a campaign of their own so far.
    let h = alert_on("water-web", "water billing", 30, &others);
    let flows = sample::flows(&h, 1);
    assert!(p.package(&h, &flows, WALL).unwrap().held);
    // An alert from both sets of hosts joins the sent campaign at once.
    let both: Vec<(IpAddr, bool)> = de.iter().chain(&others).copied().collect();
    let n = alert_on("hospital-portal", "patient records", 40, &both);
    let flows = sample::flows(&n, 1);
    let out = p.package(&n, &flows, WALL).unwrap();
    assert!(!out.held && out.requests.is_empty(), "{out:?}");
    assert!(out.stored[0].starts_with(&format!("{request}-UP-")));
    // The held alert, released, is an update of the same request.
    let released = p.release_held(WALL, true).unwrap();
    assert_eq!(released.len(), 1);
    let out = &released[0].1;
    assert!(out.requests.is_empty(), "{out:?}");
    assert_eq!(out.stored.len(), 1, "{out:?}");
    assert!(out.stored[0].starts_with(&format!("{request}-UP-")));
    let ledger = p.store().requests().unwrap();
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].watch.updates.len(), 2);
    assert_eq!(ledger[0].watch.sources.len(), 4);
}
