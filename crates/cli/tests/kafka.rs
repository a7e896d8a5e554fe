//! `normwatch sensor` and `normwatch detect` through a real Kafka-protocol broker (tansu,
//! started here on a loopback port), compared with the in-process path of `normwatch run`.
//!
//! Needs `tansu` on PATH (`cargo install tansu --locked --features dynostore,libsql`; `.ci/run`
//! installs it) or its path in `NORMWATCH_TANSU`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::sleep;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_normwatch");

/// One broker test at a time: they time things (kills, restarts) on a small shared machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn capture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/captures")
        .join(rel)
}

/// The captures every test streams: a spoofed SYN flood against a protected asset, a DNS
/// amplification (many reflectors) and a scan (many responders), so batches carry many keys.
fn captures() -> Vec<PathBuf> {
    [
        "packet-captures/pkt.TCP.synflood.spoofed.pcap",
        "packet-captures/amp.dns.RRSIG.fragmented.pcap",
        "bro-simple-scan/testing/pcaps/445_scan.pcap",
    ]
    .iter()
    .map(|c| capture(c))
    .collect()
}

fn tansu() -> String {
    if let Ok(p) = std::env::var("NORMWATCH_TANSU") {
        return p;
    }
    let found = Command::new("tansu")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        found,
        "tansu is not installed: cargo install tansu --locked --features dynostore,libsql"
    );
    "tansu".into()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A tansu broker on a loopback port.
struct Broker {
    port: u16,
    storage: String,
    child: Option<Child>,
    dir: PathBuf,
    log: PathBuf,
}

impl Broker {
    /// A broker keeping data in memory.
    fn memory(dir: &Path) -> Broker {
        Self::with_storage(dir, "memory://tansu/".into())
    }

    /// A broker keeping data in an SQLite file, so it survives a restart. (tansu reads the
    /// path relative to its working directory, which is `dir`.)
    fn sqlite(dir: &Path) -> Broker {
        Self::with_storage(dir, "sqlite://broker.db".into())
    }

    /// Configured, not started.
    fn with_storage(dir: &Path, storage: String) -> Broker {
        Broker {
            port: free_port(),
            storage,
            child: None,
            dir: dir.to_path_buf(),
            log: dir.join("broker.log"),
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn start(&mut self) {
        assert!(self.child.is_none());
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(tansu())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", &self.storage])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start tansu");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(self.addr()).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not start listening: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A test's working directory and configuration.
struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
}

struct ConfigOpts<'a> {
    brokers: &'a str,
    partitions: u32,
    spool_bytes: &'a str,
    group: &'a str,
}

impl Default for ConfigOpts<'_> {
    fn default() -> Self {
        ConfigOpts {
            brokers: "127.0.0.1:9",
            partitions: 4,
            spool_bytes: "64MiB",
            group: "normwatch-detect",
        }
    }
}

fn setup(opts: ConfigOpts<'_>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("normwatch.toml");
    write_config(&config, dir.path(), &opts);
    Setup { dir, config }
}

fn write_config(path: &Path, dir: &Path, o: &ConfigOpts<'_>) {
    let text = format!(
        r#"
[sensor]
id = "test-sensor"

# Short timeouts: flows end, and batches leave, while the capture is still being read.
[sensor.timeouts]
tcp_idle = "2s"
udp_idle = "2s"
icmp_idle = "2s"
other_idle = "2s"
tcp_attempt = "2s"
tcp_linger = "1s"

[bus]
kind = "kafka"
brokers = "{brokers}"
batch_records = 256
batch_linger = "50ms"

[bus.topics.flows]
partitions = {partitions}

[kafka]
group_id = "{group}"
delivery_timeout = "20s"

[kafka.options]
"reconnect.backoff.max.ms" = 500
"topic.metadata.refresh.interval.ms" = 1000
# A killed group member is noticed in seconds, not the default 45 s.
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000

[spool]
path = "{spool}"
max_bytes = "{spool_bytes}"

[[asset]]
id = "flood-victim"
name = "Flood victim"
operator = "Example operator"
sector = "energy"
service = "test service"
cidrs = ["10.10.10.0/24"]
roles = ["public-service"]

# A public web service sees at most tens of new connections a second.
[asset.thresholds]
new_flows_per_s = 200
"#,
        brokers = o.brokers,
        partitions = o.partitions,
        group = o.group,
        spool = dir.join("spool").display(),
        spool_bytes = o.spool_bytes,
    );
    std::fs::write(path, text).unwrap();
}

fn cmd(args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).env("RUST_LOG", "info");
    c
}

fn output(c: &mut Command) -> Output {
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn path_args(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|p| p.display().to_string()).collect()
}

/// The flow records of the in-process path, as JSON lines.
fn expected(s: &Setup) -> Vec<String> {
    let out_path = s.dir.path().join("expected.jsonl");
    let mut c = cmd(&["run", "--config"]);
    c.arg(&s.config)
        .arg("--flows-out")
        .arg(&out_path)
        .arg("--pcap");
    c.args(path_args(&captures()));
    let out = output(&mut c);
    assert!(out.status.success(), "run failed: {}", text(&out.stderr));
    let lines = lines(&out_path);
    assert!(lines.len() > 1000, "only {} flows", lines.len());
    lines
}

fn lines(path: &Path) -> Vec<String> {
    let mut s = String::new();
    if let Ok(mut f) = std::fs::File::open(path) {
        f.read_to_string(&mut s).unwrap();
    }
    s.lines().map(str::to_string).collect()
}

/// Counts of each distinct line.
fn multiset(lines: &[String]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l.as_str()).or_default() += 1;
    }
    m
}

fn assert_same_multiset(got: &[String], want: &[String], what: &str) {
    let (g, w) = (multiset(got), multiset(want));
    if g != w {
        let missing = w.iter().filter(|(k, n)| g.get(*k) < Some(n)).count();
        let extra = g.iter().filter(|(k, n)| w.get(*k) < Some(n)).count();
        panic!(
            "{what}: {} records received, {} expected; {missing} distinct records missing or short, {extra} unexpected or repeated",
            got.len(),
            want.len()
        );
    }
}

/// Value of a metric (summed over its label sets) in Prometheus text.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn metric_with(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A running `normwatch detect`, its stderr collected on a thread.
struct Detector {
    child: Child,
    out: PathBuf,
    stderr: Arc<Mutex<String>>,
}

impl Detector {
    fn start(s: &Setup, name: &str, idle: &str) -> Detector {
        let out = s.dir.path().join(format!("{name}.jsonl"));
        let mut c = cmd(&["detect", "--stats", "--exit-when-idle", idle, "--config"]);
        c.arg(&s.config).arg("--flows-out").arg(&out);
        let mut child = c
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Detector { child, out, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits until the group gave this member at least one partition.
    fn wait_assigned(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !self.stderr().contains("partitions assigned") {
            assert!(
                Instant::now() < deadline,
                "no partitions assigned: {}",
                self.stderr()
            );
            sleep(Duration::from_millis(100));
        }
    }

    fn wait(mut self) -> (Vec<String>, String) {
        let status = self.child.wait().unwrap();
        // Let the reader thread take the last lines.
        sleep(Duration::from_millis(200));
        let err = self.stderr();
        assert!(status.success(), "detect failed: {err}");
        (lines(&self.out), err)
    }

    /// Asks the detector to finish (SIGTERM): it commits, leaves the group and prints its
    /// metrics.
    fn stop(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    fn kill(mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        lines(&self.out)
    }
}

fn sensor(s: &Setup, extra: &[&str]) -> Command {
    let mut c = cmd(&["sensor", "--stats", "--config"]);
    c.arg(&s.config).args(extra).arg("--pcap");
    c.args(path_args(&captures()));
    c
}

#[test]
fn flows_through_kafka_match_the_in_process_path() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::memory(dir.path());
    broker.start();
    let s = setup(ConfigOpts {
        brokers: &broker.addr(),
        ..ConfigOpts::default()
    });
    let want = expected(&s);
    let out = output(&mut sensor(&s, &[]));
    let err = text(&out.stderr);
    assert!(out.status.success(), "sensor failed: {err}");
    assert_eq!(
        metric(&err, "normwatch_sensor_published_records_total") as usize,
        want.len()
    );
    assert_eq!(
        metric(&err, "normwatch_transport_spooled_messages_total"),
        0.0
    );
    let (got, err) = Detector::start(&s, "detect", "5s").wait();
    assert_same_multiset(&got, &want, "kafka path");
    assert_eq!(
        metric(&err, "normwatch_transport_duplicate_batches_total"),
        0.0
    );
    assert_eq!(
        metric(&err, "normwatch_transport_rejected_batches_total"),
        0.0
    );
    assert!(
        err.contains("normwatch_transport_consumer_lag_messages{topic=\"flows\"} 0"),
        "{err}"
    );

    // Offsets were committed: a second member of the group gets nothing again.
    let (again, _) = Detector::start(&s, "again", "4s").wait();
    assert!(again.is_empty(), "{} records consumed twice", again.len());
}

#[test]
fn two_detectors_in_one_group_share_the_partitions() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::memory(dir.path());
    broker.start();
    let s = setup(ConfigOpts {
        brokers: &broker.addr(),
        partitions: 6,
        ..ConfigOpts::default()
    });
    let want = expected(&s);
    // The topic must exist before the group forms, or the members see nothing to share.
    let out = output(
        cmd(&["sensor", "--config"])
            .arg(&s.config)
            .args(["--pcap"])
            .arg(capture("bro-simple-scan/testing/pcaps/port_scan.pcap")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let warmup = {
        let (got, _) = Detector::start(&s, "warmup", "4s").wait();
        got.len()
    };
    assert!(warmup > 0);
    // Long idle limits only as a backstop: the test stops both members itself once every
    // record has arrived, so a slow machine cannot end a member before its share comes.
    let a = Detector::start(&s, "a", "120s");
    let b = Detector::start(&s, "b", "120s");
    a.wait_assigned();
    b.wait_assigned();
    // Let the group settle on its final assignment.
    sleep(Duration::from_secs(3));
    let out = output(&mut sensor(&s, &[]));
    assert!(out.status.success(), "sensor failed: {}", text(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(90);
    while lines(&a.out).len() + lines(&b.out).len() < want.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} records arrived: a: {}\nb: {}",
            lines(&a.out).len() + lines(&b.out).len(),
            want.len(),
            a.stderr(),
            b.stderr()
        );
        sleep(Duration::from_millis(200));
    }
    // A batch delivered twice would arrive about now.
    sleep(Duration::from_secs(2));
    a.stop();
    b.stop();
    let (got_a, err_a) = a.wait();
    let (got_b, err_b) = b.wait();
    assert!(!got_a.is_empty(), "detector a got nothing: {err_a}");
    assert!(!got_b.is_empty(), "detector b got nothing: {err_b}");
    let batches = metric(&err_a, "normwatch_transport_consumed_messages_total")
        + metric(&err_b, "normwatch_transport_consumed_messages_total");
    let published = metric(
        &text(&out.stderr),
        "normwatch_sensor_published_batches_total",
    );
    // A member rebuilds its state from the start of the partitions each assignment gives it,
    // so batches before the committed offsets (the warm-up's, or the other member's) may be
    // read again; only new ones are handed on, each exactly once (the multiset below).
    assert!(
        batches >= published,
        "{batches} consumed, {published} published"
    );
    let mut all = got_a;
    all.extend(got_b);
    assert_same_multiset(&all, &want, "two members");
}

#[test]
fn broker_killed_mid_stream_sensor_spools_and_replays() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::sqlite(dir.path());
    broker.start();
    let s = setup(ConfigOpts {
        brokers: &broker.addr(),
        ..ConfigOpts::default()
    });
    let want = expected(&s);
    let detector = Detector::start(&s, "detect", "15s");
    // About 6 s of paced reading; the broker is away for 3 s in the middle.
    let mut sensor = sensor(&s, &["--pps", "7000"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    sleep(Duration::from_secs(2));
    broker.kill();
    sleep(Duration::from_secs(3));
    broker.start();
    let mut err = String::new();
    sensor
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = sensor.wait().unwrap();
    assert!(status.success(), "sensor failed: {err}");
    assert!(err.contains("no broker reachable"), "{err}");
    assert!(
        metric(&err, "normwatch_transport_spooled_messages_total") > 0.0,
        "{err}"
    );
    assert_eq!(
        metric(&err, "normwatch_transport_replayed_messages_total"),
        metric(&err, "normwatch_transport_spooled_messages_total"),
        "every spooled batch was replayed"
    );
    assert_eq!(metric(&err, "normwatch_transport_spool_messages"), 0.0);
    let (got, _) = detector.wait();
    assert_same_multiset(&got, &want, "across a broker restart");
}

#[test]
fn detector_killed_mid_stream_resumes_from_committed_offsets() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::memory(dir.path());
    broker.start();
    let s = setup(ConfigOpts {
        brokers: &broker.addr(),
        ..ConfigOpts::default()
    });
    let want = expected(&s);
    // The topic exists before the group forms.
    let out = output(
        cmd(&["sensor", "--config"])
            .arg(&s.config)
            .args(["--pcap"])
            .arg(capture("bro-simple-scan/testing/pcaps/port_scan.pcap")),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!Detector::start(&s, "warmup", "4s").wait().0.is_empty());
    let first = Detector::start(&s, "first", "30s");
    first.wait_assigned();
    let mut sensor = sensor(&s, &["--pps", "7000"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once it has handed on a third of the records and committed (every second),
    // well before the sensor is done.
    let deadline = Instant::now() + Duration::from_secs(30);
    while lines(&first.out).len() < want.len() / 3 {
        assert!(
            Instant::now() < deadline,
            "the first detector consumed too little"
        );
        sleep(Duration::from_millis(100));
    }
    sleep(Duration::from_millis(1500));
    let before = first.kill();
    assert!(before.len() < want.len(), "killed too late");
    let second = Detector::start(&s, "second", "20s");
    assert!(sensor.wait().unwrap().success());
    let (after, _) = second.wait();
    assert!(
        after.len() < want.len(),
        "the second detector started from the beginning: {} records before the kill, {} after, {} in all",
        before.len(),
        after.len(),
        want.len()
    );
    // Nothing lost: every record reached one of them. Records of batches processed but not
    // yet committed when the first was killed may reach both (at-least-once).
    let mut union = multiset(&before);
    for (k, n) in multiset(&after) {
        let e = union.entry(k).or_default();
        *e = (*e).max(n);
    }
    let want_set = multiset(&want);
    let missing: Vec<_> = want_set
        .iter()
        .filter(|(k, n)| union.get(*k) < Some(n))
        .collect();
    assert!(missing.is_empty(), "{} records lost", missing.len());
    let both = (before.len() + after.len()).saturating_sub(want.len());
    assert!(
        both < want.len() / 2,
        "{both} records processed twice: commits are not being made"
    );
}

#[test]
fn broker_down_at_start_then_up_delivers_everything() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::memory(dir.path());
    let s = setup(ConfigOpts {
        brokers: &broker.addr(),
        ..ConfigOpts::default()
    });
    let want = expected(&s);
    let mut sensor = sensor(&s, &["--drain-timeout", "90s"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Past the sensor's wait for the broker at start (5 s).
    sleep(Duration::from_secs(8));
    broker.start();
    let mut err = String::new();
    sensor
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(sensor.wait().unwrap().success(), "sensor failed: {err}");
    assert!(err.contains("no broker reachable"), "{err}");
    assert!(metric(&err, "normwatch_transport_spooled_messages_total") > 0.0);
    let (got, _) = Detector::start(&s, "detect", "5s").wait();
    assert_same_multiset(&got, &want, "spooled from the start");
}

#[test]
fn full_spool_drops_the_oldest_and_counts_them() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::memory(dir.path());
    let s = setup(ConfigOpts {
        brokers: &broker.addr(),
        spool_bytes: "256KiB",
        ..ConfigOpts::default()
    });
    let want = expected(&s);
    let out = output(&mut sensor(&s, &["--drain-timeout", "2s"]));
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("wait in the spool"), "{err}");
    assert!(err.contains("spool full"), "{err}");
    let dropped = metric(&err, "normwatch_transport_spool_dropped_messages_total");
    assert!(dropped > 0.0, "{err}");
    let left = metric(&err, "normwatch_transport_spool_messages");
    assert!(left > 0.0);

    // The next run sends what survived, newest batches first kept.
    broker.start();
    let out = output(
        cmd(&["sensor", "--stats", "--config"])
            .arg(&s.config)
            .arg("--pcap")
            .arg(capture("bro-simple-scan/testing/pcaps/port_scan.pcap")),
    );
    let err2 = text(&out.stderr);
    assert!(out.status.success(), "{err2}");
    // Replayed: what the first run left, and this run's batches queued behind it.
    assert_eq!(
        metric(&err2, "normwatch_transport_replayed_messages_total"),
        left + metric(&err2, "normwatch_transport_spooled_messages_total"),
        "{err2}"
    );
    let (got, _) = Detector::start(&s, "detect", "5s").wait();
    let got_set = multiset(&got);
    let kept = multiset(&want)
        .keys()
        .filter(|k| got_set.contains_key(*k))
        .count();
    assert!(
        kept > 0 && kept < want.len(),
        "kept {kept} of {}",
        want.len()
    );
}

/// Every message on `topic` (key, payload), read by a consumer of its own group until none
/// arrived for `idle`.
fn consume_raw(brokers: &str, topic: &str, idle: Duration) -> Vec<(Vec<u8>, Vec<u8>)> {
    use rdkafka::config::ClientConfig;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "test-reader")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    c.subscribe(&[topic]).unwrap();
    let mut got = Vec::new();
    let mut last = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while last.elapsed() < idle && Instant::now() < deadline {
        match c.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                got.push((
                    m.key().unwrap_or_default().to_vec(),
                    m.payload().unwrap_or_default().to_vec(),
                ));
                last = Instant::now();
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    got
}

#[test]
fn detect_publishes_alert_events_to_the_alerts_topic() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::memory(dir.path());
    broker.start();
    let s = setup(ConfigOpts {
        brokers: &broker.addr(),
        ..ConfigOpts::default()
    });
    // The in-process path's alerts over the same captures.
    let run_alerts = s.dir.path().join("run-alerts.jsonl");
    let mut c = cmd(&["run", "--config"]);
    c.arg(&s.config)
        .arg("--alerts-out")
        .arg(&run_alerts)
        .arg("--pcap")
        .args(path_args(&captures()));
    let out = output(&mut c);
    assert!(out.status.success(), "run failed: {}", text(&out.stderr));
    let opened = |lines: &[String]| -> Vec<(String, String, String)> {
        let mut v: Vec<_> = lines
            .iter()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|a| a["state"] == "open")
            .map(|a| {
                (
                    a["id"].as_str().unwrap().to_string(),
                    a["kind"].as_str().unwrap().to_string(),
                    a["asset"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let want = opened(&lines(&run_alerts));
    assert!(
        want.iter()
            .any(|(_, kind, asset)| kind == "syn_flood" && asset == "flood-victim"),
        "{want:?}"
    );

    let out = output(&mut sensor(&s, &[]));
    assert!(out.status.success(), "sensor failed: {}", text(&out.stderr));
    let alerts_out = s.dir.path().join("detect-alerts.jsonl");
    let mut c = cmd(&["detect", "--stats", "--exit-when-idle", "5s", "--config"]);
    c.arg(&s.config).arg("--alerts-out").arg(&alerts_out);
    let out = output(&mut c);
    let err = text(&out.stderr);
    assert!(out.status.success(), "detect failed: {err}");
    assert!(err.contains("alert opened"), "{err}");
    let events = lines(&alerts_out);
    assert_eq!(opened(&events), want, "the same alerts open through Kafka");
    // Every event is on the alerts topic, keyed by its alert id, and the last is closed.
    let topic = consume_raw(&broker.addr(), "normwatch.alerts", Duration::from_secs(5));
    let on_topic: Vec<String> = topic
        .iter()
        .map(|(k, p)| {
            let a: serde_json::Value = serde_json::from_slice(p).unwrap();
            assert_eq!(a["id"].as_str().unwrap().as_bytes(), k.as_slice());
            serde_json::to_string(&a).unwrap()
        })
        .collect();
    let normal = |l: &String| {
        serde_json::to_string(&serde_json::from_str::<serde_json::Value>(l).unwrap()).unwrap()
    };
    assert_same_multiset(
        &on_topic,
        &events.iter().map(normal).collect::<Vec<_>>(),
        "alerts topic",
    );
    let last = serde_json::from_str::<serde_json::Value>(events.last().unwrap()).unwrap();
    assert_eq!(last["state"], "closed");
}

/// Adds an [evidence] section (a fresh signing key, a recipients directory whose national
/// authority takes packages in a directory, MaxMind's test databases) to the test's config.
fn add_evidence(s: &Setup) -> PathBuf {
    let d = s.dir.path();
    let out = output(cmd(&["keygen", "--out"]).arg(d.join("signing.key")));
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(
        d.join("recipients.toml"),
        "[[state]]\ncode = \"NL\"\nname = \"NCSC-NL\"\n[[state.channel]]\nkind = \"directory\"\npath = \"outbox\"\n",
    )
    .unwrap();
    let geoip = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/geoip");
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str(&format!(
        "\n[evidence]\nown_state = \"NL\"\noperator = \"Example operator\"\nrecipients = \"recipients.toml\"\nsigning_key = \"signing.key\"\nout_dir = \"evidence\"\n[evidence.geoip]\ncountry = \"{}\"\nasn = \"{}\"\n",
        geoip.join("GeoLite2-Country-Test.mmdb").display(),
        geoip.join("GeoLite2-ASN-Test.mmdb").display()
    ));
    std::fs::write(&s.config, cfg).unwrap();
    d.join("evidence")
}

/// [`add_evidence`] with one package per alert and recipient: campaigns off. A campaign's
/// request holds the alerts that closed within its hold (event time), whatever their order;
/// but when a hold ends follows each packager's event time, which a packager reading eight
/// partitions (and killed and restarted) advances differently from `run`'s single stream, so
/// the same alerts may be grouped differently (README, "Follow-up and campaigns").
fn add_evidence_per_alert(s: &Setup) -> PathBuf {
    let dir = add_evidence(s);
    let mut cfg = std::fs::read_to_string(&s.config).unwrap();
    cfg.push_str("[evidence.campaign]\nenabled = false\n");
    std::fs::write(&s.config, cfg).unwrap();
    dir
}

#[test]
fn package_turns_closed_alerts_from_kafka_into_verifiable_packages_once() {
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::memory(dir.path());
    broker.start();
    let s = setup(ConfigOpts {
        brokers: &broker.addr(),
        ..ConfigOpts::default()
    });
    let evidence = add_evidence(&s);
    let out = output(&mut sensor(&s, &[]));
    assert!(out.status.success(), "sensor failed: {}", text(&out.stderr));
    let out = output(
        cmd(&["detect", "--exit-when-idle", "5s", "--config"])
            .arg(&s.config)
            .arg("--alerts-out")
            .arg(s.dir.path().join("alerts.jsonl")),
    );
    assert!(out.status.success(), "detect failed: {}", text(&out.stderr));
    let closed = lines(&s.dir.path().join("alerts.jsonl"))
        .iter()
        .filter(|l| l.contains("\"state\":\"closed\""))
        .count();
    assert!(closed > 0);

    let out =
        output(cmd(&["package", "--stats", "--exit-when-idle", "5s", "--config"]).arg(&s.config));
    let err = text(&out.stderr);
    assert!(out.status.success(), "package failed: {err}");
    assert!(err.contains(&format!("alerts_packaged={closed}")), "{err}");
    let pkgs = common::package_dirs(&evidence);
    assert!(!pkgs.is_empty(), "{err}");
    assert_eq!(
        metric(&err, "normwatch_evidence_packages_built_total") as usize,
        pkgs.len()
    );
    assert_eq!(
        metric(&err, "normwatch_evidence_deliveries_total") as usize,
        pkgs.len(),
        "each package dropped once in the national authority's directory"
    );
    assert_eq!(metric(&err, "normwatch_evidence_outbox_pending"), 0.0);
    for p in &pkgs {
        let v = output(
            cmd(&["verify"])
                .arg(p)
                .arg("--key")
                .arg(s.dir.path().join("signing.key.pub")),
        );
        assert!(v.status.success(), "{}: {}", p.display(), text(&v.stdout));
    }
    let dropped = std::fs::read_dir(s.dir.path().join("outbox"))
        .unwrap()
        .count();
    assert_eq!(dropped, pkgs.len());

    // Offsets were committed: a second run packages nothing again and sends nothing twice.
    let out = output(cmd(&["package", "--exit-when-idle", "4s", "--config"]).arg(&s.config));
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("alerts_packaged=0"), "{err}");
    assert_eq!(common::package_dirs(&evidence).len(), pkgs.len());
    assert_eq!(
        std::fs::read_dir(s.dir.path().join("outbox"))
            .unwrap()
            .count(),
        dropped
    );
}

/// A Kafka producer for raw messages (a misbehaving peer).
fn produce_raw(brokers: &str, topic: &str, payloads: &[Vec<u8>]) {
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    for payload in payloads {
        p.send(
            BaseRecord::<[u8], _>::to(topic)
                .key(&b"raw"[..])
                .payload(payload),
        )
        .unwrap();
    }
    p.flush(Duration::from_secs(20)).unwrap();
}

#[test]
fn corrupt_and_wrong_version_batches_are_counted_and_skipped() {
    use normwatch_model::FlowRecord;
    use normwatch_transport::wire::{decode_batch, encode_batch};
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::memory(dir.path());
    broker.start();
    let s = setup(ConfigOpts {
        brokers: &broker.addr(),
        ..ConfigOpts::default()
    });
    let want = expected(&s);
    // A real batch to tamper with: the first of the expected records.
    let first: FlowRecord = serde_json::from_str(&want[0]).unwrap();
    let good = encode_batch("peer", 1, std::slice::from_ref(&first)).unwrap();
    let mut corrupt = good.clone();
    corrupt[30] ^= 0x40;
    let mut future = encode_batch("peer", 2, std::slice::from_ref(&first)).unwrap();
    // A schema version this build does not know, checksum made valid again.
    future[4] = normwatch_transport::wire::SCHEMA_VERSION as u8 + 1;
    let n = future.len();
    let crc = crc32c::crc32c(&future[..n - 4]);
    future[n - 4..].copy_from_slice(&crc.to_le_bytes());
    assert!(decode_batch::<FlowRecord>(&corrupt).is_err());
    assert!(decode_batch::<FlowRecord>(&future).is_err());

    let out = output(&mut sensor(&s, &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    produce_raw(
        &broker.addr(),
        "normwatch.flows",
        &[corrupt, b"not a batch".to_vec(), future, good],
    );
    let (got, err) = Detector::start(&s, "detect", "5s").wait();
    assert_eq!(
        metric_with(
            &err,
            "normwatch_transport_rejected_batches_total",
            "bad_checksum"
        ),
        1.0,
        "{err}"
    );
    assert_eq!(
        metric_with(
            &err,
            "normwatch_transport_rejected_batches_total",
            "unsupported_version"
        ),
        1.0
    );
    assert_eq!(
        metric_with(
            &err,
            "normwatch_transport_rejected_batches_total",
            "too_short"
        ) + metric_with(
            &err,
            "normwatch_transport_rejected_batches_total",
            "bad_magic"
        ),
        1.0
    );
    assert!(err.contains("rejected a batch"), "{err}");
    // The pipeline kept going: every sensor record, plus the one good raw batch.
    let mut want = want;
    want.push(serde_json::to_string(&first).unwrap());
    assert_same_multiset(&got, &want, "around bad batches");
}

/// Regression (issue 19): `KafkaPublisher::flush` failed whenever spool mode was set, so
/// `detect` exited 1 during a broker outage, and a detector's alert spool
/// (`detect-<group>-<pid>`) was left on disk where no successor looked. Now flush returns
/// once the events are acknowledged or durably spooled, and the next `detect` of the group
/// takes the orphaned spool over and sends what it holds.
#[test]
fn alert_events_spooled_in_an_outage_are_sent_by_the_next_detector() {
    use normwatch_transport::bus::{Publisher, Topic};
    use normwatch_transport::kafka::KafkaPublisher;
    use normwatch_transport::metrics::TransportMetrics;
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::sqlite(dir.path());
    broker.start();
    let s = setup(ConfigOpts {
        brokers: &broker.addr(),
        ..ConfigOpts::default()
    });
    let cfg = normwatch_config::load(&s.config).unwrap();
    // The spool a detector of the group (pid 4194303, beyond any real pid) left behind.
    let mut spool = cfg.spool.clone();
    spool.path = spool
        .path
        .join(format!("detect-{}-4194303", cfg.kafka.group_id));
    let events: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            let id = format!("orphaned-alert-{i}");
            let payload = format!("{{\"id\":\"{id}\",\"state\":\"open\"}}").into_bytes();
            (id, payload)
        })
        .collect();
    {
        let mut p = KafkaPublisher::new(
            &cfg.bus,
            &cfg.kafka,
            &spool,
            TransportMetrics::unregistered(),
            Duration::from_secs(10),
        )
        .unwrap();
        broker.kill();
        let started = Instant::now();
        for (id, payload) in &events {
            p.publish(Topic::Alerts, id.as_bytes(), payload.clone())
                .unwrap();
        }
        // The broker is gone: flush returns once the events are spooled, not with an error.
        p.flush(Duration::from_secs(60))
            .expect("flush during an outage");
        assert!(started.elapsed() < Duration::from_secs(60));
        assert_eq!(p.spooled(), events.len() as u64);
    }
    assert!(spool.path.exists(), "the spool outlives its process");
    broker.start();
    let alerts_out = s.dir.path().join("successor-alerts.jsonl");
    let mut c = cmd(&["detect", "--exit-when-idle", "5s", "--config"]);
    c.arg(&s.config).arg("--alerts-out").arg(&alerts_out);
    let out = output(&mut c);
    let err = text(&out.stderr);
    assert!(out.status.success(), "detect failed: {err}");
    assert!(err.contains("took over alert events"), "{err}");
    assert!(!spool.path.exists(), "the taken-over spool is removed");
    let topic = consume_raw(&broker.addr(), "normwatch.alerts", Duration::from_secs(5));
    for (id, payload) in &events {
        assert!(
            topic
                .iter()
                .any(|(k, p)| k == id.as_bytes() && p == payload),
            "{id} never reached the alerts topic ({} messages there)\n{err}",
            topic.len()
        );
    }
}

/// Regression (issue 19): a message far over what a sensor sends wedged the consumer or
/// cost many times its size to decode. Topics are created refusing such messages; one that
/// is on the topic anyway (the broker took it) is counted as `too_large`, committed and
/// skipped, and the batches after it still arrive.
#[test]
fn an_oversized_message_on_the_flows_topic_is_counted_and_skipped() {
    use normwatch_model::FlowRecord;
    use normwatch_transport::wire::encode_batch;
    use rdkafka::config::ClientConfig;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let _g = serial();
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::memory(dir.path());
    broker.start();
    let s = setup(ConfigOpts {
        brokers: &broker.addr(),
        ..ConfigOpts::default()
    });
    let want = expected(&s);
    let out = output(&mut sensor(&s, &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first: FlowRecord = serde_json::from_str(&want[0]).unwrap();
    let good = encode_batch("peer", 1, std::slice::from_ref(&first)).unwrap();
    let big = vec![0x5au8; 3 << 20];
    // A producer that allows what normwatch's never sends.
    let p: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.addr())
        .set("message.max.bytes", "10000000")
        .create()
        .unwrap();
    for payload in [&big, &good] {
        p.send(
            BaseRecord::<[u8], _>::to("normwatch.flows")
                .key(&b"raw"[..])
                .payload(payload.as_slice()),
        )
        .unwrap();
        p.flush(Duration::from_secs(20)).unwrap();
    }
    let stored = consume_raw(&broker.addr(), "normwatch.flows", Duration::from_secs(3))
        .iter()
        .filter(|(_, payload)| payload.len() == big.len())
        .count();
    let (got, err) = Detector::start(&s, "detect", "5s").wait();
    assert_eq!(
        metric_with(
            &err,
            "normwatch_transport_rejected_batches_total",
            "too_large"
        ),
        stored as f64,
        "{err}"
    );
    let mut want = want;
    want.push(serde_json::to_string(&first).unwrap());
    assert_same_multiset(&got, &want, "around an oversized message");
}

/// Protected assets of the multi-asset capture.
const ASSETS: u8 = 40;
/// Event seconds it spans.
const SPAN_SECS: u64 = 110;

/// A capture with many assets (10.20.N.0/24): every asset serves a short HTTPS session a
/// second throughout; every third is SYN-flooded for 3 s (500 SYNs a second from the
/// simulator's botnet ranges) at its own time, every sixth again 40 s later. Deterministic.
fn write_multi_asset_capture(path: &Path) {
    use normwatch_simulate::packet::{tcp, PcapWriter, ACK, FIN, PSH, SYN};
    use std::net::Ipv4Addr;
    const NS: u64 = 1_000_000_000;
    const BOTNET: [([u8; 4], u32); 4] = [
        ([89, 160, 20, 128], 25),
        ([81, 2, 69, 160], 27),
        ([2, 125, 160, 216], 29),
        ([216, 160, 83, 56], 29),
    ];
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let t0 = normwatch_simulate::START_SECS * NS;
    let mut pkts: Vec<(u64, Vec<u8>)> = Vec::new();
    for n in 1..=ASSETS {
        let server = Ipv4Addr::new(10, 20, n, 10);
        for sec in 0..SPAN_SECS {
            for k in 0..1u64 {
                let client = Ipv4Addr::new(198, 51, 100, n.wrapping_mul(2).wrapping_add(k as u8));
                let port = 20_000 + (sec * 2 + k) as u16;
                let t = t0 + sec * NS + k * NS / 2 + u64::from(n) * 1_000;
                let ms = 1_000_000;
                let (c, s) = (1_000u32, 5_000u32);
                let seg = [
                    (0, true, c, 0, SYN, &b""[..]),
                    (1, false, s, c + 1, SYN | ACK, b""),
                    (2, true, c + 1, s + 1, ACK, b""),
                    (3, true, c + 1, s + 1, PSH | ACK, b"GET / HTTP/1.1\r\n\r\n"),
                    (
                        4,
                        false,
                        s + 1,
                        c + 19,
                        PSH | ACK,
                        b"HTTP/1.1 200 OK\r\n\r\n",
                    ),
                    (5, true, c + 19, s + 20, FIN | ACK, b""),
                    (6, false, s + 20, c + 20, FIN | ACK, b""),
                    (7, true, c + 20, s + 21, ACK, b""),
                ];
                for (i, up, seq, ack, flags, payload) in seg {
                    let frame = if up {
                        tcp(client, port, server, 443, seq, ack, flags, payload)
                    } else {
                        tcp(server, 443, client, port, seq, ack, flags, payload)
                    };
                    pkts.push((t + i * ms, frame));
                }
            }
        }
        let mut flood = |start: u64| {
            for sec in start..start + 3 {
                for i in 0..500u64 {
                    let t = t0 + sec * NS + i * (NS / 500) + u64::from(n);
                    let r = next();
                    let (net, len) = BOTNET[(r % 4) as usize];
                    let host = ((r >> 8) as u32) & ((1u32 << (32 - len)) - 1);
                    let src = Ipv4Addr::from(u32::from(Ipv4Addr::from(net)) | host);
                    let sport = 1_024 + ((r >> 40) % 60_000) as u16;
                    pkts.push((
                        t,
                        tcp(src, sport, server, 443, (r >> 16) as u32, 0, SYN, &[]),
                    ));
                }
            }
        };
        if n % 3 == 0 {
            let start = 15 + (u64::from(n) * 7) % 50;
            flood(start);
            if n % 6 == 0 {
                flood(start + 40);
            }
        }
    }
    pkts.sort_by_key(|(t, _)| *t);
    let mut w = PcapWriter::new(std::io::BufWriter::new(
        std::fs::File::create(path).unwrap(),
    ))
    .unwrap();
    for (t, f) in &pkts {
        w.packet(*t, f).unwrap();
    }
    w.finish().unwrap();
}

/// A configuration for the multi-asset capture: 8 partitions, short flow timeouts and small
/// batches (many batches per asset, partitions far apart when a backlog is read), a short
/// quiet period (alerts open and close while the stream goes on).
fn write_multi_asset_config(s: &Setup, brokers: &str) {
    let mut text = format!(
        r#"
[sensor]
id = "multi-sensor"

[sensor.timeouts]
tcp_idle = "2s"
udp_idle = "2s"
icmp_idle = "2s"
other_idle = "2s"
tcp_attempt = "2s"
tcp_linger = "1s"

[bus]
kind = "kafka"
brokers = "{brokers}"
batch_records = 256
batch_linger = "50ms"

[bus.topics.flows]
partitions = 8

[bus.topics.alerts]
partitions = 4

[kafka]
group_id = "multi-detect"
delivery_timeout = "60s"

[kafka.options]
"reconnect.backoff.max.ms" = 500
"topic.metadata.refresh.interval.ms" = 1000
"session.timeout.ms" = 6000
"heartbeat.interval.ms" = 1000

[spool]
path = "{spool}"

[detect]
lateness = "2s"
quiet_period = "5s"
"#,
        spool = s.dir.path().join("spool").display(),
    );
    for n in 1..=ASSETS {
        text.push_str(&format!(
            r#"
[[asset]]
id = "asset-{n:02}"
name = "Asset {n}"
operator = "Example operator"
sector = "energy"
service = "portal {n}"
cidrs = ["10.20.{n}.0/24"]
roles = ["public-service"]
[asset.thresholds]
new_flows_per_s = 200
"#
        ));
    }
    std::fs::write(&s.config, text).unwrap();
}

/// The alert events on the alerts topic, each as normalised JSON.
fn alerts_on_topic(brokers: &str) -> Vec<String> {
    consume_raw(brokers, "normwatch.alerts", Duration::from_secs(5))
        .iter()
        .map(|(_, p)| {
            serde_json::to_string(&serde_json::from_slice::<serde_json::Value>(p).unwrap()).unwrap()
        })
        .collect()
}

fn normal_json(l: &str) -> String {
    serde_json::to_string(&serde_json::from_str::<serde_json::Value>(l).unwrap()).unwrap()
}

/// Each package's id and its flows (`evidence/flows.jsonl`).
fn packages_with_flows(root: &Path) -> BTreeMap<String, String> {
    common::package_dirs(root)
        .iter()
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(p.join("evidence/flows.jsonl")).unwrap_or_default(),
            )
        })
        .collect()
}

/// The same packages as `want` (ids: one per alert, recipient and State asked about), each
/// holding at least the flows `want`'s holds (the packager reads every flow published before
/// the alert, so it may hold a later report of a flow than the one `run`'s evidence stage had
/// seen when the alert closed, or a late flow more).
fn assert_same_packages(
    got: &BTreeMap<String, String>,
    want: &BTreeMap<String, String>,
    what: &str,
) {
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "{what}: package ids"
    );
    // A flow is its sensor's flow id and start; a package holds each flow's latest report.
    let flows_of = |text: &str| -> std::collections::BTreeSet<(String, u64, u64)> {
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (
                    v["sensor_id"].as_str().unwrap().to_string(),
                    v["flow_id"].as_u64().unwrap(),
                    v["first_ns"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    for (id, flows) in want {
        let held = flows_of(&got[id]);
        let missing: Vec<_> = flows_of(flows)
            .into_iter()
            .filter(|f| !held.contains(f))
            .collect();
        assert!(
            missing.is_empty(),
            "{what}: package {id} lacks {} of run's {} flows: {missing:?}",
            missing.len(),
            flows.lines().count()
        );
    }
}

fn sensor_multi(s: &Setup, pcap: &Path) -> Command {
    let mut c = cmd(&["sensor", "--stats", "--config"]);
    c.arg(&s.config).arg("--pcap").arg(pcap);
    c
}

/// Issue 19: the distributed path gives the embedded path's verdicts. A capture of 40 assets
/// (a dozen attacked, some twice) through `sensor` → tansu (8 partitions) → `detect`: with
/// one detector, two in one group, one killed (`kill -9`) mid-stream and replaced, and the
/// broker killed and restarted mid-stream, the alerts topic holds exactly the alert events
/// of `normwatch run` (every open, update and close, byte for byte), and `normwatch package`
/// builds the packages `run` builds, each once, with the same flows.
#[test]
fn multi_asset_alerts_through_kafka_match_run_under_faults() {
    let _g = serial();
    let work = tempfile::tempdir().unwrap();
    let pcap = work.path().join("multi-asset.pcap");
    write_multi_asset_capture(&pcap);
    if let Ok(keep) = std::env::var("KEEP_PCAP") {
        std::fs::copy(&pcap, keep).unwrap();
    }

    // The embedded path.
    let base = setup(ConfigOpts::default());
    write_multi_asset_config(&base, "127.0.0.1:9");
    let evidence = add_evidence_per_alert(&base);
    let run_alerts = base.dir.path().join("run-alerts.jsonl");
    let run_flows = base.dir.path().join("run-flows.jsonl");
    let out = output(
        cmd(&["run", "--config"])
            .arg(&base.config)
            .arg("--alerts-out")
            .arg(&run_alerts)
            .arg("--flows-out")
            .arg(&run_flows)
            .arg("--evidence-dir")
            .arg(&evidence)
            .arg("--pcap")
            .arg(&pcap),
    );
    assert!(out.status.success(), "run failed: {}", text(&out.stderr));
    let want: Vec<String> = lines(&run_alerts).iter().map(|l| normal_json(l)).collect();
    let records = lines(&run_flows).len();
    let opened = want
        .iter()
        .filter(|l| l.contains("\"state\":\"open\""))
        .count();
    assert!(opened >= 19, "{opened} alerts opened: {want:#?}");
    let want_packages = packages_with_flows(&evidence);
    assert!(!want_packages.is_empty());
    assert!(
        want_packages.values().any(|f| !f.is_empty()),
        "packages hold flows"
    );

    let fresh = |sqlite: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = if sqlite {
            Broker::sqlite(dir.path())
        } else {
            Broker::memory(dir.path())
        };
        broker.start();
        let s = setup(ConfigOpts::default());
        write_multi_asset_config(&s, &broker.addr());
        (dir, broker, s)
    };
    let check = |broker: &Broker, what: &str| {
        let got = alerts_on_topic(&broker.addr());
        assert_same_multiset(&got, &want, what);
    };

    // One detector, started once everything is on the topic (a backlog), then the packager.
    {
        let (_d, broker, s) = fresh(false);
        let evidence = add_evidence_per_alert(&s);
        let out = output(&mut sensor_multi(&s, &pcap));
        assert!(out.status.success(), "sensor: {}", text(&out.stderr));
        let (_, err) = Detector::start(&s, "one", "5s").wait();
        assert!(err.contains("already_published=0"), "{err}");
        check(&broker, "one detector");
        let out = output(
            cmd(&["package", "--stats", "--exit-when-idle", "5s", "--config"]).arg(&s.config),
        );
        assert!(out.status.success(), "package: {}", text(&out.stderr));
        assert_same_packages(
            &packages_with_flows(&evidence),
            &want_packages,
            "a packager started on the backlog",
        );
    }

    // Two detectors in one group, the stream arriving while they run.
    {
        let (_d, broker, s) = fresh(false);
        let a = Detector::start(&s, "a", "8s");
        let b = Detector::start(&s, "b", "8s");
        a.wait_assigned();
        b.wait_assigned();
        let out = output(&mut sensor_multi(&s, &pcap));
        assert!(out.status.success(), "sensor: {}", text(&out.stderr));
        let (ga, _) = a.wait();
        let (gb, _) = b.wait();
        assert!(ga.len() + gb.len() >= records);
        check(&broker, "two detectors in one group");
    }

    // One detector killed mid-stream (after it handed on a part of the records) and replaced;
    // then the packager, killed once mid-way and restarted.
    {
        let (_d, broker, s) = fresh(false);
        let evidence = add_evidence_per_alert(&s);
        let out = output(&mut sensor_multi(&s, &pcap));
        assert!(out.status.success(), "sensor: {}", text(&out.stderr));
        let first = Detector::start(&s, "first", "30s");
        let deadline = Instant::now() + Duration::from_secs(60);
        while lines(&first.out).len() < records / 3 {
            assert!(Instant::now() < deadline, "{}", first.stderr());
            sleep(Duration::from_millis(5));
        }
        let handed = first.kill().len();
        assert!(
            handed < records,
            "killed after the end: {handed} of {records}"
        );
        // Partitions come once the group gives up on the killed member (its session timeout).
        let (_, err) = Detector::start(&s, "second", "15s").wait();
        assert!(err.contains("rebuilding detector state"), "{err}");
        check(&broker, "a detector killed and replaced");

        let mut p = cmd(&["package", "--exit-when-idle", "5s", "--config"]);
        let mut p = p.arg(&s.config).stderr(Stdio::null()).spawn().unwrap();
        sleep(Duration::from_millis(1500));
        let _ = p.kill();
        let _ = p.wait();
        // Its partitions come once the group gives up on the killed packager.
        let out = output(
            cmd(&["package", "--stats", "--exit-when-idle", "15s", "--config"]).arg(&s.config),
        );
        assert!(out.status.success(), "package: {}", text(&out.stderr));
        assert_same_packages(
            &packages_with_flows(&evidence),
            &want_packages,
            "a packager killed and restarted",
        );
    }

    // The broker killed while the sensor publishes and the detector consumes, restarted
    // seconds later.
    {
        let (_d, mut broker, s) = fresh(true);
        let d = Detector::start(&s, "through-outage", "15s");
        d.wait_assigned();
        let mut sensor = sensor_multi(&s, &pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        sleep(Duration::from_millis(400));
        broker.kill();
        sleep(Duration::from_secs(4));
        broker.start();
        let mut err = String::new();
        sensor
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(sensor.wait().unwrap().success(), "sensor: {err}");
        let (got, _) = d.wait();
        assert!(got.len() >= records);
        check(&broker, "the broker killed and restarted");
    }
}
