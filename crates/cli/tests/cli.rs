//! The `normwatch` binary as a user runs it: output formats, exit codes, error messages.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_normwatch");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn trace(rel: &str) -> PathBuf {
    root().join("../shared/data/captures").join(rel)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn help_explains_the_subcommands() {
    let out = run(&["--help"]);
    assert!(out.status.success());
    let help = text(&out.stdout);
    for word in ["flows", "check-config"] {
        assert!(help.contains(word), "{help}");
    }
    let out = run(&["flows", "--help"]);
    let help = text(&out.stdout);
    for word in ["--pcap", "--interface", "--format", "--checksums", "zeek"] {
        assert!(help.contains(word), "{help}");
    }
}

#[test]
fn zeek_format_has_the_conn_log_header() {
    let t = trace("zeek/testing/btest/Traces/http/get.pcap");
    let out = run(&["flows", "--pcap", t.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let mut lines = s.lines();
    assert_eq!(
        lines.next().unwrap(),
        "#fields\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tconn_state\torig_pkts\torig_ip_bytes\tresp_pkts\tresp_ip_bytes"
    );
    let row: Vec<&str> = lines.next().unwrap().split('\t').collect();
    assert_eq!(row.len(), 10);
    assert_eq!(row[3], "80");
    assert_eq!(row[4], "tcp");
    assert_eq!(row[5], "SF");
}

#[test]
fn json_format_carries_assets_from_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("assets.toml");
    // Protect the web server of the trace: every flow to it must carry the asset id.
    std::fs::write(
        &cfg,
        "[[asset]]\nid = \"web\"\nname = \"Web\"\noperator = \"Op\"\nsector = \"government\"\nservice = \"citizen portal\"\ncidrs = [\"208.80.152.0/22\"]\nroles = [\"public-service\"]\n",
    )
    .unwrap();
    let t = trace("zeek/testing/btest/Traces/wikipedia.pcap");
    let out = run(&[
        "flows",
        "--config",
        cfg.to_str().unwrap(),
        "--format",
        "json",
        "--pcap",
        t.to_str().unwrap(),
        "--checksums",
        "ignore",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut matched = 0;
    for line in text(&out.stdout).lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let resp = v["resp_addr"].as_str().unwrap().to_string();
        if resp.starts_with("208.80.15") {
            assert_eq!(v["asset"]["id"], "web", "{line}");
            assert_eq!(v["asset"]["side"], "resp");
            matched += 1;
        }
        assert!(
            v["first_ns"].as_u64().unwrap() > 1_000_000_000_000_000_000,
            "event time from packets"
        );
    }
    assert!(matched > 0);
}

#[test]
fn truncated_capture_prints_flows_then_fails_naming_offset() {
    let full = std::fs::read(trace("zeek/testing/btest/Traces/wikipedia.pcap")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.pcap");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let out = run(&["flows", "--pcap", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cut.pcap") && err.contains("byte offset"),
        "{err}"
    );
    assert!(
        text(&out.stdout).lines().count() > 1,
        "flows read before the cut are printed"
    );
}

#[test]
fn bad_config_exits_2_listing_every_problem() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[sensor]\nmax_flows = 0\nchecksums = \"sometimes\"\n").unwrap();
    let out = run(&["check-config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("bad.toml: sensor.max_flows"), "{err}");
    assert!(err.contains("bad.toml: sensor.checksums"), "{err}");
    let out = run(&[
        "flows",
        "--config",
        cfg.to_str().unwrap(),
        "--pcap",
        "x.pcap",
    ]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn shipped_config_checks_ok() {
    let out = run(&[
        "check-config",
        root().join("config/normwatch.toml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok"));
    let out = run(&[
        "check-config",
        root().join("config/norms.toml").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("31 norms"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn usage_errors_exit_2() {
    assert_eq!(run(&["flows"]).status.code(), Some(2));
    assert_eq!(run(&["no-such-command"]).status.code(), Some(2));
    let out = run(&["flows", "--interface", "nw-no-such-if0", "--duration", "1s"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

#[test]
fn missing_capture_is_a_runtime_error_naming_it() {
    let out = run(&["flows", "--pcap", "/nonexistent/x.pcap"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("/nonexistent/x.pcap"));
}

#[test]
fn check_config_has_librdkafka_judge_the_passthrough_options() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kafka.toml");
    let base = "[bus]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n[kafka.options]\n";
    std::fs::write(&cfg, format!("{base}\"linger.ms\" = 20\n")).unwrap();
    let out = run(&["check-config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for bad in ["\"no.such.property\" = 1", "\"linger.ms\" = \"soon\""] {
        std::fs::write(&cfg, format!("{base}{bad}\n")).unwrap();
        let out = run(&["check-config", cfg.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let err = text(&out.stderr);
        assert!(err.contains("kafka.toml: kafka.options"), "{bad}: {err}");
    }
}

/// Regression (issue 19): settings librdkafka refuses when a stage starts (a TLS file it
/// cannot load, a value check-config cannot judge) are bad configuration: exit 2, once, naming
/// the file.
#[test]
fn settings_librdkafka_refuses_at_start_exit_2_naming_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tls.toml");
    let ca = dir.path().join("no-such-ca.pem");
    std::fs::write(
        &cfg,
        format!(
            "[bus]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9\"\n[telemetry]\nmetrics_listen = \"off\"\n[kafka.tls]\nca = \"{}\"\n",
            ca.display()
        ),
    )
    .unwrap();
    let c = cfg.to_str().unwrap();
    for args in [
        &["detect", "--exit-when-idle", "1s", "--config", c][..],
        &["package", "--exit-when-idle", "1s", "--config", c][..],
    ] {
        let out = run(args);
        let err = text(&out.stderr);
        if args[0] == "package" && err.contains("[evidence]") {
            // Refused earlier, for its missing [evidence]: also bad configuration.
            assert_eq!(out.status.code(), Some(2), "{err}");
            continue;
        }
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let name = ca.display().to_string();
        assert_eq!(err.matches(&name).count(), 1, "{err}");
        assert!(err.contains("kafka.tls.ca"), "{err}");
    }
}

#[test]
fn sensor_and_detect_need_the_kafka_bus() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("memory.toml");
    std::fs::write(&cfg, "[bus]\nkind = \"memory\"\n").unwrap();
    let c = cfg.to_str().unwrap();
    let pcap = trace("packet-captures/amp.dns.RRSIG.fragmented.pcap");
    let out = run(&["sensor", "--config", c, "--pcap", pcap.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("kind = \"kafka\"") && err.contains("normwatch run"),
        "{err}"
    );
    let out = run(&["detect", "--config", c]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn run_carries_every_flow_over_the_in_process_bus() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = trace("packet-captures/amp.dns.RRSIG.fragmented.pcap");
    let direct = dir.path().join("direct.jsonl");
    let bus = dir.path().join("bus.jsonl");
    let out = run(&[
        "flows",
        "--format",
        "json",
        "--output",
        direct.to_str().unwrap(),
        "--pcap",
        pcap.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = run(&[
        "run",
        "--stats",
        "--flows-out",
        bus.to_str().unwrap(),
        "--pcap",
        pcap.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let records = |p: &std::path::Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    // Each connection's final record, without what earlier reports of it said.
    let finals = |v: &[serde_json::Value]| {
        let mut out: Vec<String> = v
            .iter()
            .filter(|r| r["end_reason"] != "interim")
            .map(|r| {
                let mut r = r.clone();
                r.as_object_mut().unwrap().remove("prior");
                r.to_string()
            })
            .collect();
        out.sort();
        out
    };
    let (want, got) = (records(&direct), records(&bus));
    assert!(want.len() > 10);
    assert!(
        got.iter().any(|r| r["end_reason"] == "interim"),
        "connections were reported while they went on"
    );
    assert_eq!(finals(&got), finals(&want));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "normwatch_detect_flow_records_total {}",
            got.len()
        )),
        "{err}"
    );
}

#[test]
fn run_writes_alert_events_with_their_norms() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("flood.toml");
    std::fs::write(
        &cfg,
        "[[asset]]\nid = \"web\"\nname = \"Web portal\"\noperator = \"Example\"\nsector = \"health\"\nservice = \"patient portal\"\ncidrs = [\"10.10.10.0/24\"]\nroles = [\"public-service\"]\n[asset.thresholds]\npps = 20000\nnew_flows_per_s = 200\n",
    )
    .unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let pcap = trace("packet-captures/pkt.TCP.synflood.spoofed.pcap");
    let out = run(&[
        "run",
        "--config",
        cfg.to_str().unwrap(),
        "--alerts-out",
        alerts.to_str().unwrap(),
        "--pcap",
        pcap.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let events: Vec<serde_json::Value> = std::fs::read_to_string(&alerts)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 2, "{events:#?}");
    let (first, last) = (&events[0], events.last().unwrap());
    assert_eq!(first["state"], "open");
    assert_eq!(first["kind"], "syn_flood");
    assert_eq!(first["asset"], "web");
    assert_eq!(last["state"], "closed");
    assert!(events.iter().all(|e| e["id"] == first["id"]));
    let violated = first["norms"]["violated"].as_array().unwrap();
    assert!(violated.iter().any(|n| n == "ungge2015.13f"), "{first}");
    let basis = first["norms"]["request_basis"].as_array().unwrap();
    assert!(basis.iter().any(|n| n == "ungge2015.13h"), "{first}");
    // Both to standard output is refused.
    let out = run(&[
        "run",
        "--flows-out",
        "-",
        "--alerts-out",
        "-",
        "--pcap",
        pcap.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
}

/// Regression (issue 19): `check-config` passed a configuration whose signing key others
/// could read and whose TLS files did not exist; both failed only at run time.
#[test]
fn check_config_reports_evidence_and_tls_files() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = d.join("signing.key");
    let out = run(&["keygen", "--out", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(
        d.join("recipients.toml"),
        "[[state]]\ncode = \"NL\"\nname = \"NCSC-NL\"\n[[state.channel]]\nkind = \"directory\"\npath = \"outbox\"\n",
    )
    .unwrap();
    let geoip = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/geoip");
    let evidence = format!(
        "[evidence]\nown_state = \"NL\"\noperator = \"Example operator\"\nrecipients = \"recipients.toml\"\nsigning_key = \"signing.key\"\nout_dir = \"evidence\"\n[evidence.geoip]\ncountry = \"{}\"\n",
        geoip.join("GeoLite2-Country-Test.mmdb").display()
    );
    let cfg = d.join("normwatch.toml");
    std::fs::write(&cfg, &evidence).unwrap();
    let out = run(&["check-config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let tls = "[bus]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n[kafka.tls]\nca = \"no-such-ca.pem\"\n";
    std::fs::write(&cfg, format!("{tls}{evidence}")).unwrap();
    let out = run(&["check-config", cfg.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("evidence.signing_key"), "{err}");
    assert!(err.contains("0644"), "{err}");
    assert!(
        err.contains("kafka.tls.ca") && err.contains("no-such-ca.pem"),
        "{err}"
    );

    // A bad [evidence] setting is named with the file, once.
    std::fs::write(
        &cfg,
        format!("{evidence}[evidence.campaign]\nwindow = \"10m\"\nhold = \"1h\"\n"),
    )
    .unwrap();
    let out = run(&["check-config", cfg.to_str().unwrap()]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("evidence.campaign.hold"), "{err}");
    assert_eq!(
        err.matches(&*cfg.display().to_string()).count(),
        1,
        "the file is named once: {err}"
    );
}

/// A reader that goes away early (`normwatch check-config FILE | head -0`) is no failure: the
/// command does its work, exits with its own status and never panics.
#[test]
fn a_closed_standard_output_is_not_a_panic() {
    let cfg = root().join("config/normwatch.toml");
    for args in [
        vec!["check-config", cfg.to_str().unwrap()],
        vec!["simulate", "--list"],
    ] {
        let mut child = Command::new(BIN)
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Close the reading end before the command writes.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = text(&out.stderr);
        assert!(out.status.success(), "{args:?}: {:?} {stderr}", out.status);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}
