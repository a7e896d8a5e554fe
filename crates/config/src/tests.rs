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
            promiscuous: false,
            ring_size: 32 << 20,
            filter: None,
            threads: 1,
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
            ("sensor", "expected a map"),
            ("asset", "expected a sequence"),
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
    assert_eq!(c.kafka, KafkaConfig::default());
    assert_eq!(c.spool, SpoolConfig::default());
    let topic = |name: &str, partitions| TopicConfig {
        name: name.into(),
        partitions,
        replication: 1,
    };
    assert_eq!(
        c.bus,
        BusConfig {
            kind: BusKind::Memory,
            brokers: Vec::new(),
            capacity: 1024,
            batch_records: 4096,
            batch_linger: Duration::from_millis(20),
            topics: Topics {
                flows: topic("normwatch.flows", 8),
                alerts: topic("normwatch.alerts", 4),
                evidence: topic("normwatch.evidence", 1),
            },
        }
    );
    assert_eq!(
        c.kafka,
        KafkaConfig {
            client_id: "normwatch".into(),
            group_id: "normwatch-detect".into(),
            compression: Compression::Lz4,
            delivery_timeout: Duration::from_secs(30),
            tls: None,
            sasl: None,
            options: Vec::new(),
        }
    );
    assert_eq!(c.kafka.security_protocol(), "plaintext");
    assert_eq!(
        c.spool,
        SpoolConfig {
            path: PathBuf::from("/var/lib/normwatch/spool"),
            max_bytes: 1 << 30,
            sync_interval: Duration::from_secs(1),
        }
    );
    assert_eq!(BusKind::default(), BusKind::Memory);
    assert_eq!(Compression::default(), Compression::Lz4);
    // Empty tables are the same as absent ones, except [kafka.tls], which turns TLS on.
    let e =
        p("[bus]\n[bus.topics]\n[bus.topics.flows]\n[kafka]\n[kafka.options]\n[spool]\n").unwrap();
    assert_eq!((e.bus, e.kafka, e.spool), (c.bus, c.kafka, c.spool));
}

#[test]
fn security_protocol_follows_tls_and_sasl() {
    let c = p("[kafka.tls]\n").unwrap();
    assert_eq!(c.kafka.tls, Some(TlsConfig::default()));
    assert_eq!(c.kafka.security_protocol(), "ssl");
    let scram =
        "[kafka.sasl]\nmechanism = \"SCRAM-SHA-256\"\nusername = \"u\"\npassword_env = \"PW\"\n";
    let c = p(scram).unwrap();
    assert_eq!(c.kafka.tls, None);
    assert_eq!(
        c.kafka.sasl,
        Some(SaslConfig {
            mechanism: SaslMechanism::ScramSha256,
            username: "u".into(),
            password: Secret::Env("PW".into()),
        })
    );
    assert_eq!(c.kafka.security_protocol(), "sasl_plaintext");
    let c = p(&format!("{scram}[kafka.tls]\n")).unwrap();
    assert_eq!(c.kafka.security_protocol(), "sasl_ssl");
    // PLAIN is fine once TLS protects it.
    let c = p(
        "[kafka.tls]\n[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"\n",
    )
    .unwrap();
    let sasl = c.kafka.sasl.unwrap();
    assert_eq!(sasl.mechanism, SaslMechanism::Plain);
    assert_eq!(sasl.password, Secret::Inline("p".into()));
    assert_eq!(SaslMechanism::Plain.as_str(), "PLAIN");
    assert_eq!(SaslMechanism::ScramSha256.as_str(), "SCRAM-SHA-256");
    assert_eq!(SaslMechanism::ScramSha512.as_str(), "SCRAM-SHA-512");
}

#[test]
fn every_bus_kafka_spool_key_is_read() {
    let text = r#"
[bus]
kind = "memory"
brokers = "kafka-1.example:9092"
capacity = 16
batch_records = 1
batch_linger = "0s"
[bus.topics.alerts]
name = "site_alerts"
partitions = 2
replication = 32
[bus.topics.evidence]
name = "site-evidence"
partitions = 10000
[kafka]
client_id = "north sensor 1"
group_id = "north.detect"
delivery_timeout = "1h"
[kafka.tls]
ca = "/etc/ssl/ca.pem"
cert = "tls/sensor.pem"
key = "tls/sensor.key"
key_password_file = "tls/key.pass"
[kafka.sasl]
mechanism = "SCRAM-SHA-256"
username = "sensor"
password = "hunter2"
[kafka.options]
"max.in.flight.requests.per.connection" = 5
"queue.buffering.max.kbytes" = "65536"
[spool]
path = "/srv/spool"
max_bytes = 65536
sync_interval = "0s"
"#;
    let c = parse(text, Path::new("/etc/normwatch/site.toml")).unwrap();
    let b = &c.bus;
    assert_eq!(b.kind, BusKind::Memory);
    assert_eq!(b.brokers, ["kafka-1.example:9092"]);
    assert_eq!((b.capacity, b.batch_records), (16, 1));
    assert_eq!(b.batch_linger, Duration::ZERO);
    assert_eq!(b.topics.flows, Topics::default().flows);
    assert_eq!(
        b.topics.alerts,
        TopicConfig {
            name: "site_alerts".into(),
            partitions: 2,
            replication: 32
        }
    );
    assert_eq!(b.topics.evidence.name, "site-evidence");
    assert_eq!(b.topics.evidence.partitions, 10_000);
    assert_eq!(b.topics.evidence.replication, 1);
    let k = &c.kafka;
    assert_eq!(k.client_id, "north sensor 1");
    assert_eq!(k.group_id, "north.detect");
    assert_eq!(k.compression, Compression::Lz4);
    assert_eq!(k.delivery_timeout, Duration::from_secs(3600));
    assert_eq!(
        k.tls,
        Some(TlsConfig {
            ca: Some("/etc/ssl/ca.pem".into()),
            cert: Some("/etc/normwatch/tls/sensor.pem".into()),
            key: Some("/etc/normwatch/tls/sensor.key".into()),
            key_password_file: Some("/etc/normwatch/tls/key.pass".into()),
        })
    );
    let sasl = k.sasl.as_ref().unwrap();
    assert_eq!(sasl.username, "sensor");
    assert_eq!(sasl.password, Secret::Inline("hunter2".into()));
    assert!(!format!("{c:?}").contains("hunter2"));
    assert_eq!(
        k.options,
        [
            (
                "max.in.flight.requests.per.connection".to_string(),
                "5".to_string()
            ),
            (
                "queue.buffering.max.kbytes".to_string(),
                "65536".to_string()
            ),
        ]
    );
    assert_eq!(
        c.spool,
        SpoolConfig {
            path: "/srv/spool".into(),
            max_bytes: 65_536,
            sync_interval: Duration::ZERO,
        }
    );
}

#[test]
fn relative_paths_of_a_file_without_a_directory_stay_relative() {
    let text = "[spool]\npath = \"spool\"\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\npassword_file = \"pw\"\n";
    let c = parse(text, Path::new("normwatch.toml")).unwrap();
    assert_eq!(c.spool.path, Path::new("./spool"));
    assert_eq!(c.kafka.sasl.unwrap().password, Secret::File("./pw".into()));
    let c = parse(text, Path::new("config/normwatch.toml")).unwrap();
    assert_eq!(c.spool.path, Path::new("config/spool"));
}

#[test]
fn byte_sizes() {
    for (v, bytes) in [
        ("65536", 65_536u64),
        ("\"65536\"", 65_536),
        ("\"65536B\"", 65_536),
        ("\"64KiB\"", 64 << 10),
        ("\"100KB\"", 100_000),
        ("\"100kB\"", 100_000),
        ("\"512MiB\"", 512 << 20),
        ("\"512 MB\"", 512_000_000),
        ("\"1 GB\"", 1_000_000_000),
        ("\"1GiB\"", 1 << 30),
        ("\"1.5GiB\"", 3 << 29),
        ("\"2TB\"", 2_000_000_000_000),
        ("\"16TiB\"", 16 << 40),
        ("\"1 gib\"", 1 << 30),
        ("\"2 mb\"", 2_000_000),
        ("\"1e9\"", 1_000_000_000),
    ] {
        let c = p(&format!("[spool]\nmax_bytes = {v}\n")).unwrap_or_else(|e| panic!("{v}: {e}"));
        assert_eq!(c.spool.max_bytes, bytes, "{v}");
    }
    for v in [
        "\"GiB\"",
        "\"12 parsecs\"",
        "\"\"",
        "-1",
        "1.5",
        "\"1 GiB 2\"",
        "true",
    ] {
        check(
            &format!("[spool]\nmax_bytes = {v}\n"),
            &[("spool.max_bytes", "is not a size; write a size as bytes (65536) or a string with a unit, e.g. \"512MiB\" or \"1 GB\" (B; KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024)")],
        );
    }
    for v in ["65535", "\"63KiB\"", "\"17TiB\"", "\"99999999999TiB\""] {
        check(
            &format!("[spool]\nmax_bytes = {v}\n"),
            &[(
                "spool.max_bytes",
                "bytes is out of range; accepted: 64KiB to 16TiB",
            )],
        );
    }
}

#[test]
fn brokers() {
    let c = p("[bus]\nbrokers = \" a:1 ,b.example:65535,[::1]:9092,10.0.0.1:9092\"\n").unwrap();
    assert_eq!(
        c.bus.brokers,
        ["a:1", "b.example:65535", "[::1]:9092", "10.0.0.1:9092"]
    );
    // Unset or empty is fine for the in-process bus.
    assert!(p("[bus]\nbrokers = \"\"\n").unwrap().bus.brokers.is_empty());
    check(
        "[bus]\nkind = \"kafka\"\nbrokers = \" \"\n",
        &[(
            "bus.brokers",
            "is empty; with kind = \"kafka\" list the bootstrap servers, e.g. brokers = \"kafka-1:9092,kafka-2:9092\"",
        )],
    );
    check(
        "[bus]\nkind = \"kafka\"\n",
        &[(
            "bus.brokers",
            "is missing; with kind = \"kafka\" list the bootstrap servers",
        )],
    );
    check(
        "[bus]\nbrokers = \"a:1,,b:2,\"\n",
        &[(
            "bus.brokers",
            "\"a:1,,b:2,\" has an empty entry; separate host:port pairs with single commas",
        )],
    );
    for (b, msg) in [
        (
            "kafka-1",
            "\"kafka-1\" has no port; write host:port, e.g. \"kafka-1:9092\"",
        ),
        ("a:0", "\"a:0\": the port must be a number from 1 to 65535"),
        ("a:+80", "the port must be a number from 1 to 65535"),
        ("a:", "the port must be a number from 1 to 65535"),
        ("a:65536", "the port must be a number from 1 to 65535"),
        (
            ":9092",
            "\":9092\": \"\" is not a host name or address (write IPv6 addresses in brackets)",
        ),
        (
            "2001:db8::1:9092",
            "is not a host name or address (write IPv6 addresses in brackets)",
        ),
        ("[2001:db8::zz]:9092", "is not a host name or address"),
        ("bad host:9092", "is not a host name or address"),
    ] {
        check(
            &format!("[bus]\nbrokers = \"{b}\"\n"),
            &[("bus.brokers", msg)],
        );
    }
}

#[test]
fn bus_key_messages() {
    check(
        "[bus]\nkind = \"Kafka\"\n",
        &[("bus.kind", "\"Kafka\" is not one of memory, kafka")],
    );
    check(
        "[bus]\ncapacity = 1000001\nbatch_records = 0\n",
        &[
            (
                "bus.capacity",
                "1000001 is out of range; accepted: 1 to 1000000",
            ),
            (
                "bus.batch_records",
                "0 is out of range; accepted: 1 to 1000000",
            ),
        ],
    );
    check(
        "[bus]\nbatch_linger = \"61s\"\n",
        &[(
            "bus.batch_linger",
            "\"61s\" is too long; accepted: 0s to 60s",
        )],
    );
    check(
        "[bus]\nbatch_linger = \"soon\"\n",
        &[("bus.batch_linger", "\"soon\" is not a duration")],
    );
    check(
        "[bus.topics]\nflow = {}\n[bus.topics.alerts]\nname = \".\"\nreplicas = 3\n[bus.topics.evidence]\nname = \"..\"\n",
        &[
            ("bus.topics.flow", "unknown field `flow`, expected one of `flows`, `alerts`, `evidence`"),
            ("bus.topics.alerts.replicas", "unknown field `replicas`, expected one of `name`, `partitions`, `replication`"),
            ("bus.topics.alerts.name", "\".\" is not a valid Kafka topic name; use 1 to 249 letters, digits, '.', '_' or '-'"),
            ("bus.topics.evidence.name", "\"..\" is not a valid Kafka topic name"),
        ],
    );
    for name in ["", "a/b", "flöws", &"a".repeat(250)] {
        check(
            &format!("[bus.topics.flows]\nname = \"{name}\"\n"),
            &[("bus.topics.flows.name", "is not a valid Kafka topic name")],
        );
    }
    p(&format!(
        "[bus.topics.flows]\nname = \"{}\"\n",
        "a".repeat(249)
    ))
    .unwrap();
    check(
        "[bus.topics.evidence]\npartitions = 10001\nreplication = 0\n[bus.topics.alerts]\nreplication = 33\n",
        &[
            ("bus.topics.alerts.replication", "33 is out of range; accepted: 1 to 32"),
            ("bus.topics.evidence.partitions", "10001 is out of range; accepted: 1 to 10000"),
            ("bus.topics.evidence.replication", "0 is out of range; accepted: 1 to 32"),
        ],
    );
    check(
        "[bus.topics.flows]\nname = \"x\"\n[bus.topics.evidence]\nname = \"x\"\n",
        &[(
            "bus.topics.evidence.name",
            "\"x\" is already used by another topic; each topic needs its own name",
        )],
    );
    check(
        "[bus.topics.flows]\nname = \"x\"\n[bus.topics.alerts]\nname = \"x\"\n",
        &[("bus.topics.alerts.name", "already used")],
    );
}

#[test]
fn only_duration_keys_get_the_duration_hint() {
    let got = diags(
        "[bus]\ncapacity = \"big\"\nbatch_linger = 100\n[kafka]\nclient_id = 5\ntls = 3\ndelivery_timeout = 30\n[spool]\npath = 1\nsync_interval = 2\n[detect]\nlateness = 10\nsyn_half_open_share = \"most\"\n",
    );
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        keys,
        [
            "bus.capacity",
            "bus.batch_linger",
            "kafka.client_id",
            "kafka.tls",
            "kafka.delivery_timeout",
            "spool.path",
            "spool.sync_interval",
            "detect.lateness",
            "detect.syn_half_open_share",
        ]
    );
    for (key, msg) in &got {
        assert!(msg.starts_with("invalid type"), "{key}: {msg}");
        let duration = matches!(
            key.as_str(),
            "bus.batch_linger"
                | "kafka.delivery_timeout"
                | "spool.sync_interval"
                | "detect.lateness"
        );
        assert_eq!(
            msg.contains("write a duration as a string"),
            duration,
            "{key}: {msg}"
        );
    }
}

#[test]
fn kafka_key_messages() {
    check(
        "[kafka]\ncompresion = \"lz4\"\nclient_id = \"\"\ngroup_id = \" detect\"\n",
        &[
            (
                "kafka.compresion",
                "unknown field `compresion`, expected one of",
            ),
            (
                "kafka.client_id",
                "\"\" must be non-empty printable ASCII, without leading or trailing spaces",
            ),
            (
                "kafka.group_id",
                "\" detect\" must be non-empty printable ASCII",
            ),
        ],
    );
    check(
        "[kafka]\nclient_id = \"café\"\ngroup_id = \"tab\\there\"\n",
        &[
            ("kafka.client_id", "must be non-empty printable ASCII"),
            ("kafka.group_id", "must be non-empty printable ASCII"),
        ],
    );
    check(
        "[kafka]\ncompression = \"snappy\"\n",
        &[("kafka.compression", "\"snappy\" is not one of lz4, zstd")],
    );
    for t in ["\"999ms\"", "\"61m\""] {
        check(
            &format!("[kafka]\ndelivery_timeout = {t}\n"),
            &[(
                "kafka.delivery_timeout",
                "is out of range; accepted: 1s to 1h",
            )],
        );
    }
    check(
        "[kafka]\ndelivery_timeout = \"30\"\n",
        &[("kafka.delivery_timeout", "\"30\" is not a duration")],
    );
}

#[test]
fn tls_key_messages() {
    check(
        "[kafka.tls]\nkey = \"k.pem\"\ncafile = \"ca.pem\"\n",
        &[
            (
                "kafka.tls.cafile",
                "unknown field `cafile`, expected one of `ca`, `cert`, `key`, `key_password_file`",
            ),
            (
                "kafka.tls.cert",
                "is missing; a client certificate needs its key (cert and key go together)",
            ),
        ],
    );
    check(
        "[kafka.tls]\ncert = \"c.pem\"\n",
        &[(
            "kafka.tls.key",
            "is missing; a client certificate needs its key",
        )],
    );
    check(
        "[kafka.tls]\nkey_password_file = \"pw\"\n",
        &[(
            "kafka.tls.key_password_file",
            "decrypts kafka.tls.key, which is not set; add cert and key or remove it",
        )],
    );
    check(
        "[kafka.tls]\nca = \"\"\ncert = \" \"\nkey = \"k\"\nkey_password_file = \"\"\n",
        &[
            (
                "kafka.tls.ca",
                "must not be empty; give a path or remove the key",
            ),
            ("kafka.tls.cert", "must not be empty"),
            ("kafka.tls.key_password_file", "must not be empty"),
        ],
    );
    check(
        "[kafka]\ntls = true\n",
        &[("kafka.tls", "invalid type: boolean `true`, expected a map")],
    );
}

#[test]
fn sasl_key_messages() {
    check(
        "[kafka.sasl]\nusername = \"u\"\npassword = \"p\"\nuser = \"x\"\n",
        &[
            ("kafka.sasl.user", "unknown field `user`, expected one of `mechanism`, `username`, `password`, `password_file`, `password_env`"),
            ("kafka.sasl.mechanism", "is missing; one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
        ],
    );
    check(
        "[kafka.sasl]\nmechanism = \"scram-sha-256\"\nusername = \"\"\npassword = \"p\"\n",
        &[
            (
                "kafka.sasl.mechanism",
                "\"scram-sha-256\" is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
            ),
            ("kafka.sasl.username", "is missing or empty"),
        ],
    );
    let scram = "[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\n";
    check(
        scram,
        &[(
            "kafka.sasl",
            "needs the password: one of password, password_file, password_env",
        )],
    );
    check(
        &format!("{scram}password_file = \"f\"\npassword_env = \"E\"\n"),
        &[(
            "kafka.sasl",
            "give the password one way only: password, password_file or password_env",
        )],
    );
    check(
        &format!("{scram}password = \"\"\n"),
        &[("kafka.sasl.password", "must not be empty")],
    );
    check(
        &format!("{scram}password_file = \"\"\n"),
        &[(
            "kafka.sasl.password_file",
            "must not be empty; give the path of a file holding the password",
        )],
    );
    for v in ["", "1PW", "MY-PW", "PW=x"] {
        check(
            &format!("{scram}password_env = \"{v}\"\n"),
            &[(
                "kafka.sasl.password_env",
                "is not an environment variable name; use letters, digits and '_', not starting with a digit",
            )],
        );
    }
    check(
        "[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword_env = \"PW\"\n",
        &[(
            "kafka.sasl.mechanism",
            "PLAIN without [kafka.tls] would send the password in clear; add [kafka.tls] or use SCRAM-SHA-256/512",
        )],
    );
}

#[test]
fn passthrough_options_are_checked_one_by_one() {
    let managed = [
        ("bootstrap.servers", "bus.brokers"),
        ("metadata.broker.list", "bus.brokers"),
        ("client.id", "kafka.client_id"),
        ("group.id", "kafka.group_id"),
        ("compression.type", "kafka.compression"),
        ("compression.codec", "kafka.compression"),
        ("message.timeout.ms", "kafka.delivery_timeout"),
        ("delivery.timeout.ms", "kafka.delivery_timeout"),
        ("security.protocol", "[kafka.tls]"),
        ("ssl.ca.location", "kafka.tls.ca"),
        ("ssl.certificate.location", "kafka.tls.cert"),
        ("ssl.key.location", "kafka.tls.key"),
        ("ssl.key.password", "kafka.tls.key_password_file"),
        ("sasl.mechanism", "kafka.sasl.mechanism"),
        ("sasl.mechanisms", "kafka.sasl.mechanism"),
        ("sasl.username", "kafka.sasl.username"),
        ("sasl.password", "kafka.sasl.password"),
    ];
    for (k, instead) in managed {
        let key = format!("kafka.options.\"{k}\"");
        check(
            &format!("[kafka.options]\n\"{k}\" = \"x\"\n"),
            &[(&key, &format!("is set by normwatch; use {instead}"))],
        );
    }
    let guarantees = [
        ("enable.idempotence", "always idempotent"),
        ("acks", "acks=all"),
        ("request.required.acks", "acks=all"),
        (
            "enable.auto.commit",
            "committed only after a batch is processed",
        ),
        (
            "enable.auto.offset.store",
            "stored only after a batch is processed",
        ),
        ("transactional.id", "does not use transactions"),
        ("isolation.level", "does not use transactions"),
    ];
    for (k, why) in guarantees {
        let key = join_key("kafka.options", k);
        for v in ["false", "1", "\"all\""] {
            let text = format!("[kafka.options]\n\"{k}\" = {v}\n");
            check(&text, &[(&key, "cannot be changed: ")]);
            assert!(diags(&text)[0].1.contains(why), "{k}");
        }
    }
    for v in ["6", "\"100\""] {
        for k in ["max.in.flight.requests.per.connection", "max.in.flight"] {
            check(
                &format!("[kafka.options]\n\"{k}\" = {v}\n"),
                &[(
                    &format!("kafka.options.\"{k}\""),
                    "is too many: the idempotent producer allows at most 5",
                )],
            );
        }
    }
    let c = p("[kafka.options]\n\"max.in.flight\" = \"1\"\n").unwrap();
    assert_eq!(c.kafka.options, [("max.in.flight".into(), "1".into())]);
    for k in ["Linger.ms", "linger-ms", "", "linger ms"] {
        let key = join_key("kafka.options", k);
        check(
            &format!("[kafka.options]\n\"{k}\" = 1\n"),
            &[(
                &key,
                "is not a librdkafka property name (lowercase words joined by '.')",
            )],
        );
    }
    for v in ["1.5", "[1]", "{ a = [1] }", "1979-05-27"] {
        check(
            &format!("[kafka.options]\n\"linger.ms\" = {v}\n"),
            &[(
                "kafka.options.\"linger.ms\"",
                "must be a string, an integer or a boolean",
            )],
        );
    }
    check(
        "[kafka.options]\nlinger.ms = 5\nsocket.keepalive.enable = true\n",
        &[
            (
                "kafka.options.linger",
                "is a table; quote property names that contain dots: \"linger.ms\" = 5",
            ),
            ("kafka.options.socket", "\"socket.keepalive.enable\" = true"),
        ],
    );
    // Every problem at once, the good options kept in file order.
    let text = "[kafka.options]\n\"socket.keepalive.enable\" = true\nacks = 1\n\"client.id\" = \"x\"\n\"batch.num.messages\" = 1000\n\"api.version.request\" = false\n";
    check(
        text,
        &[
            ("kafka.options.acks", "cannot be changed"),
            ("kafka.options.\"client.id\"", "use kafka.client_id"),
        ],
    );
    let good = text
        .replace("acks = 1\n", "")
        .replace("\"client.id\" = \"x\"\n", "");
    assert_eq!(
        p(&good).unwrap().kafka.options,
        [
            ("socket.keepalive.enable".to_string(), "true".to_string()),
            ("batch.num.messages".to_string(), "1000".to_string()),
            ("api.version.request".to_string(), "false".to_string()),
        ]
    );
    // An inline table keeps its order too.
    let c = p("[kafka]\noptions = { \"z.a\" = 1, \"a.z\" = 2 }\n").unwrap();
    assert_eq!(
        c.kafka.options,
        [("z.a".into(), "1".into()), ("a.z".into(), "2".into())]
    );
}

#[test]
fn spool_key_messages() {
    check(
        "[spool]\ndir = \"/x\"\npath = \" \"\n",
        &[
            (
                "spool.dir",
                "unknown field `dir`, expected one of `path`, `max_bytes`, `sync_interval`",
            ),
            ("spool.path", "must not be empty"),
        ],
    );
    check(
        "[spool]\nsync_interval = \"61s\"\n",
        &[(
            "spool.sync_interval",
            "\"61s\" is too long; accepted: 0s to 1m",
        )],
    );
    check(
        "[spool]\nsync_interval = \"often\"\n",
        &[("spool.sync_interval", "\"often\" is not a duration")],
    );
    let c = p("[spool]\nsync_interval = \"1m\"\n").unwrap();
    assert_eq!(c.spool.sync_interval, Duration::from_secs(60));
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
    // In file order, not sorted.
    assert_eq!(
        c.kafka.options,
        [
            ("linger.ms".to_string(), "20".to_string()),
            ("socket.keepalive.enable".to_string(), "true".to_string()),
            ("debug".to_string(), "broker".to_string()),
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
            // The options in file order.
            (
                "kafka.options.\"bootstrap.servers\"",
                "use bus.brokers instead",
            ),
            ("kafka.options.\"enable.auto.commit\"", "cannot be changed"),
            (
                "kafka.options.\"max.in.flight.requests.per.connection\"",
                "at most 5",
            ),
            ("kafka.options.Linger", "not a librdkafka property"),
            ("kafka.options.\"fetch.wait.max.ms\"", "must be a string"),
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
    assert_eq!(Secret::File(f.clone()).resolve().unwrap(), "s3cret");
    std::fs::write(&f, "s3cret\r\n\n").unwrap();
    assert_eq!(Secret::File(f.clone()).resolve().unwrap(), "s3cret");
    std::fs::write(&f, " two words \n").unwrap();
    assert_eq!(Secret::File(f.clone()).resolve().unwrap(), " two words ");
    let missing = dir.path().join("absent");
    let e = Secret::File(missing.clone()).resolve().unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(e.to_string().contains(missing.to_str().unwrap()), "{e}");
    let e = Secret::Env("NORMWATCH_TEST_UNSET_VARIABLE".into())
        .resolve()
        .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    assert!(e.to_string().contains("NORMWATCH_TEST_UNSET_VARIABLE"));
    assert_eq!(format!("{s:?}"), "Inline(***)");
    assert_eq!(format!("{:?}", Secret::Env("PW".into())), "Env(\"PW\")");
    assert_eq!(format!("{:?}", Secret::File("/pw".into())), "File(\"/pw\")");
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
    assert_eq!(c.detect.baseline_factor, 3.0);
    assert_eq!(c.detect.scan_idle, Duration::from_secs(3600));
    let c = p("[detect]\nbaseline_factor = 4.5\nbaseline_warmup = \"10m\"\namplification_bps = 5000000\nimpairment_window = \"8s\"\nscan_ports = 20\nscan_idle = \"2h\"\nexfil_bytes = 5000000000\nexfil_window = \"1d\"\ncarpet_min_addresses = 32\n").unwrap();
    assert_eq!(c.detect.baseline_factor, 4.5);
    assert_eq!(c.detect.baseline_warmup, Duration::from_secs(600));
    assert_eq!(c.detect.amplification_bps, 5_000_000);
    assert_eq!(c.detect.impairment_window, Duration::from_secs(8));
    assert_eq!(c.detect.scan_ports, 20);
    assert_eq!(c.detect.scan_addresses, 8);
    assert_eq!(c.detect.scan_idle, Duration::from_secs(7200));
    assert_eq!(c.detect.exfil_bytes, 5_000_000_000);
    assert_eq!(c.detect.exfil_window, Duration::from_secs(86_400));
    assert_eq!(c.detect.carpet_min_addresses, 32);
    check(
        "[detect]\nbaseline_factor = 0.5\namplification_share = 0.0\nimpairment_window = \"1m\"\nscan_ports = 0\ncarpet_min_addresses = 1\nscan_idle = 5\n",
        &[
            ("detect.scan_idle", "write a duration as a string"),
            ("detect.baseline_factor", "out of range"),
            ("detect.amplification_share", "out of range"),
            ("detect.impairment_window", "out of range"),
            ("detect.scan_ports", "out of range"),
            ("detect.carpet_min_addresses", "out of range"),
        ],
    );
    check(
        "[detect]\nlateness = \"0s\"\nsyn_half_open_share = 1.5\nrules = []\n",
        &[
            ("detect.rules", "unknown field"),
            ("detect.lateness", "out of range"),
            ("detect.syn_half_open_share", "out of range"),
        ],
    );
}

#[test]
fn report_interval_defaults_to_100ms_and_0s_turns_interim_reports_off() {
    assert_eq!(
        p("").unwrap().sensor.report_interval,
        Some(Duration::from_millis(100))
    );
    assert_eq!(
        p("[sensor]\nreport_interval = \"250ms\"\n")
            .unwrap()
            .sensor
            .report_interval,
        Some(Duration::from_millis(250))
    );
    assert_eq!(
        p("[sensor]\nreport_interval = \"0s\"\n")
            .unwrap()
            .sensor
            .report_interval,
        None
    );
    check(
        "[sensor]\nreport_interval = \"5ms\"\n",
        &[(
            "sensor.report_interval",
            "\"5ms\" is out of range; accepted: 10ms to 60s",
        )],
    );
    check(
        "[sensor]\nreport_interval = \"often\"\n",
        &[("sensor.report_interval", "\"often\" is not a duration")],
    );
}

#[test]
fn capture_ring_size_and_filter() {
    let c = p("").unwrap();
    assert_eq!(c.capture.ring_size, 32 << 20);
    assert_eq!(c.capture.filter, None);
    assert_eq!(c.capture.threads, 1);
    assert_eq!(p("[capture]\nthreads = 2\n").unwrap().capture.threads, 2);
    // `tcpdump -ddd tcp` on Ethernet, as printed and as one line with commas.
    let ddd = "8\n40 0 0 12\n21 0 2 34525\n48 0 0 20\n21 3 4 6\n21 0 3 2048\n48 0 0 23\n21 0 1 6\n6 0 0 262144\n6 0 0 0\n";
    let Err(_) = p(&format!("[capture]\nfilter = \"\"\"\n{ddd}\"\"\"\n")) else {
        panic!("a count of 8 with 9 instructions must be refused");
    };
    let ddd = ddd.replacen("8\n", "9\n", 1);
    let c = p(&format!(
        "[capture]\nring_size = \"256MiB\"\nfilter = \"\"\"\n{ddd}\"\"\"\n"
    ))
    .unwrap();
    assert_eq!(c.capture.ring_size, 256 << 20);
    let f = c.capture.filter.unwrap();
    assert_eq!(f.len(), 9);
    assert_eq!(
        f[1],
        BpfInstruction {
            code: 21,
            jt: 0,
            jf: 2,
            k: 34525
        }
    );
    let one_line = ddd.trim_end().replace('\n', ",");
    let c = p(&format!(
        "[capture]\nring_size = 8388608\nfilter = \"{one_line}\"\n"
    ))
    .unwrap();
    assert_eq!(c.capture.filter.unwrap(), f);
    assert_eq!(c.capture.ring_size, 8 << 20);
}

#[test]
fn capture_ring_size_and_filter_errors() {
    check(
        "[capture]\nring_size = \"1MiB\"\nfilter = \"tcp port 80\"\n",
        &[
            (
                "capture.ring_size",
                "1048576 bytes is out of range; accepted: 4MiB to 16GiB",
            ),
            (
                "capture.filter",
                "not an instruction count; write the output of `tcpdump -ddd",
            ),
        ],
    );
    check(
        "[capture]\nring_size = \"lots\"\nfilter = \"2,6 0 0 65535,6 0 0 x\"\n",
        &[
            ("capture.ring_size", "is not a size"),
            (
                "capture.filter",
                "instruction 2 (\"6 0 0 x\") is not four numbers",
            ),
        ],
    );
    check(
        "[capture]\nfilter = \"1,40 0 0 12\"\n",
        &[("capture.filter", "does not end with a return instruction")],
    );
    check(
        "[capture]\nfilter = \"2,6 0 0 0\"\n",
        &[("capture.filter", "says 2 instructions but has 1")],
    );
    check(
        "[capture]\nfilter = \" \"\nring_size = 17179869185\nthreads = 0\n",
        &[
            ("capture.ring_size", "out of range"),
            ("capture.filter", "is empty"),
            ("capture.threads", "0 is out of range; accepted: 1 to 64"),
        ],
    );
    check(
        "[capture]\nfilter = \"1,6 0 256 0\"\n",
        &[(
            "capture.filter",
            "instruction 1 (\"6 0 256 0\") is not four numbers",
        )],
    );
    // Every problem carries the file's name and the key.
    let Err(e) = p("[capture]\nring_size = 1\n") else {
        panic!("accepted a 1-byte ring");
    };
    assert!(
        e.to_string()
            .contains("test.toml: capture.ring_size: 1 bytes is out of range"),
        "{e}"
    );
}

#[test]
fn detect_reflectors_default_to_the_built_in_catalogue_and_a_named_file_replaces_it() {
    let c = p("").unwrap();
    assert_eq!(c.detect.reflectors, reflectors::Reflectors::built_in());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("refl.toml"),
        "[[reflector]]\nproto = \"udp\"\nport = 9999\nname = \"Example\"\n",
    )
    .unwrap();
    let c = parse(
        "[detect]\nreflectors = \"refl.toml\"\n",
        &dir.path().join("normwatch.toml"),
    )
    .unwrap();
    assert_eq!(c.detect.reflectors.list().len(), 1);
    assert_eq!(c.detect.reflectors.lookup(reflectors::UDP, 9999), Some(0));
    let e = parse(
        "[detect]\nreflectors = \"missing.toml\"\n",
        &dir.path().join("normwatch.toml"),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("detect.reflectors"), "{e}");
}

#[test]
fn detect_default_limits_apply_until_the_baseline_is_learned_and_are_validated() {
    let d = p("").unwrap().detect;
    assert_eq!(
        (d.default_pps, d.default_bps, d.default_new_flows),
        (20_000, 1_000_000_000, 3_500)
    );
    let d = p("[detect]\ndefault_pps = 50000\ndefault_new_flows = 800\n")
        .unwrap()
        .detect;
    assert_eq!((d.default_pps, d.default_new_flows), (50_000, 800));
    check(
        "[detect]\ndefault_bps = 0\n",
        &[("detect.default_bps", "out of range")],
    );
}
