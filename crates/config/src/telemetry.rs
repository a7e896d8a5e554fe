//! `[telemetry]`: where the metrics endpoint listens and how logs are written, both stages.

use crate::diag::Diagnostics;
use crate::raw::join_key;
use serde::Deserialize;
use std::net::SocketAddr;

/// The default metrics address: loopback only, so nothing is exposed without a decision.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9464";

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Validated `[telemetry]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// Where `/metrics`, `/healthz` and `/readyz` are served; `None`: not served.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether the address was written in the file (a bind failure is then an error rather
    /// than a warning).
    pub metrics_listen_explicit: bool,
    pub log_format: LogFormat,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        TelemetryConfig {
            metrics_listen: DEFAULT_METRICS_LISTEN.parse().ok(),
            metrics_listen_explicit: false,
            log_format: LogFormat::Human,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTelemetry {
    metrics_listen: Option<String>,
    log_format: Option<String>,
}

impl RawTelemetry {
    pub(crate) fn validate(self, d: &mut Diagnostics) -> TelemetryConfig {
        let mut t = TelemetryConfig::default();
        if let Some(s) = self.metrics_listen {
            t.metrics_listen_explicit = true;
            if s == "off" {
                t.metrics_listen = None;
            } else {
                match s.parse::<SocketAddr>() {
                    Ok(a) => t.metrics_listen = Some(a),
                    Err(_) => d.push(
                        join_key("telemetry", "metrics_listen"),
                        format!(
                            "{s:?} is not an address:port; write e.g. \"127.0.0.1:9464\" or \"[::1]:9464\", or \"off\""
                        ),
                    ),
                }
            }
        }
        if let Some(s) = self.log_format {
            match s.as_str() {
                "human" => t.log_format = LogFormat::Human,
                "json" => t.log_format = LogFormat::Json,
                _ => d.push(
                    join_key("telemetry", "log_format"),
                    format!("{s:?} is not a log format; accepted: \"human\", \"json\""),
                ),
            }
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<crate::Config, String> {
        crate::parse(text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_to_loopback_and_human_logs() {
        let c = parse("").unwrap();
        assert_eq!(
            c.telemetry.metrics_listen,
            Some(DEFAULT_METRICS_LISTEN.parse().unwrap())
        );
        assert!(!c.telemetry.metrics_listen_explicit);
        assert_eq!(c.telemetry.log_format, LogFormat::Human);
    }

    #[test]
    fn reads_address_off_and_json() {
        let c =
            parse("[telemetry]\nmetrics_listen = \"[::1]:9100\"\nlog_format = \"json\"\n").unwrap();
        assert_eq!(
            c.telemetry.metrics_listen,
            Some("[::1]:9100".parse().unwrap())
        );
        assert!(c.telemetry.metrics_listen_explicit);
        assert_eq!(c.telemetry.log_format, LogFormat::Json);
        let off = parse("[telemetry]\nmetrics_listen = \"off\"\n").unwrap();
        assert_eq!(off.telemetry.metrics_listen, None);
    }

    #[test]
    fn every_bad_key_is_reported() {
        let e =
            parse("[telemetry]\nmetrics_listen = \"localhost\"\nlog_format = \"xml\"\nport = 3\n")
                .unwrap_err();
        assert!(
            e.contains("t.toml: telemetry.metrics_listen: \"localhost\" is not an address:port"),
            "{e}"
        );
        assert!(
            e.contains("telemetry.log_format: \"xml\" is not a log format"),
            "{e}"
        );
        assert!(e.contains("telemetry.port"), "{e}");
    }
}
