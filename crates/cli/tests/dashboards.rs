//! The dashboards and alert rules against a real Prometheus (Debian's `prometheus` package,
//! started here on a loopback port) scraping `normwatch demo`: every PromQL expression in
//! `dashboards/*.json` and in the alert rules parses and returns series; `promtool` accepts
//! the configuration and the rules; each dashboard is well-formed Grafana JSON.

use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BIN: &str = env!("CARGO_BIN_EXE_normwatch");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn dashboards() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(repo().join("dashboards")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            out.push((p, v));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 3, "expected the three dashboards");
    out
}

/// Every `expr` of every panel target.
fn exprs(d: &Value) -> Vec<String> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect()
}

fn rule_exprs() -> Vec<(String, String)> {
    let text =
        std::fs::read_to_string(repo().join("dashboards/prometheus/normwatch-rules.yml")).unwrap();
    // The rules file is YAML; each rule's `expr:` is on one line.
    let mut out = Vec::new();
    let mut name = String::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(n) = l.strip_prefix("- alert:") {
            name = n.trim().to_string();
        } else if let Some(e) = l.strip_prefix("expr:") {
            out.push((name.clone(), e.trim().to_string()));
        }
    }
    assert!(out.len() >= 4, "{out:?}");
    out
}

#[test]
fn dashboards_are_grafana_json_with_a_datasource_variable_and_no_fixed_instance() {
    for (path, d) in dashboards() {
        let name = path.display().to_string();
        assert!(d["schemaVersion"].as_u64().unwrap_or(0) >= 30, "{name}");
        assert!(d["uid"].as_str().is_some_and(|u| !u.is_empty()), "{name}");
        assert!(d["title"].as_str().is_some(), "{name}");
        let vars = d["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
            "{name}: no datasource variable"
        );
        let mut ids = std::collections::BTreeSet::new();
        for p in d["panels"].as_array().unwrap() {
            let id = p["id"].as_u64().unwrap();
            assert!(ids.insert(id), "{name}: panel id {id} twice");
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: panel {id}"
            );
            for t in p["targets"].as_array().unwrap() {
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "{name}: panel {id}"
                );
            }
            let g = &p["gridPos"];
            assert!(g["w"].as_u64().unwrap() <= 24 && g["h"].as_u64().unwrap() > 0);
        }
        for e in exprs(&d) {
            assert!(
                !e.contains("instance=") && !e.contains(":9464") && !e.contains("job="),
                "{name}: hard-coded instance in {e}"
            );
        }
    }
}

#[test]
fn promtool_accepts_the_configuration_and_rules() {
    for (what, file) in [
        ("config", "dashboards/prometheus/prometheus.yml"),
        ("rules", "dashboards/prometheus/normwatch-rules.yml"),
    ] {
        let out = Command::new(promtool())
            .args(["check", what])
            .arg(repo().join(file))
            .output()
            .expect("run promtool");
        assert!(
            out.status.success(),
            "promtool check {what} {file}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn promtool() -> String {
    std::env::var("NORMWATCH_PROMTOOL").unwrap_or_else(|_| "promtool".into())
}

fn prometheus() -> String {
    let p = std::env::var("NORMWATCH_PROMETHEUS").unwrap_or_else(|_| "prometheus".into());
    let found = Command::new(&p)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "prometheus is not installed (Debian: apt-get install prometheus)"
    );
    p
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// GET `path` from 127.0.0.1:`port`; the JSON body.
fn get_json(port: u16, path: &str) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {out}"))
}

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A range query over the demo's run: the series returned, or Prometheus's error.
fn range_query(port: u16, expr: &str, start: f64, end: f64) -> Result<usize, String> {
    let v = get_json(
        port,
        &format!(
            "/api/v1/query_range?query={}&start={start:.3}&end={end:.3}&step=1",
            encode(expr)
        ),
    );
    if v["status"] != "success" {
        return Err(format!("{}: {}", v["errorType"], v["error"]));
    }
    Ok(v["data"]["result"].as_array().map_or(0, Vec::len))
}

/// A rule's expression without its final threshold: the series it watches.
fn watched(expr: &str) -> Vec<String> {
    expr.split(" and ")
        .map(|part| {
            let p = part.trim();
            match p.rfind(['>', '<']) {
                Some(i) if p[i + 1..].trim().parse::<f64>().is_ok() => p[..i].trim().to_string(),
                _ => p.to_string(),
            }
        })
        .collect()
}

#[test]
fn every_dashboard_and_rule_expression_returns_series_from_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let prom_port = free_port();
    let rules = repo().join("dashboards/prometheus/normwatch-rules.yml");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: normwatch\n    static_configs:\n      - targets: [\"127.0.0.1:{metrics_port}\"]\n",
            rules.display()
        ),
    )
    .unwrap();
    let check = Command::new(promtool())
        .args(["check", "config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let prom_log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prom = Kill(
        Command::new(prometheus())
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}"))
            .stdout(Stdio::null())
            .stderr(prom_log)
            .spawn()
            .expect("start prometheus"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", prom_port)).is_err() {
        assert!(Instant::now() < deadline, "prometheus did not start");
        sleep(Duration::from_millis(100));
    }
    let start = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        - 1.0;

    // The demo, paced so that Prometheus scrapes it many times while alerts are open.
    let mut demo = Kill(
        Command::new(BIN)
            .args([
                "demo",
                "--pps",
                "10000",
                "--hold",
                "120s",
                "--metrics-listen",
            ])
            .arg(format!("127.0.0.1:{metrics_port}"))
            .arg("--out")
            .arg(dir.path().join("demo"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = demo.0.stdout.take().unwrap();
    let mut seen = String::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.unwrap();
        seen.push_str(&line);
        seen.push('\n');
        if line.starts_with("serving metrics on") {
            break;
        }
    }
    assert!(
        seen.contains("evidence packages:"),
        "the demo did not finish: {seen}"
    );
    // A few scrapes of the final values.
    sleep(Duration::from_secs(3));
    let end = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();

    let up = range_query(prom_port, "up{job=\"normwatch\"} == 1", start, end).unwrap();
    assert_eq!(up, 1, "prometheus never scraped the demo");
    let asset = "hospital-portal";
    let mut failures = Vec::new();
    for (path, d) in dashboards() {
        for e in exprs(&d) {
            let q = e.replace("$__rate_interval", "1m").replace("$asset", asset);
            match range_query(prom_port, &q, start, end) {
                Ok(0) => failures.push(format!("{}: no series: {q}", path.display())),
                Ok(_) => {}
                Err(err) => failures.push(format!("{}: {err}: {q}", path.display())),
            }
        }
    }
    for (name, e) in rule_exprs() {
        if let Err(err) = range_query(prom_port, &e, start, end) {
            failures.push(format!("rule {name}: {err}"));
        }
        for w in watched(&e) {
            match range_query(prom_port, &w, start, end) {
                Ok(0) => failures.push(format!("rule {name}: no series for {w}")),
                Ok(_) => {}
                Err(err) => failures.push(format!("rule {name}: {err}: {w}")),
            }
        }
    }
    // The attack rule fired while the demo's attacks were open.
    let fired = range_query(
        prom_port,
        "ALERTS{alertname=\"PublicServiceUnderAttack\"}",
        start,
        end,
    )
    .unwrap();
    if fired == 0 {
        failures.push("the PublicServiceUnderAttack rule never fired".into());
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
