//! normwatch configuration: a TOML file read in two stages, every problem reported at once.
//!
//! Stage one (module `raw`) checks the file's shape: the text is parsed into a TOML table (a
//! syntax error is the one problem reported alone, with line and column), then each section
//! and each `[[asset]]` is deserialized on its own, key by key, into raw structs that deny
//! unknown keys. Stage two (`validate`) turns raw strings and integers into typed settings
//! and checks the rules that span keys and assets. Each problem names the file and the key
//! path (`asset[2].cidrs[0]`, `sensor.timeouts.tcp_idle`) and says what is accepted.
//!
//! Architecture Invariant: this crate reads the one file given to [`load`], and a secret's file
//! or environment variable only when its user calls [`Secret::resolve`]; nothing else touches
//! the outside world; [`parse`] is pure.

mod bus;
mod detect;
mod diag;
mod exporters;
pub mod norms;
mod raw;
pub mod reflectors;
mod telemetry;
mod validate;

pub use bus::{
    is_sensitive_option, BusConfig, BusKind, Compression, KafkaConfig, SaslConfig, SaslMechanism,
    Secret, SpoolConfig, TlsConfig, TopicConfig, Topics, SENSITIVE_PATTERNS,
};
pub use detect::DetectConfig;
pub use diag::{ConfigError, Diagnostic, Diagnostics};
pub use exporters::{ExporterDevice, ExportersConfig};
pub use telemetry::{LogFormat, TelemetryConfig, DEFAULT_METRICS_LISTEN};

use ipnet::IpNet;
use normwatch_model::{Asset, AssetIndex};
use raw::{fields, fields_with, join_key, RawAsset, RawCapture, RawFile, RawSensor};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Whether packets with bad checksums are dropped (`sensor.checksums`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ChecksumPolicy {
    /// Drop (and count) packets whose IP, TCP, UDP or ICMP checksum is wrong, as Zeek does
    /// without `-C`. The default.
    #[default]
    Verify,
    /// Keep every packet (captures from hosts with checksum offload; `zeek -C`).
    Ignore,
}

/// Flow-table timeouts (`[sensor.timeouts]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// A TCP connection with no packet for this long ends (5 min).
    pub tcp_idle: Duration,
    /// Likewise for UDP (1 min).
    pub udp_idle: Duration,
    /// Likewise for ICMP (1 min).
    pub icmp_idle: Duration,
    /// Likewise for every other protocol (1 min).
    pub other_idle: Duration,
    /// Long connections are reported every `active` (30 min); `None` never ("0s").
    pub active: Option<Duration>,
    /// An unanswered SYN is given up after this (5 s). Never longer than `tcp_idle`.
    pub tcp_attempt: Duration,
    /// A closed or reset TCP connection is kept this long for late packets (5 s). Never
    /// longer than `tcp_idle`.
    pub tcp_linger: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_idle: Duration::from_secs(5 * 60),
            udp_idle: Duration::from_secs(60),
            icmp_idle: Duration::from_secs(60),
            other_idle: Duration::from_secs(60),
            active: Some(Duration::from_secs(30 * 60)),
            tcp_attempt: Duration::from_secs(5),
            tcp_linger: Duration::from_secs(5),
        }
    }
}

/// `[sensor]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SensorConfig {
    /// Names the sensor in every record ("normwatch-sensor"): 1 to 64 of `[A-Za-z0-9._-]`.
    pub id: Arc<str>,
    /// Most connections tracked at once (1 000 000), 1 to 100 000 000.
    pub max_flows: usize,
    /// Whether packets with bad checksums are dropped (verify).
    pub checksums: ChecksumPolicy,
    /// Prefixes whose packets skip checksum verification (none).
    pub ignore_checksum_nets: Vec<IpNet>,
    /// Ports marking the server side of a connection seen mid-stream; `None` means the
    /// sensor's built-in list.
    pub likely_server_ports: Option<Vec<u16>>,
    /// Flows with traffic since their last record are reported this often (100 ms), while
    /// they go on, so the detector hears of an attack as it happens; `None` ("0s"): only when
    /// flows end. 10 ms to 60 s.
    pub report_interval: Option<Duration>,
    /// While more TCP SYNs a second than this would start connections (10 000), a SYN from
    /// a source not seen before is held as a one-packet attempt and counted into one record
    /// per responder address and port and report interval, becoming a flow of its own only
    /// when answered or when its source sends again: a random-source SYN flood costs neither
    /// a flow nor a record per forged packet. `None` (0): every connection is its own flow.
    /// Only with interim reports; never in `normwatch flows` (one record per connection).
    pub aggregate_attempts_above: Option<u64>,
    pub timeouts: Timeouts,
}

impl Default for SensorConfig {
    fn default() -> Self {
        SensorConfig {
            id: Arc::from(raw::DEFAULT_SENSOR_ID),
            max_flows: raw::DEFAULT_MAX_FLOWS as usize,
            checksums: ChecksumPolicy::Verify,
            ignore_checksum_nets: Vec::new(),
            likely_server_ports: None,
            report_interval: Some(Duration::from_millis(100)),
            aggregate_attempts_above: Some(raw::DEFAULT_AGGREGATE_ATTEMPTS_ABOVE as u64),
            timeouts: Timeouts::default(),
        }
    }
}

/// `[capture]`: live capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    /// Packets buffered between a capture thread and the flow table (65 536), 1 to 2^24.
    /// Unused since live capture reads the kernel's ring in place (`ring_size` sizes the
    /// buffer); still accepted so existing files load.
    pub channel_capacity: usize,
    /// Bytes kept of each packet (65 535), 64 to 262 144.
    pub snaplen: u32,
    /// Whether the interface is put in promiscuous mode (true).
    pub promiscuous: bool,
    /// Bytes of the memory-mapped ring the kernel fills (32 MiB), 4 MiB to 16 GiB, in whole
    /// MiB blocks.
    pub ring_size: u64,
    /// A classic BPF program the kernel runs on every frame before it enters the ring
    /// (none: every frame).
    pub filter: Option<Vec<BpfInstruction>>,
    /// Capture threads, each with a ring and a flow table of its own (1), 1 to 64; with more
    /// than one the kernel spreads flows over them (`PACKET_FANOUT`, hash mode).
    pub threads: usize,
}

/// One classic BPF instruction (`struct sock_filter`): `code jt jf k`, as `tcpdump -ddd`
/// prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInstruction {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            channel_capacity: raw::DEFAULT_CHANNEL_CAPACITY as usize,
            snaplen: raw::DEFAULT_SNAPLEN as u32,
            promiscuous: true,
            ring_size: validate::DEFAULT_RING_SIZE,
            filter: None,
            threads: 1,
        }
    }
}

/// A validated configuration.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub sensor: SensorConfig,
    pub capture: CaptureConfig,
    /// Flow exports (NetFlow, IPFIX, sFlow) the sensor receives.
    pub exporters: ExportersConfig,
    /// How stages talk: the in-process bus or Kafka.
    pub bus: BusConfig,
    /// The Kafka client (used when `bus.kind` is kafka).
    pub kafka: KafkaConfig,
    /// The sensor's disk queue for batches the broker could not take.
    pub spool: SpoolConfig,
    /// The detector.
    pub detect: DetectConfig,
    /// The metrics endpoint and logs.
    pub telemetry: TelemetryConfig,
    /// `[evidence]` as written, validated by the evidence stage (`normwatch-evidence` owns
    /// those settings; relative paths there are taken from the file's directory).
    pub evidence: Option<toml::Table>,
    /// The protected assets, indexed by prefix. Empty is valid.
    pub assets: AssetIndex,
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = diag::read_file(path)?;
    parse(&text, path)
}

/// Validates configuration text; `origin` names it in diagnostics and in [`Config::source`].
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let mut d = Diagnostics::new(origin);
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            d.push("", syntax_message(text, &e));
            return Err(ConfigError::Invalid(d));
        }
    };
    let file: RawFile = fields(&table, "", None, &mut d);
    let sensor = fields::<RawSensor>(&file.sensor, "sensor", None, &mut d).validate(&mut d);
    let capture = fields::<RawCapture>(&file.capture, "capture", None, &mut d).validate(&mut d);
    let exporters = fields::<exporters::RawExporters>(&file.exporters, "exporters", None, &mut d)
        .validate(&mut d);
    let base = bus::base_dir(origin);
    let hint = bus::hint;
    let bus = fields_with::<bus::RawBus>(&file.bus, "bus", hint, &mut d).validate(&mut d);
    let kafka = fields_with::<bus::RawKafka>(&file.kafka, "kafka", hint, &mut d).validate(
        &base,
        bus::options_from_text(text),
        &mut d,
    );
    let spool =
        fields_with::<bus::RawSpool>(&file.spool, "spool", hint, &mut d).validate(&base, &mut d);
    let detect = fields_with::<detect::RawDetect>(&file.detect, "detect", hint, &mut d)
        .validate(&base, &mut d);
    let telemetry = fields::<telemetry::RawTelemetry>(&file.telemetry, "telemetry", None, &mut d)
        .validate(&mut d);
    let mut ids: Vec<(usize, String)> = Vec::new();
    let mut valid: Vec<(usize, Asset)> = Vec::new();
    for (i, v) in file.asset.iter().enumerate() {
        let key = format!("asset[{i}]");
        let Some(t) = v.as_table() else {
            d.push(
                key,
                format!(
                    "must be a table (write each asset as [[asset]]), found {}",
                    v.type_str()
                ),
            );
            continue;
        };
        let checked = fields::<RawAsset>(t, &key, None, &mut d).validate(&key, &mut d);
        ids.extend(checked.id.map(|id| (i, id)));
        valid.extend(checked.asset.map(|a| (i, a)));
    }
    check_unique_ids(&ids, &mut d);
    let assets = index(valid, &mut d);
    if !d.is_empty() {
        return Err(ConfigError::Invalid(d));
    }
    Ok(Config {
        sensor,
        capture,
        exporters,
        bus,
        kafka,
        spool,
        detect,
        telemetry,
        evidence: file.evidence,
        assets,
        source: Some(origin.to_path_buf()),
    })
}

fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    match e.span() {
        Some(span) => {
            let start = span.start.min(text.len());
            let before = text.get(..start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let line_start = before.rfind('\n').map_or(0, |p| p + 1);
            let col = before[line_start..].chars().count() + 1;
            format!("TOML syntax error at line {line}, column {col}: {msg}")
        }
        None => format!("TOML syntax error: {msg}"),
    }
}

fn check_unique_ids(ids: &[(usize, String)], d: &mut Diagnostics) {
    for (n, (i, id)) in ids.iter().enumerate() {
        if let Some((j, _)) = ids[..n].iter().find(|(_, other)| other == id) {
            d.push(
                format!("asset[{i}].id"),
                format!("{id:?} is already the id of asset[{j}]; asset ids must be unique"),
            );
        }
    }
}

/// Builds the prefix index; a prefix claimed by two assets is reported at the second claim.
fn index(valid: Vec<(usize, Asset)>, d: &mut Diagnostics) -> AssetIndex {
    let assets: Vec<Asset> = valid.iter().map(|(_, a)| a.clone()).collect();
    let dups = match AssetIndex::new(assets) {
        Ok(index) => return index,
        Err(dups) => dups,
    };
    // Where an asset claims `prefix`: (asset index in the file, position in its cidrs).
    let claim = |id: &str, prefix: IpNet| -> Vec<(usize, usize)> {
        valid
            .iter()
            .filter(|(_, a)| a.id.as_str() == id)
            .filter_map(|(i, a)| Some((*i, a.cidrs.iter().position(|n| *n == prefix)?)))
            .collect()
    };
    for dup in dups {
        let first = claim(dup.first.as_str(), dup.prefix).first().copied();
        let second = claim(dup.second.as_str(), dup.prefix).last().copied();
        match (first, second) {
            (Some((i, _)), Some((j, k))) if i != j => d.push(
                format!("asset[{j}].cidrs[{k}]"),
                format!(
                    "prefix {} is already claimed by asset[{i}] ({:?}); a prefix belongs to one asset only (nested prefixes are fine: the longest wins)",
                    dup.prefix, dup.first.as_str()
                ),
            ),
            _ => d.push(join_key("", "asset"), dup.to_string()),
        }
    }
    AssetIndex::default()
}

#[cfg(test)]
mod tests;

impl Config {
    /// The directory relative paths in the file are taken from (its own directory, or the
    /// working directory for built-in defaults).
    pub fn base_dir(&self) -> PathBuf {
        match &self.source {
            Some(p) => bus::base_dir(p),
            None => PathBuf::from("."),
        }
    }
}
