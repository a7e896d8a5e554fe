//! `[bus]`, `[kafka]` and `[spool]`: how stages talk, the Kafka client, and the sensor's disk
//! queue. Raw structs (stage one) and their validation (stage two) live together here.

use crate::diag::Diagnostics;
use crate::raw::fields;
use crate::validate::{duration, in_range, DURATION_HINT};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `bus.kind`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BusKind {
    /// Every stage in one process over the in-process bus (the default).
    #[default]
    Memory,
    /// Stages in separate processes through Kafka.
    Kafka,
}

/// One topic (`[bus.topics.flows]` and so on).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicConfig {
    pub name: String,
    /// Partitions when normwatch creates the topic.
    pub partitions: u32,
    /// Replication factor when normwatch creates the topic.
    pub replication: u16,
}

/// `[bus.topics]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topics {
    pub flows: TopicConfig,
    pub alerts: TopicConfig,
    pub evidence: TopicConfig,
}

impl Default for Topics {
    fn default() -> Self {
        let t = |name: &str, partitions| TopicConfig {
            name: name.into(),
            partitions,
            replication: 1,
        };
        Topics {
            flows: t("normwatch.flows", 8),
            alerts: t("normwatch.alerts", 4),
            evidence: t("normwatch.evidence", 1),
        }
    }
}

/// `[bus]`: how stages talk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BusConfig {
    pub kind: BusKind,
    /// Kafka bootstrap servers (`host:port`); required when `kind` is kafka.
    pub brokers: Vec<String>,
    /// In-process bus: batches queued per topic before publishers wait (1024).
    pub capacity: usize,
    /// Most flow records in one batch message (4096).
    pub batch_records: usize,
    /// Longest a record waits in a partly filled batch (20 ms: an alert follows the packets).
    pub batch_linger: Duration,
    pub topics: Topics,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Memory,
            brokers: Vec::new(),
            capacity: 1024,
            batch_records: 4096,
            batch_linger: Duration::from_millis(20),
            topics: Topics::default(),
        }
    }
}

/// `kafka.compression`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    #[default]
    Lz4,
    Zstd,
}

/// `kafka.sasl.mechanism`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    /// The librdkafka spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `[kafka.tls]`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// CA bundle (PEM) that verifies brokers; `None`: the system's roots.
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS; both or neither.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// File holding the password of an encrypted key.
    pub key_password_file: Option<PathBuf>,
}

/// Where a secret comes from: `password`, `password_file` or `password_env`.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    Inline(String),
    File(PathBuf),
    Env(String),
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Inline(_) => f.write_str("Inline(***)"),
            Secret::File(p) => f.debug_tuple("File").field(p).finish(),
            Secret::Env(v) => f.debug_tuple("Env").field(v).finish(),
        }
    }
}

impl Secret {
    /// The secret's value (a file's trailing line break removed).
    pub fn resolve(&self) -> std::io::Result<String> {
        match self {
            Secret::Inline(s) => Ok(s.clone()),
            Secret::File(p) => std::fs::read_to_string(p)
                .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
                .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
            Secret::Env(v) => std::env::var(v).map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("environment variable {v} is not set"),
                )
            }),
        }
    }
}

/// `[kafka.sasl]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaslConfig {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: Secret,
}

/// `[kafka]`: the Kafka client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaConfig {
    pub client_id: String,
    /// Consumer group of the detectors.
    pub group_id: String,
    pub compression: Compression,
    /// How long the producer retries a batch before it goes to the spool (30 s).
    pub delivery_timeout: Duration,
    pub tls: Option<TlsConfig>,
    pub sasl: Option<SaslConfig>,
    /// Other librdkafka properties, passed through in file order.
    pub options: Vec<(String, String)>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            client_id: "normwatch".into(),
            group_id: "normwatch-detect".into(),
            compression: Compression::Lz4,
            delivery_timeout: Duration::from_secs(30),
            tls: None,
            sasl: None,
            options: Vec::new(),
        }
    }
}

impl KafkaConfig {
    /// librdkafka's `security.protocol` for the configured TLS and SASL.
    pub fn security_protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "plaintext",
            (true, false) => "ssl",
            (false, true) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        }
    }
}

/// `[spool]`: the sensor's disk queue for batches the broker could not take.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpoolConfig {
    /// Directory; relative paths are relative to the configuration file's directory.
    pub path: PathBuf,
    /// Most bytes kept; when full, the oldest batches are dropped and counted (1 GiB).
    pub max_bytes: u64,
    /// How often spooled data is forced to disk while being written (1 s).
    pub sync_interval: Duration,
}

impl Default for SpoolConfig {
    fn default() -> Self {
        SpoolConfig {
            path: PathBuf::from("/var/lib/normwatch/spool"),
            max_bytes: 1 << 30,
            sync_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawBus {
    kind: Option<String>,
    brokers: Option<String>,
    capacity: Option<i64>,
    batch_records: Option<i64>,
    batch_linger: Option<String>,
    topics: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTopics {
    flows: toml::Table,
    alerts: toml::Table,
    evidence: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTopic {
    name: Option<String>,
    partitions: Option<i64>,
    replication: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawKafka {
    client_id: Option<String>,
    group_id: Option<String>,
    compression: Option<String>,
    delivery_timeout: Option<String>,
    tls: Option<toml::Table>,
    sasl: Option<toml::Table>,
    options: toml::Table,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTls {
    ca: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    key_password_file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawSasl {
    mechanism: Option<String>,
    username: Option<String>,
    password: Option<String>,
    password_file: Option<String>,
    password_env: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawSpool {
    path: Option<String>,
    max_bytes: Option<toml::Value>,
    sync_interval: Option<String>,
}

fn is_topic_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 249
        && s != "."
        && s != ".."
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The type-error hint for a key of `[bus]`, `[kafka]`, `[spool]` or `[detect]`: durations get
/// the duration hint, other keys none.
pub(crate) fn hint(key: &str) -> Option<&'static str> {
    matches!(
        key,
        "batch_linger"
            | "delivery_timeout"
            | "sync_interval"
            | "lateness"
            | "quiet_period"
            | "update_interval"
            | "baseline_warmup"
            | "baseline_window"
            | "impairment_window"
            | "scan_idle"
            | "exfil_window"
    )
    .then_some(DURATION_HINT)
}

/// Checks one `host:port` (an IPv6 host in brackets).
fn broker_problem(b: &str) -> Option<String> {
    let Some((host, port)) = b.rsplit_once(':') else {
        return Some(format!(
            "{b:?} has no port; write host:port, e.g. \"kafka-1:9092\""
        ));
    };
    let digits = !port.is_empty() && port.bytes().all(|c| c.is_ascii_digit());
    match port.parse::<u32>() {
        Ok(p) if digits && (1..=65_535).contains(&p) => {}
        _ => return Some(format!("{b:?}: the port must be a number from 1 to 65535")),
    }
    let host_ok = if let Some(inner) = host.strip_prefix('[') {
        inner
            .strip_suffix(']')
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    } else {
        !host.is_empty()
            && !host.contains(':')
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
    };
    if host_ok {
        None
    } else {
        Some(format!(
            "{b:?}: {host:?} is not a host name or address (write IPv6 addresses in brackets)"
        ))
    }
}

/// Resolves `p` against `base` unless it is absolute.
pub(crate) fn resolve(base: &Path, p: &str) -> PathBuf {
    let p = PathBuf::from(p);
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// The directory relative paths in `origin` are resolved against.
pub(crate) fn base_dir(origin: &Path) -> PathBuf {
    match origin.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Parses a byte size: an integer, or a string such as "512MiB" or "1 GB" (`parse-size`: K, M,
/// G, T are powers of 1000, Ki, Mi, Gi, Ti powers of 1024; case and the `B` are optional).
pub(crate) fn byte_size(v: &toml::Value, key: &str, d: &mut Diagnostics) -> Option<u64> {
    const HINT: &str = "write a size as bytes (65536) or a string with a unit, e.g. \"512MiB\" or \"1 GB\" (B; KB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024)";
    let bytes = match v {
        toml::Value::Integer(i) => u64::try_from(*i).ok(),
        // A size too large for u64 is a size all the same: the range check names it.
        toml::Value::String(s) => match parse_size::parse_size(s.trim()) {
            Ok(b) => Some(b),
            Err(parse_size::Error::PosOverflow) => Some(u64::MAX),
            Err(_) => None,
        },
        _ => None,
    };
    if bytes.is_none() {
        d.push(key, format!("{v} is not a size; {HINT}"));
    }
    bytes
}

impl RawBus {
    pub(crate) fn validate(self, d: &mut Diagnostics) -> BusConfig {
        let dflt = BusConfig::default();
        let kind = match self.kind.as_deref() {
            None | Some("memory") => BusKind::Memory,
            Some("kafka") => BusKind::Kafka,
            Some(other) => {
                d.push("bus.kind", format!("{other:?} is not one of memory, kafka"));
                BusKind::Memory
            }
        };
        let mut brokers = Vec::new();
        let list = self.brokers.as_deref().map_or("", str::trim);
        if !list.is_empty() {
            if list.split(',').any(|b| b.trim().is_empty()) {
                d.push(
                    "bus.brokers",
                    format!(
                        "{list:?} has an empty entry; separate host:port pairs with single commas"
                    ),
                );
            }
            for b in list.split(',').map(str::trim).filter(|b| !b.is_empty()) {
                match broker_problem(b) {
                    Some(p) => d.push("bus.brokers", p),
                    None => brokers.push(b.to_string()),
                }
            }
        } else if kind == BusKind::Kafka {
            let what = if self.brokers.is_some() {
                "is empty"
            } else {
                "is missing"
            };
            d.push(
                "bus.brokers",
                format!("{what}; with kind = \"kafka\" list the bootstrap servers, e.g. brokers = \"kafka-1:9092,kafka-2:9092\""),
            );
        }
        let capacity = self
            .capacity
            .and_then(|v| in_range(v, 1, 1_000_000, "bus.capacity", d))
            .map_or(dflt.capacity, |v| v as usize);
        let batch_records = self
            .batch_records
            .and_then(|v| in_range(v, 1, 1_000_000, "bus.batch_records", d))
            .map_or(dflt.batch_records, |v| v as usize);
        let batch_linger = match self.batch_linger.as_deref() {
            None => dflt.batch_linger,
            Some(s) => match duration(s, "bus.batch_linger", d) {
                Some(v) if v > Duration::from_secs(60) => {
                    d.push(
                        "bus.batch_linger",
                        format!("{s:?} is too long; accepted: 0s to 60s"),
                    );
                    dflt.batch_linger
                }
                Some(v) => v,
                None => dflt.batch_linger,
            },
        };
        let raw: RawTopics = fields(&self.topics, "bus.topics", None, d);
        let topics = Topics {
            flows: topic(&raw.flows, "flows", dflt.topics.flows, d),
            alerts: topic(&raw.alerts, "alerts", dflt.topics.alerts, d),
            evidence: topic(&raw.evidence, "evidence", dflt.topics.evidence, d),
        };
        let names = [
            &topics.flows.name,
            &topics.alerts.name,
            &topics.evidence.name,
        ];
        for (i, which) in ["alerts", "evidence"].iter().enumerate() {
            if names[..=i].contains(&names[i + 1]) {
                d.push(
                    format!("bus.topics.{which}.name"),
                    format!(
                        "{:?} is already used by another topic; each topic needs its own name",
                        names[i + 1]
                    ),
                );
            }
        }
        BusConfig {
            kind,
            brokers,
            capacity,
            batch_records,
            batch_linger,
            topics,
        }
    }
}

fn topic(t: &toml::Table, which: &str, dflt: TopicConfig, d: &mut Diagnostics) -> TopicConfig {
    let key = format!("bus.topics.{which}");
    let raw: RawTopic = fields(t, &key, None, d);
    let name = match raw.name {
        Some(n) if is_topic_name(&n) => n,
        Some(n) => {
            d.push(
                format!("{key}.name"),
                format!("{n:?} is not a valid Kafka topic name; use 1 to 249 letters, digits, '.', '_' or '-'"),
            );
            dflt.name
        }
        None => dflt.name,
    };
    let partitions = raw
        .partitions
        .and_then(|v| in_range(v, 1, 10_000, &format!("{key}.partitions"), d))
        .map_or(dflt.partitions, |v| v as u32);
    let replication = raw
        .replication
        .and_then(|v| in_range(v, 1, 32, &format!("{key}.replication"), d))
        .map_or(dflt.replication, |v| v as u16);
    TopicConfig {
        name,
        partitions,
        replication,
    }
}

/// librdkafka properties normwatch sets itself, and the key that sets each.
const MANAGED: &[(&str, &str)] = &[
    ("bootstrap.servers", "bus.brokers"),
    ("metadata.broker.list", "bus.brokers"),
    ("client.id", "kafka.client_id"),
    ("group.id", "kafka.group_id"),
    ("compression.type", "kafka.compression"),
    ("compression.codec", "kafka.compression"),
    ("message.timeout.ms", "kafka.delivery_timeout"),
    ("delivery.timeout.ms", "kafka.delivery_timeout"),
    ("security.protocol", "[kafka.tls] and [kafka.sasl]"),
    ("ssl.ca.location", "kafka.tls.ca"),
    ("ssl.certificate.location", "kafka.tls.cert"),
    ("ssl.key.location", "kafka.tls.key"),
    ("ssl.key.password", "kafka.tls.key_password_file"),
    ("sasl.mechanism", "kafka.sasl.mechanism"),
    ("sasl.mechanisms", "kafka.sasl.mechanism"),
    ("sasl.username", "kafka.sasl.username"),
    ("sasl.password", "kafka.sasl.password"),
];

/// Parts of a librdkafka property name that mark its value as secret: every property
/// librdkafka itself flags `_RK_SENSITIVE` (librdkafka 2.12: `sasl.password`,
/// `sasl.username`, `sasl.oauthbearer.client.secret`, `sasl.oauthbearer.config`,
/// `sasl.oauthbearer.assertion.private.key.{file,passphrase,pem}`, `ssl.key.password`,
/// `ssl.key.pem`, `ssl.key.location`, `ssl_key`, `ssl.keystore.password`, `ssl.ca.pem`)
/// matches one, and so do properties of later versions named the same way.
pub const SENSITIVE_PATTERNS: &[&str] = &[
    "password",
    "passphrase",
    "secret",
    "token",
    "credential",
    "private",
    ".pem",
    "ssl_key",
    "ssl.key",
    "sasl.username",
    "sasl.oauthbearer.config",
];

/// Whether a librdkafka property's value may be a secret, never to be shown in a log or
/// an error message.
pub fn is_sensitive_option(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SENSITIVE_PATTERNS.iter().any(|p| key.contains(p))
}

/// Properties that would break the delivery guarantees, and why.
const GUARANTEES: &[(&str, &str)] = &[
    (
        "enable.idempotence",
        "the producer is always idempotent, so a retried batch is written once",
    ),
    (
        "acks",
        "every batch waits for all in-sync replicas (acks=all)",
    ),
    (
        "request.required.acks",
        "every batch waits for all in-sync replicas (acks=all)",
    ),
    (
        "enable.auto.commit",
        "offsets are committed only after a batch is processed",
    ),
    (
        "enable.auto.offset.store",
        "offsets are stored only after a batch is processed",
    ),
    (
        "transactional.id",
        "normwatch does not use transactions; duplicates are dropped by sequence number",
    ),
    ("isolation.level", "normwatch does not use transactions"),
];

/// `kafka.client_id` and `kafka.group_id`: printable ASCII, not starting or ending in a space.
fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.trim() == s && s.chars().all(|c| c == ' ' || c.is_ascii_graphic())
}

/// A portable environment variable name: a letter or '_', then letters, digits or '_'.
fn is_env_name(s: &str) -> bool {
    let mut c = s.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// For `linger.ms = 5` written without quotes (TOML reads a table `linger = { ms = 5 }`): the
/// dotted name and value meant, if the table is such a chain of single keys.
fn unquoted_dotted(k: &str, v: &toml::Value) -> Option<(String, String)> {
    let mut name = k.to_string();
    let mut v = v;
    while let toml::Value::Table(t) = v {
        let mut entries = t.iter();
        let ((k, inner), None) = (entries.next()?, entries.next()) else {
            return None;
        };
        name = format!("{name}.{k}");
        v = inner;
    }
    // Only tables, and only when the value at the end is one a property can take.
    (name.len() > k.len() && option_value(v).is_some()).then(|| (name, v.to_string()))
}

fn option_value(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

impl RawKafka {
    /// `from_text`: the options as [`options_from_text`] found them, used instead of the
    /// table's when present.
    pub(crate) fn validate(
        self,
        base: &Path,
        from_text: Option<Vec<(String, toml::Value)>>,
        d: &mut Diagnostics,
    ) -> KafkaConfig {
        let dflt = KafkaConfig::default();
        let ident = |v: Option<String>, key: &str, dflt: String, d: &mut Diagnostics| match v {
            Some(s) if is_ident(&s) => s,
            Some(s) => {
                d.push(
                    key,
                    format!("{s:?} must be non-empty printable ASCII, without leading or trailing spaces"),
                );
                dflt
            }
            None => dflt,
        };
        let client_id = ident(self.client_id, "kafka.client_id", dflt.client_id, d);
        let group_id = ident(self.group_id, "kafka.group_id", dflt.group_id, d);
        let compression = match self.compression.as_deref() {
            None | Some("lz4") => Compression::Lz4,
            Some("zstd") => Compression::Zstd,
            Some(other) => {
                d.push(
                    "kafka.compression",
                    format!("{other:?} is not one of lz4, zstd"),
                );
                Compression::Lz4
            }
        };
        let delivery_timeout = match self.delivery_timeout.as_deref() {
            None => dflt.delivery_timeout,
            Some(s) => match duration(s, "kafka.delivery_timeout", d) {
                Some(v) if v >= Duration::from_secs(1) && v <= Duration::from_secs(3600) => v,
                Some(_) => {
                    d.push(
                        "kafka.delivery_timeout",
                        format!("{s:?} is out of range; accepted: 1s to 1h"),
                    );
                    dflt.delivery_timeout
                }
                None => dflt.delivery_timeout,
            },
        };
        let tls = self.tls.map(|t| {
            let raw: RawTls = fields(&t, "kafka.tls", None, d);
            if raw.cert.is_some() != raw.key.is_some() {
                let missing = if raw.cert.is_some() { "key" } else { "cert" };
                d.push(
                    format!("kafka.tls.{missing}"),
                    "is missing; a client certificate needs its key (cert and key go together)",
                );
            } else if raw.key.is_none() && raw.key_password_file.is_some() {
                d.push(
                    "kafka.tls.key_password_file",
                    "decrypts kafka.tls.key, which is not set; add cert and key or remove it",
                );
            }
            let mut path = |v: Option<String>, name: &str| match v {
                Some(p) if p.trim().is_empty() => {
                    d.push(
                        format!("kafka.tls.{name}"),
                        "must not be empty; give a path or remove the key",
                    );
                    None
                }
                v => v.map(|p| resolve(base, &p)),
            };
            TlsConfig {
                ca: path(raw.ca, "ca"),
                cert: path(raw.cert, "cert"),
                key: path(raw.key, "key"),
                key_password_file: path(raw.key_password_file, "key_password_file"),
            }
        });
        let sasl = self.sasl.and_then(|t| {
            let raw: RawSasl = fields(&t, "kafka.sasl", None, d);
            let mechanism = match raw.mechanism.as_deref() {
                Some("PLAIN") => Some(SaslMechanism::Plain),
                Some("SCRAM-SHA-256") => Some(SaslMechanism::ScramSha256),
                Some("SCRAM-SHA-512") => Some(SaslMechanism::ScramSha512),
                Some(other) => {
                    d.push(
                        "kafka.sasl.mechanism",
                        format!("{other:?} is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"),
                    );
                    None
                }
                None => {
                    d.push("kafka.sasl.mechanism", "is missing; one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512");
                    None
                }
            };
            let username = match raw.username {
                Some(u) if !u.is_empty() => Some(u),
                _ => {
                    d.push("kafka.sasl.username", "is missing or empty");
                    None
                }
            };
            let given = [
                raw.password.is_some(),
                raw.password_file.is_some(),
                raw.password_env.is_some(),
            ];
            let secret = match (raw.password, raw.password_file, raw.password_env) {
                (Some(p), _, _) if p.is_empty() => {
                    d.push("kafka.sasl.password", "must not be empty");
                    None
                }
                (Some(p), _, _) => Some(Secret::Inline(p)),
                (_, Some(p), _) if p.trim().is_empty() => {
                    d.push("kafka.sasl.password_file", "must not be empty; give the path of a file holding the password");
                    None
                }
                (_, Some(p), _) => Some(Secret::File(resolve(base, &p))),
                (_, _, Some(v)) if !is_env_name(&v) => {
                    d.push(
                        "kafka.sasl.password_env",
                        format!("{v:?} is not an environment variable name; use letters, digits and '_', not starting with a digit, e.g. \"NORMWATCH_KAFKA_PASSWORD\""),
                    );
                    None
                }
                (_, _, v) => v.map(Secret::Env),
            };
            let password = match given.iter().filter(|g| **g).count() {
                0 => {
                    d.push("kafka.sasl", "needs the password: one of password, password_file, password_env");
                    None
                }
                1 => secret,
                _ => {
                    d.push("kafka.sasl", "give the password one way only: password, password_file or password_env");
                    None
                }
            };
            if mechanism == Some(SaslMechanism::Plain) && tls.is_none() {
                d.push(
                    "kafka.sasl.mechanism",
                    "PLAIN without [kafka.tls] would send the password in clear; add [kafka.tls] or use SCRAM-SHA-256/512",
                );
            }
            Some(SaslConfig {
                mechanism: mechanism?,
                username: username?,
                password: password?,
            })
        });
        let mut options = Vec::new();
        let entries = from_text.unwrap_or_else(|| self.options.into_iter().collect());
        for (k, v) in &entries {
            let key = crate::raw::join_key("kafka.options", k);
            if k.is_empty()
                || !k
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_'))
            {
                d.push(
                    key,
                    "is not a librdkafka property name (lowercase words joined by '.')",
                );
                continue;
            }
            if let Some((_, instead)) = MANAGED.iter().find(|(p, _)| p == k) {
                d.push(key, format!("is set by normwatch; use {instead} instead"));
                continue;
            }
            if let Some((_, why)) = GUARANTEES.iter().find(|(p, _)| p == k) {
                d.push(key, format!("cannot be changed: {why}"));
                continue;
            }
            let Some(value) = option_value(v) else {
                let msg = match unquoted_dotted(k, v) {
                    Some((name, _)) if is_sensitive_option(&name) => format!(
                        "is a table; quote property names that contain dots: \"{name}\" = (value not shown: it is secret)"
                    ),
                    Some((name, value)) => format!(
                        "is a table; quote property names that contain dots: \"{name}\" = {value}"
                    ),
                    None if is_sensitive_option(k) => format!(
                        "a {} must be a string, an integer or a boolean (value not shown: it is secret)",
                        v.type_str()
                    ),
                    None => format!("{v} must be a string, an integer or a boolean"),
                };
                d.push(key, msg);
                continue;
            };
            if matches!(
                k.as_str(),
                "max.in.flight.requests.per.connection" | "max.in.flight"
            ) && value.parse::<u64>().is_ok_and(|n| n > 5)
            {
                d.push(
                    key,
                    format!("{value} is too many: the idempotent producer allows at most 5"),
                );
                continue;
            }
            options.push((k.clone(), value));
        }
        KafkaConfig {
            client_id,
            group_id,
            compression,
            delivery_timeout,
            tls,
            sasl,
            options,
        }
    }
}

/// A table's entries in the order the text has them.
#[derive(Default)]
struct Entries(Vec<(String, toml::Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        de.deserialize_map(InOrder)
    }
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct OptionsProbe {
    kafka: KafkaOptionsProbe,
}

#[derive(Default, Deserialize)]
#[serde(default)]
struct KafkaOptionsProbe {
    options: Option<Entries>,
}

/// `[kafka.options]` read from the text straight into serde, which keeps the document's order
/// and TOML's own types (a [`toml::Table`] sorts its keys, and a date passed through one comes
/// out a string). `None` when the text has no such table or it is not a table.
pub(crate) fn options_from_text(text: &str) -> Option<Vec<(String, toml::Value)>> {
    let probe: OptionsProbe = toml::from_str(text).ok()?;
    probe.kafka.options.map(|e| e.0)
}

impl RawSpool {
    pub(crate) fn validate(self, base: &Path, d: &mut Diagnostics) -> SpoolConfig {
        let dflt = SpoolConfig::default();
        let path = match self.path {
            Some(p) if p.trim().is_empty() => {
                d.push("spool.path", "must not be empty");
                dflt.path
            }
            Some(p) => resolve(base, &p),
            None => dflt.path,
        };
        let max_bytes = match &self.max_bytes {
            None => dflt.max_bytes,
            Some(v) => match byte_size(v, "spool.max_bytes", d) {
                Some(b) if (64 << 10..=16u64 << 40).contains(&b) => b,
                Some(b) => {
                    d.push(
                        "spool.max_bytes",
                        format!("{b} bytes is out of range; accepted: 64KiB to 16TiB"),
                    );
                    dflt.max_bytes
                }
                None => dflt.max_bytes,
            },
        };
        let sync_interval = match self.sync_interval.as_deref() {
            None => dflt.sync_interval,
            Some(s) => match duration(s, "spool.sync_interval", d) {
                Some(v) if v <= Duration::from_secs(60) => v,
                Some(_) => {
                    d.push(
                        "spool.sync_interval",
                        format!("{s:?} is too long; accepted: 0s to 1m"),
                    );
                    dflt.sync_interval
                }
                None => dflt.sync_interval,
            },
        };
        SpoolConfig {
            path,
            max_bytes,
            sync_interval,
        }
    }
}

#[cfg(test)]
mod secret_tests {
    fn err(text: &str) -> String {
        crate::parse(text, std::path::Path::new("t.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_password_written_as_a_number_is_not_echoed() {
        let e = err("[bus]\nkind = \"kafka\"\nbrokers = \"127.0.0.1:9092\"\n[kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"u\"\npassword = 987654321\n");
        assert!(e.contains("password"), "{e}");
        assert!(!e.contains("987654321"), "{e}");
    }

    #[test]
    fn a_secret_option_of_the_wrong_type_is_not_echoed() {
        let e = err("[kafka.options]\n\"sasl.oauthbearer.client.secret\" = 1.234567\n");
        assert!(e.contains("sasl.oauthbearer.client.secret"), "{e}");
        assert!(!e.contains("1.234567"), "{e}");
        let e = err("[kafka.options]\nsasl.oauthbearer.client.secret = \"hush-123\"\n");
        assert!(!e.contains("hush-123"), "{e}");
    }
}
