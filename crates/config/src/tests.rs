//! Unit tests: each feeds configuration text to [`parse`] and checks the settings or the
//! exact set of problems reported.

use super::*;
use normwatch_model::{Role, Sector};

fn p(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("test.toml"))
}

/// The problems `text` has, as (key, message).
fn diags(text: &str) -> Vec<(String, String)> {
    match p(text) {
        Err(ConfigError::Invalid(d)) => d
            .iter()
            .map(|x| (x.key.clone(), x.message.clone()))
            .collect(),
        other => panic!("expected diagnostics, got {other:?}"),
    }
}

/// Asserts that `text` has exactly the problems in `expect`: one per (key, message fragment),
/// in order (shape problems of a table in key order, then its value problems; sections
/// sensor, capture, assets; then the checks across assets).
fn check(text: &str, expect: &[(&str, &str)]) {
    let got = diags(text);
    assert_eq!(
        got.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        expect.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        "{got:#?}"
    );
    for ((_, msg), (key, frag)) in got.iter().zip(expect) {
        assert!(msg.contains(frag), "{key}: {msg:?} lacks {frag:?}");
    }
}

fn asset(id: &str, cidrs: &str) -> String {
    format!(
        "[[asset]]\nid = \"{id}\"\nname = \"n\"\noperator = \"o\"\nsector = \"water\"\nservice = \"s\"\ncidrs = {cidrs}\n"
    )
}

#[test]
fn empty_file_gives_the_documented_defaults() {
    let c = p("").unwrap();
    let s = &c.sensor;
    assert_eq!(&*s.id, "normwatch-sensor");
    assert_eq!(s.max_flows, 1_000_000);
    assert_eq!(s.checksums, ChecksumPolicy::Verify);
    assert!(s.ignore_checksum_nets.is_empty());
    assert_eq!(s.likely_server_ports, None);
    let t = &s.timeouts;
    assert_eq!(t.tcp_idle, Duration::from_secs(300));
    assert_eq!(t.udp_idle, Duration::from_secs(60));
    assert_eq!(t.icmp_idle, Duration::from_secs(60));
    assert_eq!(t.other_idle, Duration::from_secs(60));
    assert_eq!(t.active, Some(Duration::from_secs(1800)));
    assert_eq!(t.tcp_attempt, Duration::from_secs(5));
    assert_eq!(t.tcp_linger, Duration::from_secs(5));
    assert_eq!(c.capture.channel_capacity, 65_536);
    assert_eq!(c.capture.snaplen, 65_535);
    assert!(c.capture.promiscuous);
    assert!(c.assets.is_empty());
    assert_eq!(c.source.as_deref(), Some(Path::new("test.toml")));
    let d = Config::default();
    assert_eq!(d.sensor, c.sensor);
    assert_eq!(d.capture, c.capture);
    assert!(d.assets.is_empty() && d.source.is_none());
    // Empty sections are the same as absent ones.
    let e = p("[sensor]\n[sensor.timeouts]\n[capture]\n").unwrap();
    assert_eq!(e.sensor, c.sensor);
    assert_eq!(e.capture, c.capture);
}

#[test]
fn every_key_is_read() {
    let c = p(r#"
[sensor]
id = "Site_A.sensor-2"
max_flows = 5000
checksums = "ignore"
ignore_checksum_nets = ["192.0.2.0/24", "2001:db8::1"]
likely_server_ports = [502, 20000]
[sensor.timeouts]
tcp_idle = "10m"
udp_idle = "90s"
icmp_idle = "30s"
other_idle = "1500ms"
active = "0s"
tcp_attempt = "3s"
tcp_linger = "1s"
[capture]
channel_capacity = 1024
snaplen = 128
promiscuous = false
"#)
    .unwrap();
    let s = &c.sensor;
    assert_eq!(&*s.id, "Site_A.sensor-2");
    assert_eq!(s.max_flows, 5000);
    assert_eq!(s.checksums, ChecksumPolicy::Ignore);
    assert_eq!(
        s.ignore_checksum_nets,
        [
            "192.0.2.0/24".parse().unwrap(),
            "2001:db8::1/128".parse().unwrap()
        ]
    );
    assert_eq!(s.likely_server_ports.as_deref(), Some(&[502, 20000][..]));
    let t = &s.timeouts;
    assert_eq!(t.tcp_idle, Duration::from_secs(600));
    assert_eq!(t.udp_idle, Duration::from_secs(90));
    assert_eq!(t.icmp_idle, Duration::from_secs(30));
    assert_eq!(t.other_idle, Duration::from_millis(1500));
    assert_eq!(t.active, None);
    assert_eq!(t.tcp_attempt, Duration::from_secs(3));
    assert_eq!(t.tcp_linger, Duration::from_secs(1));
    assert_eq!(
        c.capture,
        CaptureConfig {
            channel_capacity: 1024,
            snaplen: 128,
            promiscuous: false
        }
    );
}

#[test]
fn every_mistake_is_reported_at_once() {
    check(
        r#"
[sensor]
colour = "blue"
max_flows = "many"
id = "bad id!"
[sensor.timeouts]
tcp_idle = "five minutes"
udp_idle = 60

[extras]
x = 1

[[asset]]
id = "grid"
name = "Grid"
operator = "Op"
sector = "power"
service = "s"
cidrs = ["10.10.10.5/24"]
roles = ["ot", "scada"]

[[asset]]
id = "grid"
name = ""
operator = "Op"
sector = "energy"
service = "s"
cidrs = ["10.20.0.0/16"]
"#,
        &[
            ("extras", "unknown field `extras`, expected one of `sensor`"),
            ("sensor.colour", "unknown field `colour`, expected one of `id`"),
            ("sensor.max_flows", "invalid type: string \"many\""),
            ("sensor.id", "letters, digits"),
            ("sensor.timeouts.udp_idle", "as a string such as"),
            ("sensor.timeouts.tcp_idle", "\"five minutes\" is not a duration"),
            (
                "asset[0].sector",
                "sector \"power\" is not one of energy, water, health, transport, telecom, finance, government, csirt, other",
            ),
            (
                "asset[0].cidrs[0]",
                "10.10.10.5/24 has host bits set; did you mean 10.10.10.0/24?",
            ),
            ("asset[0].roles[1]", "ot, csirt, holds-ip, public-service"),
            ("asset[1].name", "must not be empty"),
            ("asset[1].id", "already the id of asset[0]"),
        ],
    );
}

#[test]
fn shape_errors() {
    check(
        "sensor = 3\nasset = 3\n",
        &[
            ("asset", "expected a sequence"),
            ("sensor", "expected a map"),
        ],
    );
    check(
        "[sensor]\ntimeouts = 5\n[capture]\npromiscuous = \"yes\"\n",
        &[
            ("sensor.timeouts", "expected a map"),
            ("capture.promiscuous", "expected a boolean"),
        ],
    );
    check(
        "[sensor.timeouts]\nbogus = \"1s\"\n",
        &[("sensor.timeouts.bogus", "expected one of `tcp_idle`")],
    );
    check(
        "asset = [1]\n",
        &[(
            "asset[0]",
            "must be a table (write each asset as [[asset]]), found integer",
        )],
    );
    check(
        "[[asset]]\nid = \"a\"\ncolor = \"red\"\n\"odd key\" = 1\n",
        &[
            ("asset[0].color", "unknown field"),
            ("asset[0].\"odd key\"", "unknown field"),
            ("asset[0].name", "is missing"),
            ("asset[0].operator", "is missing"),
            ("asset[0].sector", "is missing"),
            ("asset[0].service", "is missing"),
            ("asset[0].cidrs", "is missing"),
        ],
    );
}

#[test]
fn range_and_value_checks() {
    check(
        "[sensor]\nmax_flows = 0\nchecksums = \"maybe\"\nlikely_server_ports = [0, 80, 70000]\nignore_checksum_nets = [\"nonsense\"]\n[capture]\nsnaplen = 10\nchannel_capacity = 16777217\n",
        &[
            ("sensor.max_flows", "0 is out of range; accepted: 1 to 100000000"),
            ("sensor.checksums", "\"maybe\" is not one of verify, ignore"),
            ("sensor.ignore_checksum_nets[0]", "not a CIDR prefix"),
            ("sensor.likely_server_ports[0]", "accepted: 1 to 65535"),
            ("sensor.likely_server_ports[2]", "accepted: 1 to 65535"),
            ("capture.channel_capacity", "accepted: 1 to 16777216"),
            ("capture.snaplen", "accepted: 64 to 262144"),
        ],
    );
}

#[test]
fn timeout_rules() {
    check(
        "[sensor.timeouts]\nudp_idle = \"0s\"\nactive = \"500ms\"\ntcp_idle = \"2s\"\n",
        &[
            ("sensor.timeouts.udp_idle", "longer than zero"),
            ("sensor.timeouts.active", "at least 1s"),
            (
                "sensor.timeouts.tcp_attempt",
                "not be longer than tcp_idle (2s)",
            ),
            (
                "sensor.timeouts.tcp_linger",
                "not be longer than tcp_idle (2s)",
            ),
        ],
    );
    // A bad tcp_idle is one problem, not three.
    check(
        "[sensor.timeouts]\ntcp_idle = \"0s\"\n",
        &[("sensor.timeouts.tcp_idle", "longer than zero")],
    );
}

#[test]
fn syntax_error_is_reported_alone_with_line_and_column() {
    let got = diags("[sensor]\nid = \"a\"\nmax_flows = = 3\n[bogus]\n");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0, "");
    assert!(
        got[0]
            .1
            .starts_with("TOML syntax error at line 3, column 13:"),
        "{got:?}"
    );
    assert!(!got[0].1.contains('\n'));
    let got = diags("[sensor]\nid = \"é\" x\n");
    assert!(got[0].1.contains("line 2, column 10"), "{got:?}");
}

#[test]
fn same_prefix_on_two_assets_is_reported_at_the_second_claim() {
    check(
        &format!(
            "{}{}",
            asset("a", "[\"10.0.0.0/8\", \"192.0.2.0/24\"]"),
            asset("b", "[\"2001:db8::/32\", \"192.0.2.0/24\"]")
        ),
        &[(
            "asset[1].cidrs[1]",
            "prefix 192.0.2.0/24 is already claimed by asset[0] (\"a\")",
        )],
    );
    // Nested prefixes are not duplicates.
    p(&format!(
        "{}{}",
        asset("a", "[\"10.0.0.0/8\"]"),
        asset("b", "[\"10.1.0.0/16\"]")
    ))
    .unwrap();
}

#[test]
fn duplicates_within_an_asset() {
    check(
        &format!(
            "{}roles = [\"ot\", \"ot\"]\n",
            asset("a", "[\"192.0.2.0/24\", \"192.0.2.0/24\"]")
        ),
        &[
            ("asset[0].cidrs[1]", "listed twice (also cidrs[0])"),
            ("asset[0].roles[1]", "listed twice"),
        ],
    );
}

#[test]
fn asset_ids() {
    for bad in ["", "Grid", "-grid", "grid scada", &"a".repeat(65)] {
        let got = diags(&asset(bad, "[\"192.0.2.0/24\"]"));
        assert_eq!(got.len(), 1, "{bad:?}: {got:?}");
        assert_eq!(got[0].0, "asset[0].id");
    }
    for good in ["grid", "0grid", "grid.scada_1-a", &"a".repeat(64)] {
        p(&asset(good, "[\"192.0.2.0/24\"]")).unwrap();
    }
}

#[test]
fn asset_is_read_whole() {
    let c = p(&format!(
        "{}roles = [\"public-service\", \"holds-ip\"]\n",
        asset("h", "[\"192.0.2.7\", \"2001:db8::1\", \"198.51.100.0/24\"]")
    ))
    .unwrap();
    let a = &c.assets.assets()[0];
    assert_eq!(a.id.as_str(), "h");
    assert_eq!(a.sector, Sector::Water);
    assert_eq!(a.cidrs[0].to_string(), "192.0.2.7/32");
    assert_eq!(a.cidrs[1].to_string(), "2001:db8::1/128");
    assert_eq!(a.roles, [Role::PublicService, Role::HoldsIp]);
    assert!(c.assets.lookup("198.51.100.9".parse().unwrap()).is_some());
}

#[test]
fn display_has_one_line_per_problem_with_file_and_key() {
    let Err(e) = p("[capture]\nsnaplen = 10\n[sensor]\nchecksums = \"maybe\"\n") else {
        panic!()
    };
    let ConfigError::Invalid(d) = &e else {
        panic!()
    };
    assert_eq!(
        d.to_string(),
        "test.toml: sensor.checksums: \"maybe\" is not one of verify, ignore\n\
         test.toml: capture.snaplen: 10 is out of range; accepted: 64 to 262144"
    );
    assert_eq!(
        e.to_string(),
        format!("2 problems in configuration test.toml:\n{d}")
    );
}

#[test]
fn bus_kafka_spool_defaults() {
    let c = p("").unwrap();
    assert_eq!(c.bus, BusConfig::default());
    assert_eq!(c.bus.kind, BusKind::Memory);
    assert_eq!(c.bus.topics.flows.name, "normwatch.flows");
    assert_eq!(c.bus.topics.flows.partitions, 8);
    assert_eq!(c.kafka, KafkaConfig::default());
    assert_eq!(c.kafka.security_protocol(), "plaintext");
    assert_eq!(c.spool.max_bytes, 1 << 30);
}

#[test]
fn kafka_settings_are_read_and_paths_resolved_against_the_file() {
    let text = r#"
[bus]
kind = "kafka"
brokers = "kafka-1:9092, [2001:db8::1]:9093"
batch_records = 100
batch_linger = "10ms"
[bus.topics.flows]
name = "site.flows"
partitions = 64
replication = 3
[kafka]
compression = "zstd"
delivery_timeout = "5s"
[kafka.tls]
ca = "ca.pem"
[kafka.sasl]
mechanism = "SCRAM-SHA-512"
username = "sensor-1"
password_file = "/etc/normwatch/kafka.pass"
[kafka.options]
"linger.ms" = 20
"socket.keepalive.enable" = true
"debug" = "broker"
[spool]
path = "spool"
max_bytes = "512 MiB"
"#;
    let c = parse(text, Path::new("/etc/normwatch/normwatch.toml")).unwrap();
    assert_eq!(c.bus.kind, BusKind::Kafka);
    assert_eq!(c.bus.brokers, ["kafka-1:9092", "[2001:db8::1]:9093"]);
    assert_eq!(c.bus.batch_records, 100);
    assert_eq!(c.bus.topics.flows.name, "site.flows");
    assert_eq!(c.bus.topics.flows.partitions, 64);
    assert_eq!(c.bus.topics.flows.replication, 3);
    assert_eq!(c.kafka.compression, Compression::Zstd);
    assert_eq!(c.kafka.security_protocol(), "sasl_ssl");
    assert_eq!(
        c.kafka.tls.as_ref().unwrap().ca.as_deref(),
        Some(Path::new("/etc/normwatch/ca.pem"))
    );
    let sasl = c.kafka.sasl.as_ref().unwrap();
    assert_eq!(sasl.mechanism.as_str(), "SCRAM-SHA-512");
    assert_eq!(
        sasl.password,
        Secret::File("/etc/normwatch/kafka.pass".into())
    );
    assert_eq!(
        c.kafka.options,
        [
            ("debug".to_string(), "broker".to_string()),
            ("linger.ms".to_string(), "20".to_string()),
            ("socket.keepalive.enable".to_string(), "true".to_string()),
        ]
    );
    assert_eq!(c.spool.path, Path::new("/etc/normwatch/spool"));
    assert_eq!(c.spool.max_bytes, 512 << 20);
}

#[test]
fn bus_problems_are_each_reported() {
    check(
        r#"
[bus]
kind = "rabbit"
brokers = "kafka-1, :9092, host:99999"
capacity = 0
batch_linger = "2m"
[bus.topics.flows]
name = "bad name"
partitions = 0
[bus.topics.alerts]
name = "normwatch.evidence"
"#,
        &[
            ("bus.kind", "not one of memory, kafka"),
            ("bus.brokers", "has no port"),
            ("bus.brokers", "not a host name"),
            ("bus.brokers", "port must be a number"),
            ("bus.capacity", "out of range"),
            ("bus.batch_linger", "too long"),
            ("bus.topics.flows.name", "not a valid Kafka topic name"),
            ("bus.topics.flows.partitions", "out of range"),
            ("bus.topics.evidence.name", "already used"),
        ],
    );
    check(
        "[bus]\nkind = \"kafka\"\n",
        &[("bus.brokers", "is missing")],
    );
}

#[test]
fn kafka_problems_are_each_reported() {
    check(
        r#"
[kafka]
compression = "gzip"
delivery_timeout = "0s"
[kafka.tls]
cert = "client.pem"
[kafka.sasl]
mechanism = "GSSAPI"
password = "x"
password_env = "KAFKA_PW"
[kafka.options]
"bootstrap.servers" = "elsewhere:9092"
"enable.auto.commit" = true
"max.in.flight.requests.per.connection" = 10
"Linger" = 1
"fetch.wait.max.ms" = [1]
"#,
        &[
            ("kafka.compression", "not one of lz4, zstd"),
            ("kafka.delivery_timeout", "out of range"),
            ("kafka.tls.key", "is missing"),
            ("kafka.sasl.mechanism", "not one of PLAIN"),
            ("kafka.sasl.username", "is missing"),
            ("kafka.sasl", "one way only"),
            ("kafka.options.Linger", "not a librdkafka property"),
            (
                "kafka.options.\"bootstrap.servers\"",
                "use bus.brokers instead",
            ),
            ("kafka.options.\"enable.auto.commit\"", "cannot be changed"),
            ("kafka.options.\"fetch.wait.max.ms\"", "must be a string"),
            (
                "kafka.options.\"max.in.flight.requests.per.connection\"",
                "at most 5",
            ),
        ],
    );
    check(
        "[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"\n",
        &[("kafka.sasl.mechanism", "in clear")],
    );
}

#[test]
fn spool_problems_are_each_reported() {
    check(
        "[spool]\npath = \"\"\nmax_bytes = \"12 parsecs\"\nsync_interval = \"1h\"\n",
        &[
            ("spool.path", "must not be empty"),
            ("spool.max_bytes", "not a size"),
            ("spool.sync_interval", "too long"),
        ],
    );
    check(
        "[spool]\nmax_bytes = 1024\n",
        &[("spool.max_bytes", "out of range")],
    );
}

#[test]
fn secrets_resolve_and_do_not_print() {
    let s = Secret::Inline("hunter2".into());
    assert!(!format!("{s:?}").contains("hunter2"));
    assert_eq!(s.resolve().unwrap(), "hunter2");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pw");
    std::fs::write(&f, "s3cret\n").unwrap();
    assert_eq!(Secret::File(f).resolve().unwrap(), "s3cret");
    let e = Secret::Env("NORMWATCH_TEST_UNSET_VARIABLE".into())
        .resolve()
        .unwrap_err();
    assert!(e.to_string().contains("NORMWATCH_TEST_UNSET_VARIABLE"));
}

#[test]
fn asset_detection_settings() {
    let text = format!(
        "{}service_ports = [502, 20000]\nallow = [\"10.10.10.5\", \"10.10.11.0/28\"]\n[asset.thresholds]\npps = 50000\nbps = 400000000\n[asset.thresholds.udp]\npps = 20000\nnew_flows_per_s = 500\n",
        asset("grid", "[\"10.10.10.0/24\"]")
    );
    let c = p(&text).unwrap();
    let a = &c.assets.assets()[0];
    assert_eq!(a.service_ports, [502, 20000]);
    assert!(a.allows("10.10.10.5".parse().unwrap()));
    assert!(a.allows("10.10.11.15".parse().unwrap()));
    assert!(!a.allows("10.10.10.6".parse().unwrap()));
    assert_eq!(a.thresholds.total.pps, Some(50_000));
    assert_eq!(a.thresholds.total.bps, Some(400_000_000));
    assert_eq!(a.thresholds.total.new_flows_per_s, None);
    assert_eq!(a.thresholds.udp.pps, Some(20_000));
    assert_eq!(a.thresholds.udp.new_flows_per_s, Some(500));
    assert!(a.thresholds.tcp.is_empty());
}

#[test]
fn asset_detection_settings_problems() {
    let text = format!(
        "{}service_ports = [0, 80, 80]\nallow = [\"10.0.0.1/8\"]\n[asset.thresholds]\npps = 0\nburst = 5\n[asset.thresholds.gre]\npps = 1\n[asset.thresholds.tcp]\nbps = -1\n",
        asset("grid", "[\"10.10.10.0/24\"]")
    );
    check(
        &text,
        &[
            ("asset[0].service_ports[0]", "out of range"),
            ("asset[0].service_ports[2]", "listed twice"),
            ("asset[0].allow[0]", "host bits"),
            ("asset[0].thresholds.burst", "unknown field"),
            ("asset[0].thresholds.gre", "unknown field"),
            ("asset[0].thresholds.pps", "out of range"),
            ("asset[0].thresholds.tcp.bps", "out of range"),
        ],
    );
}

#[test]
fn detect_settings() {
    let c = parse(
        "[detect]\nnorms = \"catalogue/norms.toml\"\nlateness = \"20s\"\nquiet_period = \"1m\"\n",
        Path::new("/etc/normwatch/normwatch.toml"),
    )
    .unwrap();
    assert_eq!(
        c.detect.norms.as_deref(),
        Some(Path::new("/etc/normwatch/catalogue/norms.toml"))
    );
    assert_eq!(p("").unwrap().detect.norms, None);
    assert_eq!(c.detect.lateness, Duration::from_secs(20));
    assert_eq!(c.detect.quiet_period, Duration::from_secs(60));
    assert_eq!(c.detect.update_interval, Duration::from_secs(10));
    check(
        "[detect]\nlateness = \"0s\"\nsyn_half_open_share = 1.5\nrules = []\n",
        &[
            ("detect.rules", "unknown field"),
            ("detect.lateness", "out of range"),
            ("detect.syn_half_open_share", "out of range"),
        ],
    );
}
