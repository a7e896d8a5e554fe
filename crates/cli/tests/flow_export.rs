//! `normwatch run --exports-only`: no packet input, only the NetFlow export that softflowd (a
//! real exporter, on loopback) makes of the spoofed SYN flood; the flood raises its alert.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_normwatch");

#[test]
fn exports_alone_feed_the_detector() {
    assert!(
        Path::new("/usr/sbin/softflowd").exists(),
        "softflowd is not installed: apt-get install softflowd (.ci/run does)"
    );
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = dir.path().join("normwatch.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[exporters]
listen = ["127.0.0.1:{port}"]

[[asset]]
id = "web"
name = "Web portal"
operator = "Example operator"
sector = "health"
service = "patient portal"
cidrs = ["10.10.10.0/24"]
roles = ["public-service"]

# A public web service sees at most tens of new connections a second.
[asset.thresholds]
new_flows_per_s = 200
"#
        ),
    )
    .unwrap();
    let alerts = dir.path().join("alerts.jsonl");
    let normwatch = Command::new(BIN)
        .args([
            "run",
            "--exports-only",
            "--duration",
            "10s",
            "--metrics-listen",
            "off",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--alerts-out")
        .arg(&alerts)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // softflowd cuts `-r` paths longer than 16 characters: a short copy, given relative.
    let short = PathBuf::from(format!("/tmp/e{}.pcap", std::process::id() % 100_000));
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/captures/packet-captures/pkt.TCP.synflood.spoofed.pcap"),
        &short,
    )
    .unwrap();
    let status = Command::new("softflowd")
        .current_dir("/tmp")
        .args(["-d", "-m", "1000000", "-r"])
        .arg(short.file_name().unwrap())
        .args(["-n", &format!("127.0.0.1:{port}"), "-v", "10"])
        .args([
            "-c",
            &format!("/tmp/c{port}"),
            "-p",
            &format!("/tmp/p{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    let _ = std::fs::remove_file(&short);
    assert!(status.success());
    let out = normwatch.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let text = std::fs::read_to_string(&alerts).unwrap();
    let opened: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|a| a["state"] == "open")
        .collect();
    assert_eq!(opened.len(), 1, "{text}\n{err}");
    assert_eq!(opened[0]["kind"], "syn_flood");
    assert_eq!(opened[0]["asset"], "web");

    // Without a listener, --exports-only is a usage error naming what to set.
    std::fs::write(&config, "").unwrap();
    let out = Command::new(BIN)
        .args([
            "run",
            "--exports-only",
            "--duration",
            "1s",
            "--metrics-listen",
            "off",
        ])
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("[exporters] listen"));
}
