//! normwatch configuration: a TOML file read in two stages. Stage one deserializes each
//! section (and each `[[asset]]`) on its own into raw structs that reject unknown keys; stage
//! two validates every value into typed settings. All problems found are reported together,
//! each with the file and the key path (`asset[2].cidrs[0]`).

use ipnet::IpNet;
use normwatch_model::{Asset, AssetId, AssetIndex, Role, Sector};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Whether packets with bad checksums are dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChecksumPolicy {
    /// Drop (and count) packets whose IP or transport checksum is wrong, as Zeek does.
    Verify,
    /// Count every packet (for captures from hosts with checksum offload; `zeek -C`).
    Ignore,
}

/// Flow-table timeouts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timeouts {
    pub tcp_idle: Duration,
    pub udp_idle: Duration,
    pub icmp_idle: Duration,
    pub other_idle: Duration,
    /// Long flows are reported every `active`; `None` disables it.
    pub active: Option<Duration>,
    pub tcp_attempt: Duration,
    pub tcp_linger: Duration,
}

/// `[sensor]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SensorConfig {
    pub id: Arc<str>,
    pub max_flows: usize,
    pub checksums: ChecksumPolicy,
    pub ignore_checksum_nets: Vec<IpNet>,
    pub likely_server_ports: Option<Vec<u16>>,
    pub timeouts: Timeouts,
}

/// `[capture]`: live capture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaptureConfig {
    pub channel_capacity: usize,
    pub snaplen: u32,
    pub promiscuous: bool,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    pub sensor: SensorConfig,
    pub capture: CaptureConfig,
    pub assets: AssetIndex,
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        let mut d = Diagnostics::new(Path::new("<defaults>"));
        let sensor = RawSensor::default().validate(&mut d);
        let capture = RawCapture::default().validate(&mut d);
        debug_assert!(d.items.is_empty());
        Config {
            sensor,
            capture,
            assets: AssetIndex::default(),
            source: None,
        }
    }
}

/// One problem in a configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    /// Key path, e.g. `sensor.timeouts.tcp_idle` or `asset[1].cidrs[0]`; empty for the file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

/// Every problem found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostics {
    file: PathBuf,
    items: Vec<Diagnostic>,
}

impl Diagnostics {
    fn new(file: &Path) -> Self {
        Diagnostics {
            file: file.to_path_buf(),
            items: Vec::new(),
        }
    }

    fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.items.push(Diagnostic {
            file: self.file.clone(),
            key: key.into(),
            message: message.into(),
        });
    }

    /// The problems, in file order.
    pub fn iter(&self) -> impl Iterator<Item = &Diagnostic> {
        self.items.iter()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.items.len();
        writeln!(
            f,
            "{} problem{} in the configuration:",
            n,
            if n == 1 { "" } else { "s" }
        )?;
        for (i, d) in self.items.iter().enumerate() {
            if i + 1 < n {
                writeln!(f, "  {d}")?;
            } else {
                write!(f, "  {d}")?;
            }
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Diagnostics),
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

// ---- stage 1: raw structs -------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensor {
    #[serde(default = "default_id")]
    id: String,
    #[serde(default = "default_max_flows")]
    max_flows: i64,
    #[serde(default = "default_checksums")]
    checksums: String,
    #[serde(default)]
    ignore_checksum_nets: Vec<String>,
    #[serde(default)]
    likely_server_ports: Option<Vec<i64>>,
    /// Read on its own (see [`parse`]) so that its fields are checked one by one too.
    #[serde(skip)]
    timeouts: RawTimeouts,
}

fn default_id() -> String {
    "normwatch-sensor".into()
}
fn default_max_flows() -> i64 {
    1_000_000
}
fn default_checksums() -> String {
    "verify".into()
}

impl Default for RawSensor {
    fn default() -> Self {
        RawSensor {
            id: default_id(),
            max_flows: default_max_flows(),
            checksums: default_checksums(),
            ignore_checksum_nets: Vec::new(),
            likely_server_ports: None,
            timeouts: RawTimeouts::default(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTimeouts {
    tcp_idle: String,
    udp_idle: String,
    icmp_idle: String,
    other_idle: String,
    active: String,
    tcp_attempt: String,
    tcp_linger: String,
}

impl Default for RawTimeouts {
    fn default() -> Self {
        RawTimeouts {
            tcp_idle: "5m".into(),
            udp_idle: "1m".into(),
            icmp_idle: "1m".into(),
            other_idle: "1m".into(),
            active: "30m".into(),
            tcp_attempt: "5s".into(),
            tcp_linger: "5s".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawCapture {
    channel_capacity: i64,
    snaplen: i64,
    promiscuous: bool,
}

impl Default for RawCapture {
    fn default() -> Self {
        RawCapture {
            channel_capacity: 65_536,
            snaplen: 65_535,
            promiscuous: true,
        }
    }
}

/// Required fields are optional here so that a missing one is reported by validation,
/// with its key, next to every other problem of the asset.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAsset {
    id: Option<String>,
    name: Option<String>,
    operator: Option<String>,
    sector: Option<String>,
    service: Option<String>,
    cidrs: Option<Vec<String>>,
    roles: Vec<String>,
}

// ---- stage 2: validation --------------------------------------------------------------

const SECTIONS: &[&str] = &["sensor", "capture", "asset"];

/// Parses and validates configuration text; `origin` names it in diagnostics.
pub fn parse(text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let mut d = Diagnostics::new(origin);
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            d.push("", syntax_message(text, &e));
            return Err(ConfigError::Invalid(d));
        }
    };
    for key in table.keys() {
        if !SECTIONS.contains(&key.as_str()) {
            d.push(
                key.clone(),
                format!("unknown section; expected one of: {}", SECTIONS.join(", ")),
            );
        }
    }
    let mut raw_sensor = section::<RawSensor>(&table, "sensor", &mut d).unwrap_or_default();
    if let Some(t) = table.get("sensor").and_then(|s| s.get("timeouts")) {
        raw_sensor.timeouts = known_only(t, "sensor.timeouts", &mut d)
            .and_then(|t| from_value::<RawTimeouts>(t, "sensor.timeouts", &mut d))
            .unwrap_or_default();
    }
    let sensor = raw_sensor.validate(&mut d);
    let capture = section::<RawCapture>(&table, "capture", &mut d)
        .unwrap_or_default()
        .validate(&mut d);
    let assets: Vec<(usize, (String, Option<Asset>))> = match table.get("asset") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let key = format!("asset[{i}]");
                let raw = from_value::<RawAsset>(known_only(v, &key, &mut d)?, &key, &mut d)?;
                Some((i, raw.validate(&key, &mut d)))
            })
            .collect(),
        Some(_) => {
            d.push(
                "asset",
                "must be an array of tables: write each asset as [[asset]]",
            );
            Vec::new()
        }
    };
    let ids: Vec<(usize, &str)> = assets
        .iter()
        .map(|(i, (id, _))| (*i, id.as_str()))
        .collect();
    check_unique_ids(&ids, &mut d);
    let assets: Vec<Asset> = assets.into_iter().filter_map(|(_, (_, a))| a).collect();
    let index = match AssetIndex::new(assets) {
        Ok(i) => i,
        Err(dups) => {
            for dup in dups {
                d.push("asset", dup.to_string());
            }
            AssetIndex::default()
        }
    };
    if !d.is_empty() {
        return Err(ConfigError::Invalid(d));
    }
    Ok(Config {
        sensor,
        capture,
        assets: index,
        source: Some(origin.to_path_buf()),
    })
}

fn syntax_message(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim().to_string();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let col = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
            format!("TOML syntax error at line {line}, column {col}: {msg}")
        }
        None => format!("TOML syntax error: {msg}"),
    }
}

/// Keys each table accepts; unknown keys are reported one by one and left out, so the rest
/// of the table is still validated.
fn allowed_keys(key: &str) -> &'static [&'static str] {
    match key {
        "sensor" => &[
            "id",
            "max_flows",
            "checksums",
            "ignore_checksum_nets",
            "likely_server_ports",
            "timeouts",
        ],
        "sensor.timeouts" => &[
            "tcp_idle",
            "udp_idle",
            "icmp_idle",
            "other_idle",
            "active",
            "tcp_attempt",
            "tcp_linger",
        ],
        "capture" => &["channel_capacity", "snaplen", "promiscuous"],
        _ => &[
            "id", "name", "operator", "sector", "service", "cidrs", "roles",
        ],
    }
}

fn known_only(v: &toml::Value, key: &str, d: &mut Diagnostics) -> Option<toml::Value> {
    let Some(t) = v.as_table() else {
        d.push(key, "must be a table");
        return None;
    };
    let allowed = allowed_keys(key.split('[').next().unwrap_or(key));
    let mut out = toml::Table::new();
    for (k, v) in t {
        if !allowed.contains(&k.as_str()) {
            d.push(
                format!("{key}.{k}"),
                format!("unknown key; expected one of: {}", allowed.join(", ")),
            );
        } else if key == "sensor" && k == "timeouts" {
            // Read separately; see `parse`.
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    Some(toml::Value::Table(out))
}

fn section<T: DeserializeOwned + Default>(
    table: &toml::Table,
    name: &str,
    d: &mut Diagnostics,
) -> Option<T> {
    let v = known_only(table.get(name)?, name, d)?;
    from_value(v, name, d)
}

/// Deserializes a table; when that fails, each key is tried alone so that every bad value
/// is reported under its own key, and the good ones are still used.
fn from_value<T: DeserializeOwned + Default>(
    v: toml::Value,
    key: &str,
    d: &mut Diagnostics,
) -> Option<T> {
    let first_error = match T::deserialize(v.clone()) {
        Ok(t) => return Some(t),
        Err(e) => e,
    };
    let Some(table) = v.as_table() else {
        d.push(key, first_error.message().trim().replace('\n', " "));
        return None;
    };
    let mut good = toml::Table::new();
    for (k, val) in table {
        let mut one = toml::Table::new();
        one.insert(k.clone(), val.clone());
        match T::deserialize(toml::Value::Table(one)) {
            Ok(_) => {
                good.insert(k.clone(), val.clone());
            }
            Err(e) => d.push(format!("{key}.{k}"), e.message().trim().replace('\n', " ")),
        }
    }
    T::deserialize(toml::Value::Table(good))
        .ok()
        .or_else(|| Some(T::default()))
}

fn duration(s: &str, key: &str, d: &mut Diagnostics) -> Option<Duration> {
    match humantime::parse_duration(s) {
        Ok(v) => Some(v),
        Err(e) => {
            d.push(
                key,
                format!("{s:?} is not a duration ({e}); write e.g. \"90s\", \"5m\", \"1h\""),
            );
            None
        }
    }
}

fn in_range(v: i64, lo: i64, hi: i64, key: &str, d: &mut Diagnostics) -> Option<i64> {
    if (lo..=hi).contains(&v) {
        Some(v)
    } else {
        d.push(key, format!("{v} is out of range {lo}..={hi}"));
        None
    }
}

/// Parses a CIDR (or a bare address as a host route); host bits set is an error.
fn cidr(s: &str, key: &str, d: &mut Diagnostics) -> Option<IpNet> {
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => {
                d.push(
                    key,
                    format!(
                        "{s:?} is not a CIDR prefix (e.g. \"192.0.2.0/24\", \"2001:db8::/32\")"
                    ),
                );
                return None;
            }
        },
    };
    if net.trunc() != net {
        d.push(
            key,
            format!("{s} has host bits set; did you mean {}?", net.trunc()),
        );
        return None;
    }
    Some(net)
}

impl RawSensor {
    fn validate(self, d: &mut Diagnostics) -> SensorConfig {
        let id_ok = !self.id.is_empty()
            && self.id.len() <= 64
            && self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !id_ok {
            d.push(
                "sensor.id",
                format!(
                    "{:?}: use 1 to 64 letters, digits, '.', '_' or '-'",
                    self.id
                ),
            );
        }
        let max_flows = in_range(self.max_flows, 1, 100_000_000, "sensor.max_flows", d)
            .unwrap_or(default_max_flows()) as usize;
        let checksums = match self.checksums.as_str() {
            "verify" => ChecksumPolicy::Verify,
            "ignore" => ChecksumPolicy::Ignore,
            other => {
                d.push(
                    "sensor.checksums",
                    format!("{other:?} is not one of: verify, ignore"),
                );
                ChecksumPolicy::Verify
            }
        };
        let ignore_checksum_nets = self
            .ignore_checksum_nets
            .iter()
            .enumerate()
            .filter_map(|(i, s)| cidr(s, &format!("sensor.ignore_checksum_nets[{i}]"), d))
            .collect();
        let likely_server_ports = self.likely_server_ports.map(|ports| {
            ports
                .iter()
                .enumerate()
                .filter_map(|(i, p)| {
                    in_range(
                        *p,
                        1,
                        65_535,
                        &format!("sensor.likely_server_ports[{i}]"),
                        d,
                    )
                    .map(|p| p as u16)
                })
                .collect()
        });
        let t = &self.timeouts;
        let k = |n: &str| format!("sensor.timeouts.{n}");
        let mut positive = |s: &str, n: &str, dflt: u64| -> Duration {
            match duration(s, &k(n), d) {
                Some(v) if v.is_zero() => {
                    d.push(k(n), "must be longer than zero");
                    Duration::from_secs(dflt)
                }
                Some(v) => v,
                None => Duration::from_secs(dflt),
            }
        };
        let tcp_idle = positive(&t.tcp_idle, "tcp_idle", 300);
        let udp_idle = positive(&t.udp_idle, "udp_idle", 60);
        let icmp_idle = positive(&t.icmp_idle, "icmp_idle", 60);
        let other_idle = positive(&t.other_idle, "other_idle", 60);
        let tcp_attempt = positive(&t.tcp_attempt, "tcp_attempt", 5);
        let tcp_linger = positive(&t.tcp_linger, "tcp_linger", 5);
        let active = match duration(&t.active, &k("active"), d) {
            Some(v) if v.is_zero() => None,
            Some(v) if v < Duration::from_secs(1) => {
                d.push(k("active"), "must be at least 1s, or \"0s\" to disable");
                None
            }
            Some(v) => Some(v),
            None => None,
        };
        for (name, v) in [("tcp_attempt", tcp_attempt), ("tcp_linger", tcp_linger)] {
            if v > tcp_idle {
                d.push(k(name), "must not be longer than tcp_idle");
            }
        }
        SensorConfig {
            id: Arc::from(self.id.as_str()),
            max_flows,
            checksums,
            ignore_checksum_nets,
            likely_server_ports,
            timeouts: Timeouts {
                tcp_idle,
                udp_idle,
                icmp_idle,
                other_idle,
                active,
                tcp_attempt,
                tcp_linger,
            },
        }
    }
}

impl RawCapture {
    fn validate(self, d: &mut Diagnostics) -> CaptureConfig {
        CaptureConfig {
            channel_capacity: in_range(
                self.channel_capacity,
                1,
                16_777_216,
                "capture.channel_capacity",
                d,
            )
            .unwrap_or(65_536) as usize,
            snaplen: in_range(self.snaplen, 64, 262_144, "capture.snaplen", d).unwrap_or(65_535)
                as u32,
            promiscuous: self.promiscuous,
        }
    }
}

impl RawAsset {
    /// The asset if it is valid; its id either way (for the uniqueness check).
    fn validate(self, key: &str, d: &mut Diagnostics) -> (String, Option<Asset>) {
        let errors_before = d.len();
        let mut required = |field: &str, v: Option<String>| -> String {
            v.unwrap_or_else(|| {
                d.push(format!("{key}.{field}"), "missing (required)");
                String::new()
            })
        };
        let id = required("id", self.id);
        let name = required("name", self.name);
        let operator = required("operator", self.operator);
        let sector_text = required("sector", self.sector);
        let service = required("service", self.service);
        let cidr_texts = self.cidrs.unwrap_or_else(|| {
            d.push(
                format!("{key}.cidrs"),
                "missing (required): the asset's prefixes",
            );
            Vec::new()
        });
        if d.len() > errors_before {
            // Content checks on fields that are not there would only repeat the problem.
            return (id, None);
        }
        let id_ok = id.len() <= 64
            && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && id.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if !id_ok {
            d.push(
                format!("{key}.id"),
                format!(
                    "{id:?}: use 1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
                ),
            );
        }
        for (field, value) in [
            ("name", &name),
            ("operator", &operator),
            ("service", &service),
        ] {
            if value.trim().is_empty() {
                d.push(format!("{key}.{field}"), "must not be empty");
            }
        }
        let sector = Sector::parse(&sector_text);
        if sector.is_none() {
            d.push(
                format!("{key}.sector"),
                format!(
                    "{sector_text:?} is not one of: {}",
                    Sector::ALL.map(|s| s.as_str()).join(", ")
                ),
            );
        }
        if cidr_texts.is_empty() {
            d.push(format!("{key}.cidrs"), "needs at least one prefix");
        }
        let cidrs: Vec<IpNet> = cidr_texts
            .iter()
            .enumerate()
            .filter_map(|(i, s)| cidr(s, &format!("{key}.cidrs[{i}]"), d))
            .collect();
        let mut roles = Vec::new();
        for (i, r) in self.roles.iter().enumerate() {
            match Role::parse(r) {
                Some(role) if roles.contains(&role) => d.push(
                    format!("{key}.roles[{i}]"),
                    format!("{r:?} is listed twice"),
                ),
                Some(role) => roles.push(role),
                None => d.push(
                    format!("{key}.roles[{i}]"),
                    format!(
                        "{r:?} is not one of: {}",
                        Role::ALL.map(|r| r.as_str()).join(", ")
                    ),
                ),
            }
        }
        if d.len() > errors_before {
            return (id, None);
        }
        let asset = sector.map(|sector| Asset {
            id: AssetId(Arc::from(id.as_str())),
            name,
            operator,
            sector,
            service,
            cidrs,
            roles,
        });
        (id, asset)
    }
}

fn check_unique_ids(ids: &[(usize, &str)], d: &mut Diagnostics) {
    for (n, (i, id)) in ids.iter().enumerate() {
        if id.is_empty() {
            continue; // already reported as missing
        }
        if let Some((j, _)) = ids[..n].iter().find(|(_, other)| other == id) {
            d.push(
                format!("asset[{i}].id"),
                format!("{id:?} is already the id of asset[{j}]; ids must be unique"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("test.toml"))
    }

    fn diags(text: &str) -> Vec<(String, String)> {
        match p(text) {
            Err(ConfigError::Invalid(d)) => d
                .iter()
                .map(|x| (x.key.clone(), x.message.clone()))
                .collect(),
            other => panic!("expected diagnostics, got {other:?}"),
        }
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = p("").unwrap();
        assert_eq!(&*c.sensor.id, "normwatch-sensor");
        assert_eq!(c.sensor.max_flows, 1_000_000);
        assert_eq!(c.sensor.checksums, ChecksumPolicy::Verify);
        assert_eq!(c.sensor.timeouts.tcp_idle, Duration::from_secs(300));
        assert_eq!(c.sensor.timeouts.udp_idle, Duration::from_secs(60));
        assert_eq!(c.sensor.timeouts.active, Some(Duration::from_secs(1800)));
        assert_eq!(c.sensor.timeouts.tcp_attempt, Duration::from_secs(5));
        assert_eq!(c.capture.channel_capacity, 65_536);
        assert_eq!(c.capture.snaplen, 65_535);
        assert!(c.capture.promiscuous);
        assert!(c.assets.is_empty());
        let d = Config::default();
        assert_eq!(d.sensor, c.sensor);
        assert_eq!(d.capture, c.capture);
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let got = diags(
            r#"
[sensor]
colour = "blue"
[sensor.timeouts]
tcp_idle = "five minutes"

[extras]
x = 1

[[asset]]
id = "grid"
name = "Grid"
operator = "Op"
sector = "power"
service = "s"
cidrs = ["10.10.10.5/24"]

[[asset]]
id = "grid"
name = "Grid 2"
operator = "Op"
sector = "energy"
service = "s"
cidrs = ["10.20.0.0/16"]

[[asset]]
id = "grid"
name = "Grid 3"
operator = "Op"
sector = "energy"
service = "s"
cidrs = ["10.30.0.0/16"]
"#,
        );
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"extras"), "{got:?}");
        assert!(keys.contains(&"sensor.colour"), "{got:?}");
        assert!(keys.contains(&"sensor.timeouts.tcp_idle"), "{got:?}");
        assert!(keys.contains(&"asset[0].sector"), "{got:?}");
        assert!(keys.contains(&"asset[0].cidrs[0]"), "{got:?}");
        assert!(keys.contains(&"asset[1].id"), "{got:?}");
        assert!(keys.contains(&"asset[2].id"), "{got:?}");
        let msg = |k: &str| got.iter().find(|(key, _)| key == k).unwrap().1.clone();
        assert!(
            msg("sensor.colour").contains("expected one of: id, max_flows"),
            "{got:?}"
        );
        assert!(msg("asset[0].sector").contains("energy, water"));
        assert!(msg("asset[0].cidrs[0]").contains("did you mean 10.10.10.0/24"));
        assert!(msg("asset[1].id").contains("asset[0]"));
        assert!(msg("asset[2].id").contains("asset[0]"));
    }

    #[test]
    fn type_errors_are_reported_per_field_and_the_rest_still_checked() {
        let got = diags(
            "[sensor]\nmax_flows = \"x\"\nid = \"bad id!\"\nchecksums = 3\n[sensor.timeouts]\nactive = 5\ntcp_idle = \"1 fortnight\"\n[capture]\npromiscuous = \"yes\"\nsnaplen = 10\n",
        );
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        for k in [
            "sensor.max_flows",
            "sensor.checksums",
            "sensor.id",
            "sensor.timeouts.active",
            "sensor.timeouts.tcp_idle",
            "capture.promiscuous",
            "capture.snaplen",
        ] {
            assert!(keys.contains(&k), "{k} missing from {got:?}");
        }
    }

    #[test]
    fn missing_asset_fields_are_each_named() {
        let got = diags("[[asset]]\nid = \"a\"\ncidrs = \"10.0.0.0/8\"\n");
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        for k in [
            "asset[0].name",
            "asset[0].operator",
            "asset[0].sector",
            "asset[0].service",
            "asset[0].cidrs",
        ] {
            assert!(keys.contains(&k), "{k} missing from {got:?}");
        }
    }

    #[test]
    fn bad_duration_is_reported_with_its_key() {
        let got = diags("[sensor.timeouts]\ntcp_idle = \"five minutes\"\nudp_idle = \"0s\"\n");
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            ["sensor.timeouts.tcp_idle", "sensor.timeouts.udp_idle"]
        );
    }

    #[test]
    fn syntax_error_names_line_and_column() {
        let got = diags("[sensor]\nid = \"a\"\nmax_flows = = 3\n");
        assert_eq!(got.len(), 1);
        assert!(got[0].1.contains("line 3"), "{got:?}");
        assert!(got[0].1.contains("column"), "{got:?}");
    }

    #[test]
    fn same_prefix_on_two_assets_is_an_error() {
        let asset = |id: &str| {
            format!(
                "[[asset]]\nid = \"{id}\"\nname = \"n\"\noperator = \"o\"\nsector = \"water\"\nservice = \"s\"\ncidrs = [\"192.0.2.0/24\"]\n"
            )
        };
        let got = diags(&format!("{}{}", asset("a"), asset("b")));
        assert!(got[0].1.contains("192.0.2.0/24"), "{got:?}");
    }

    #[test]
    fn display_has_one_line_per_problem_with_file_and_key() {
        let Err(ConfigError::Invalid(d)) =
            p("[capture]\nsnaplen = 10\n[sensor]\nchecksums = \"maybe\"\n")
        else {
            panic!()
        };
        let text = d.to_string();
        assert!(
            text.contains("test.toml: sensor.checksums: \"maybe\" is not one of: verify, ignore"),
            "{text}"
        );
        assert!(
            text.contains("test.toml: capture.snaplen: 10 is out of range"),
            "{text}"
        );
    }

    #[test]
    fn bare_address_is_a_host_prefix() {
        let c = p("[[asset]]\nid = \"h\"\nname = \"n\"\noperator = \"o\"\nsector = \"health\"\nservice = \"s\"\ncidrs = [\"192.0.2.7\", \"2001:db8::1\"]\nroles = [\"public-service\"]\n").unwrap();
        let a = &c.assets.assets()[0];
        assert_eq!(a.cidrs[0].to_string(), "192.0.2.7/32");
        assert_eq!(a.cidrs[1].to_string(), "2001:db8::1/128");
        assert!(a.has_role(Role::PublicService));
    }
}
