//! Stage one: the file's shape. Raw serde structs (strings and integers, unknown keys denied),
//! deserialized one key at a time so that each wrong key is reported under its own path and
//! the rest of the section is still checked.

use crate::diag::Diagnostics;
use serde::de::DeserializeOwned;
use serde::Deserialize;

/// The top level: which sections exist. Each is deserialized on its own afterwards.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawFile {
    pub sensor: toml::Table,
    pub capture: toml::Table,
    pub exporters: toml::Table,
    pub bus: toml::Table,
    pub kafka: toml::Table,
    pub spool: toml::Table,
    pub detect: toml::Table,
    pub telemetry: toml::Table,
    /// `[evidence]`, checked by the evidence stage (which owns its settings).
    pub evidence: Option<toml::Table>,
    /// Kept as values so that one malformed entry does not hide the others.
    pub asset: Vec<toml::Value>,
}

/// `[sensor]`. Defaults are the documented ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawSensor {
    pub id: String,
    pub max_flows: i64,
    pub checksums: String,
    pub ignore_checksum_nets: Vec<String>,
    pub likely_server_ports: Option<Vec<i64>>,
    pub report_interval: String,
    pub aggregate_attempts_above: i64,
    /// `[sensor.timeouts]`, deserialized separately into [`RawTimeouts`].
    pub timeouts: toml::Table,
}

pub(crate) const DEFAULT_SENSOR_ID: &str = "normwatch-sensor";
pub(crate) const DEFAULT_MAX_FLOWS: i64 = 1_000_000;
pub(crate) const DEFAULT_REPORT_INTERVAL: &str = "100ms";
pub(crate) const DEFAULT_AGGREGATE_ATTEMPTS_ABOVE: i64 = 10_000;
pub(crate) const DEFAULT_CHANNEL_CAPACITY: i64 = 65_536;
pub(crate) const DEFAULT_SNAPLEN: i64 = 65_535;

impl Default for RawSensor {
    fn default() -> Self {
        RawSensor {
            id: DEFAULT_SENSOR_ID.into(),
            max_flows: DEFAULT_MAX_FLOWS,
            checksums: "verify".into(),
            ignore_checksum_nets: Vec::new(),
            likely_server_ports: None,
            report_interval: DEFAULT_REPORT_INTERVAL.into(),
            aggregate_attempts_above: DEFAULT_AGGREGATE_ATTEMPTS_ABOVE,
            timeouts: toml::Table::new(),
        }
    }
}

/// `[sensor.timeouts]`: humantime durations ("5m", "300s", "1500ms").
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTimeouts {
    pub tcp_idle: String,
    pub udp_idle: String,
    pub icmp_idle: String,
    pub other_idle: String,
    pub active: String,
    pub tcp_attempt: String,
    pub tcp_linger: String,
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

/// `[capture]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawCapture {
    pub channel_capacity: i64,
    pub snaplen: i64,
    pub promiscuous: bool,
    /// An integer or a size string ("64MiB"), read in stage two.
    pub ring_size: Option<toml::Value>,
    pub filter: Option<String>,
    pub threads: i64,
}

impl Default for RawCapture {
    fn default() -> Self {
        RawCapture {
            channel_capacity: DEFAULT_CHANNEL_CAPACITY,
            snaplen: DEFAULT_SNAPLEN,
            promiscuous: true,
            ring_size: None,
            filter: None,
            threads: 1,
        }
    }
}

/// One `[[asset]]`. Required fields are options here so that a missing one is reported by
/// name in stage two alongside everything else wrong with the entry.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawAsset {
    pub id: Option<String>,
    pub name: Option<String>,
    pub operator: Option<String>,
    pub sector: Option<String>,
    pub service: Option<String>,
    pub cidrs: Option<Vec<String>>,
    pub roles: Vec<String>,
    pub service_ports: Vec<i64>,
    pub allow: Vec<String>,
    /// `[asset.thresholds]`, deserialized separately into [`RawThresholds`].
    pub thresholds: toml::Table,
}

/// `[asset.thresholds]` and its per-protocol tables.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawThresholds {
    pub pps: Option<i64>,
    pub bps: Option<i64>,
    pub new_flows_per_s: Option<i64>,
    pub tcp: toml::Table,
    pub udp: toml::Table,
    pub icmp: toml::Table,
}

/// `[asset.thresholds.tcp]` and the like.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRates {
    pub pps: Option<i64>,
    pub bps: Option<i64>,
    pub new_flows_per_s: Option<i64>,
}

/// Deserializes `T` from `table` key by key: a key that is unknown or of the wrong type is
/// reported as `path.key` (with serde's message, which lists the accepted keys) and left out;
/// the others make up the result. `hint` is appended to type errors.
pub(crate) fn fields<T: DeserializeOwned + Default>(
    table: &toml::Table,
    path: &str,
    hint: Option<&str>,
    d: &mut Diagnostics,
) -> T {
    fields_with(table, path, |_| hint, d)
}

/// [`fields`] with a hint chosen per key (`None`: the key's type errors get no hint), for
/// sections that mix durations with other kinds of value.
pub(crate) fn fields_with<'h, T: DeserializeOwned + Default>(
    table: &toml::Table,
    path: &str,
    hint: impl Fn(&str) -> Option<&'h str>,
    d: &mut Diagnostics,
) -> T {
    let mut good = toml::Table::new();
    for (k, v) in table {
        let one = toml::Table::from_iter([(k.clone(), v.clone())]);
        match T::deserialize(toml::Value::Table(one)) {
            Ok(_) => {
                good.insert(k.clone(), v.clone());
            }
            Err(e) => {
                let mut msg = e.message().trim().to_string();
                if crate::is_sensitive_option(k) {
                    msg = hide_quoted(&msg);
                }
                if let (Some(hint), true) = (hint(k), msg.starts_with("invalid type")) {
                    msg = format!("{msg}; {hint}");
                }
                d.push(join_key(path, k), msg);
            }
        }
    }
    // Every key left deserialized on its own, so together they do too.
    T::deserialize(toml::Value::Table(good)).unwrap_or_else(|e| {
        d.push(path, e.message().trim());
        T::default()
    })
}

/// serde's message without the value it quotes between backticks ("invalid type: integer
/// `12345`, expected a string"), for keys that hold secrets.
fn hide_quoted(msg: &str) -> String {
    let mut out = String::new();
    let mut parts = msg.split('`');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    for (i, p) in parts.enumerate() {
        if i % 2 == 0 {
            out.push_str("(value not shown: it is secret)");
        } else {
            out.push_str(p);
        }
    }
    out
}

/// `path.key`, quoting a key that is not a bare TOML key so the path reads unambiguously.
pub(crate) fn join_key(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}
