//! `normwatch demo`, the README's first command: it needs nothing but the binary, exits 0,
//! raises the scenario's alerts and writes packages that `normwatch verify` accepts; and
//! `normwatch run --evidence-dir` packages a real capture's alert the same way.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_normwatch");

fn shared(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data")
        .join(rel)
}

fn verify(pkg: &Path, key: &Path) {
    let out = Command::new(BIN)
        .arg("verify")
        .arg(pkg)
        .arg("--key")
        .arg(key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}{}",
        pkg.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `addr` is one of the simulator's benign clients (the services' ordinary users).
fn is_client(addr: &str) -> bool {
    let (net, len) = normwatch_simulate::CLIENTS;
    let Ok(std::net::IpAddr::V4(a)) = addr.parse() else {
        return false;
    };
    let mask = u32::MAX << (32 - u32::from(len));
    u32::from(a) & mask == u32::from(std::net::Ipv4Addr::from(net)) & mask
}

/// No flood package names one of the simulator's benign clients as a source: neither among
/// the sources it is about (`evidence/attribution.json`) nor among the alert's sources it
/// carries (`evidence/alert.json`, or a campaign request's `evidence/alerts.json`). A flooded service's patients and customers are not its
/// attackers, whatever a State or a traceback would be asked about them.
fn no_client_named(pkgs: &[PathBuf]) {
    let mut floods = 0;
    for p in pkgs {
        let read = |f: &str| -> Value {
            serde_json::from_str(&std::fs::read_to_string(p.join(f)).unwrap()).unwrap()
        };
        // One alert, or a campaign request's alerts (`evidence/alerts.json`).
        let alerts: Vec<Value> = if p.join("evidence/alert.json").exists() {
            vec![read("evidence/alert.json")]
        } else if p.join("evidence/alerts.json").exists() {
            read("evidence/alerts.json").as_array().unwrap().clone()
        } else {
            // A follow-up: about its request's hosts, checked with the request.
            continue;
        };
        let floods_here: Vec<&Value> = alerts
            .iter()
            .filter(|a| {
                [
                    "syn_flood",
                    "volumetric_flood",
                    "udp_amplification",
                    "carpet_bombing",
                ]
                .contains(&a["kind"].as_str().unwrap())
            })
            .collect();
        if floods_here.is_empty() {
            continue;
        }
        floods += 1;
        let listed = read("evidence/attribution.json")["sources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["addr"].as_str().unwrap().to_string())
            .chain(floods_here.iter().flat_map(|a| {
                a["top_sources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["addr"].as_str().unwrap().to_string())
            }))
            .collect::<Vec<_>>();
        assert!(!listed.is_empty(), "{}", p.display());
        let clients: Vec<&String> = listed.iter().filter(|a| is_client(a)).collect();
        assert!(
            clients.is_empty(),
            "{} names benign clients as attack sources: {clients:?}",
            p.display()
        );
    }
    assert!(floods > 0, "no flood package in {pkgs:?}");
}

#[test]
fn the_demo_raises_the_scenario_alerts_and_writes_verifiable_packages() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("demo");
    // From an empty working directory: the demo needs no file of the repository at run time.
    let out = Command::new(BIN)
        .current_dir(dir.path())
        .args(["demo", "--metrics-listen", "off", "--out"])
        .arg(&work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = std::fs::read_to_string(work.join("alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let opened: Vec<(&str, &str)> = events
        .iter()
        .filter(|a| a["state"] == "open")
        .map(|a| (a["kind"].as_str().unwrap(), a["asset"].as_str().unwrap()))
        .collect();
    for want in [
        ("syn_flood", "hospital-portal"),
        ("udp_amplification", "water-treatment"),
        ("ics_command_abuse", "grid-scada"),
        ("ics_command_abuse", "water-treatment"),
    ] {
        assert!(opened.contains(&want), "{want:?} not in {opened:?}");
    }
    // Every alert that opened also closed, and each names 13(f).
    for a in events.iter().filter(|a| a["state"] == "open") {
        assert!(
            events
                .iter()
                .any(|b| b["id"] == a["id"] && b["state"] == "closed"),
            "{} never closed",
            a["id"]
        );
        assert!(a["norms"]["violated"]
            .as_array()
            .unwrap()
            .contains(&Value::from("ungge2015.13f")));
    }
    let pkgs = common::package_dirs(&work.join("evidence"));
    assert!(pkgs.len() >= 4, "{pkgs:?}");
    for p in &pkgs {
        verify(p, &work.join("signing.key.pub"));
    }
    // The SYN flood's and the amplification's packages name the attack's sources only, not
    // the patients whose connections the portal still served (or failed to) meanwhile.
    no_client_named(&pkgs);
    // The SYN flood came from a botnet in prefixes registered in four States: each gets a
    // package about that alert.
    let mut flood_recipients: Vec<String> = pkgs
        .iter()
        .map(|p| {
            let m: Value =
                serde_json::from_str(&std::fs::read_to_string(p.join("manifest.json")).unwrap())
                    .unwrap();
            (
                m["alert_id"].as_str().unwrap().to_string(),
                m["recipient"].as_str().unwrap().to_string(),
                m["follow_up_of"].is_string(),
            )
        })
        // The requests, not their follow-ups.
        .filter(|(alert, _, follow_up)| alert.contains("/syn_flood/") && !follow_up)
        .map(|(a, r, _)| (a, r))
        .map(|(_, r)| r)
        .collect();
    flood_recipients.sort();
    assert_eq!(flood_recipients, ["DE", "FR", "GB", "US"]);
    // The botnet's registered States each get a package; the summary says where.
    for code in ["DE", "FR", "GB", "US"] {
        assert!(
            stdout.contains(&format!("to {code} (")),
            "no package to {code}: {stdout}"
        );
        assert!(
            std::fs::read_dir(work.join("outbox").join(code))
                .unwrap()
                .count()
                > 0,
            "nothing dropped for {code}"
        );
    }
    assert!(stdout.contains("alerts: "), "{stdout}");

    // A second run raises the very same alert events: the capture is batched by event time,
    // so nothing depends on how fast this machine read it.
    let again = dir.path().join("again");
    let out = Command::new(BIN)
        .args(["demo", "--metrics-listen", "off", "--out"])
        .arg(&again)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(work.join("alerts.jsonl")).unwrap(),
        std::fs::read_to_string(again.join("alerts.jsonl")).unwrap(),
        "two runs of the demo gave different alert events"
    );
}

#[test]
fn run_with_an_evidence_dir_packages_a_real_capture() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = Command::new(BIN)
        .args(["keygen", "--out"])
        .arg(d.join("signing.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(
        d.join("recipients.toml"),
        format!(
            "[[state]]\ncode = \"NL\"\nname = \"NCSC-NL\"\n[[state.channel]]\nkind = \"directory\"\npath = \"{}\"\n",
            d.join("outbox").display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("normwatch.toml"),
        format!(
            r#"
[[asset]]
id = "web"
name = "Web portal"
operator = "Example operator"
sector = "health"
service = "patient portal"
cidrs = ["10.10.10.0/24"]
roles = ["public-service"]

[asset.thresholds]
new_flows_per_s = 200

[evidence]
own_state = "NL"
operator = "Example operator"
recipients = "recipients.toml"
signing_key = "signing.key"
out_dir = "unused"

[evidence.geoip]
country = "{}"
asn = "{}"
"#,
            shared("geoip/GeoLite2-Country-Test.mmdb").display(),
            shared("geoip/GeoLite2-ASN-Test.mmdb").display()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["run", "--metrics-listen", "off", "--config"])
        .arg(d.join("normwatch.toml"))
        .arg("--evidence-dir")
        .arg(d.join("evidence"))
        .arg("--pcap")
        .arg(shared(
            "captures/packet-captures/pkt.TCP.synflood.spoofed.pcap",
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let pkgs = common::package_dirs(&d.join("evidence"));
    assert!(!pkgs.is_empty(), "{err}");
    for p in &pkgs {
        verify(p, &d.join("signing.key.pub"));
    }
    assert!(
        !d.join("unused").exists(),
        "--evidence-dir overrides evidence.out_dir"
    );

    // Without [evidence], --evidence-dir is a usage error (exit 2).
    std::fs::write(d.join("plain.toml"), "").unwrap();
    let out = Command::new(BIN)
        .args(["run", "--metrics-listen", "off", "--config"])
        .arg(d.join("plain.toml"))
        .arg("--evidence-dir")
        .arg(d.join("x"))
        .arg("--pcap")
        .arg(shared(
            "captures/packet-captures/pkt.TCP.synflood.spoofed.pcap",
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs an [evidence] section"));
}

/// The campaign scenario: one actor's hosts in DE and the US flood three operators' services,
/// then go on at a low rate; the DE hosts stop after the requests, the US hosts do not. The
/// three alerts are one campaign: one request per State naming all three services. Every
/// request is followed up in the traffic's time: DE's say the activity stopped (before the
/// deadline), the US's that it continues from all ten hosts; every follow-up verifies, and
/// `normwatch requests` reports the outcome per State, as a table and as JSON.
#[test]
fn the_campaign_demo_follows_up_requests_stopped_in_one_state_and_continuing_in_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("campaign");
    let out = Command::new(BIN)
        .args([
            "demo",
            "--scenario",
            "campaign",
            "--metrics-listen",
            "off",
            "--out",
        ])
        .arg(&work)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = std::fs::read_to_string(work.join("alerts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut flooded: Vec<&str> = events
        .iter()
        .filter(|a| a["state"] == "open" && a["kind"] == "syn_flood")
        .map(|a| a["asset"].as_str().unwrap())
        .collect();
    flooded.sort_unstable();
    assert_eq!(
        flooded,
        ["hospital-portal", "national-csirt", "water-treatment"]
    );

    let key = work.join("signing.key.pub");
    let pkgs = common::package_dirs(&work.join("evidence"));
    // The three services' own clients kept using them throughout: no package names one.
    no_client_named(&pkgs);
    let follow_ups: Vec<&PathBuf> = pkgs
        .iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().contains("-FU-"))
        .collect();
    // One campaign: its three alerts closed within the campaign hold, so one request each to
    // DE and the US, each naming all three services and carrying the three alerts' evidence;
    // no update, no second request.
    let requests: Vec<&PathBuf> = pkgs
        .iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy().into_owned();
            !n.contains("-FU-") && !n.contains("-UP-")
        })
        .collect();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert!(!pkgs
        .iter()
        .any(|p| p.file_name().unwrap().to_string_lossy().contains("-UP-")));
    for state in ["DE", "US"] {
        let dir = requests
            .iter()
            .find(|p| p.to_string_lossy().contains(&format!("-{state}-")))
            .unwrap_or_else(|| panic!("no request to {state}: {requests:?}"));
        let letter = std::fs::read_to_string(dir.join("request.md")).unwrap();
        for service in [
            "emergency admissions",
            "drinking water",
            "national incident response",
        ] {
            assert!(letter.contains(service), "{state}: {service}: {letter}");
        }
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
        assert_eq!(
            manifest["alert_ids"].as_array().unwrap().len(),
            3,
            "{manifest}"
        );
        let bundle: Value =
            serde_json::from_slice(&std::fs::read(dir.join("stix/bundle.json")).unwrap()).unwrap();
        let incidents = bundle["objects"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|o| o["type"] == "incident")
            .count();
        assert_eq!(incidents, 3);
    }
    assert!(
        stdout
            .lines()
            .any(|l| l.contains("campaign CP-") && l.contains("naming 3 services")),
        "{stdout}"
    );
    // DE's request is followed up twice (stopped, then the deadline), the US's once (the
    // deadline).
    assert_eq!(follow_ups.len(), 3, "{follow_ups:?}");
    for p in &pkgs {
        verify(p, &key);
    }
    for p in &follow_ups {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let letter = std::fs::read_to_string(p.join("follow-up.md")).unwrap();
        if name.contains("-DE-") {
            assert!(
                letter.contains("The activity from the 12 listed hosts stopped at")
                    && letter.contains("after the request, before the deadline"),
                "{name}: {letter}"
            );
        } else {
            assert!(
                name.contains("-US-") && name.ends_with("-FU-deadline"),
                "{name}"
            );
            assert!(
                letter.contains("The activity continues from 10 of the 10 listed hosts"),
                "{name}: {letter}"
            );
        }
        // Delivered through the same outbox, to the State's drop.
        let state = if name.contains("-DE-") { "DE" } else { "US" };
        assert!(work
            .join("outbox")
            .join(state)
            .join(format!("{name}.tar"))
            .is_file());
    }
    assert!(stdout.contains("requests followed up"), "{stdout}");

    let json = Command::new(BIN)
        .args(["requests", "--json", "--store"])
        .arg(work.join("evidence"))
        .output()
        .unwrap();
    assert!(json.status.success());
    let v: Value = serde_json::from_slice(&json.stdout).unwrap();
    let states: Vec<(String, u64, u64, u64, u64)> = v["states"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["state"].as_str().unwrap().to_string(),
                s["requests"].as_u64().unwrap(),
                s["followed_up"].as_u64().unwrap(),
                s["stopped_before_deadline"].as_u64().unwrap(),
                s["continuing"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [("DE".into(), 1, 1, 1, 0), ("US".into(), 1, 1, 0, 1)]
    );
    for r in v["requests"].as_array().unwrap() {
        let want = if r["state"] == "DE" {
            "stopped"
        } else {
            "continues"
        };
        assert_eq!(r["status"], want, "{r}");
        // The DE hosts stopped 75 s into the capture, after the requests went out.
        if r["state"] == "DE" {
            assert!(r["seconds_to_stop"].as_u64().unwrap() > 0, "{r}");
            assert_eq!(r["hosts_stopped"], 12);
        }
        assert_eq!(r["updates"].as_array().unwrap().len(), 0, "{r}");
        assert_eq!(r["services"].as_array().unwrap().len(), 3, "{r}");
        assert!(r["campaign"].as_str().unwrap().starts_with("CP-"), "{r}");
    }
    let table = Command::new(BIN)
        .args(["requests", "--store"])
        .arg(work.join("evidence"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(table.status.success());
    assert!(
        text.lines()
            .any(|l| l.starts_with("DE ") && l.contains(" 1 ")),
        "{text}"
    );
    assert!(text.contains("stopped+deadline"), "{text}");

    // No store there: a usage error.
    let none = Command::new(BIN)
        .args(["requests", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(none.status.code(), Some(2));
}
