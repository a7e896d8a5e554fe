//! `[exporters]`: flow exports from routers and switches (NetFlow v5/v9, IPFIX, sFlow v5)
//! received by the sensor beside, or instead of, captured packets; both stages.
//!
//! ```toml
//! [exporters]
//! listen = ["0.0.0.0:2055", "[::]:6343"]   # UDP; every protocol is accepted on each
//! sampling_rate = 1                         # assumed when an exporter announces none
//! template_wait = "10s"                     # data held this long for its template
//! receive_buffer_bytes = 8388608            # per socket (the kernel may cap it)
//! max_sessions = 4096                       # exporter sessions tracked at once
//! max_exporter_bytes = 4194304              # memory bound per exporter (templates, held data)
//! max_agent_bytes = 8388608                 # memory bound per sFlow agent (its flow tables)
//! max_total_bytes = 268435456               # memory bound for all of them together
//!
//! [[exporters.device]]                      # a device that samples without saying so
//! address = "192.0.2.1"
//! sampling_rate = 1000
//! ```

use crate::diag::Diagnostics;
use crate::raw::{fields, join_key};
use crate::validate::{duration, in_range};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A device whose sampling rate is configured rather than announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExporterDevice {
    pub address: IpAddr,
    /// One in `sampling_rate` packets is exported; wins over what the device announces.
    pub sampling_rate: u32,
}

/// Validated `[exporters]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportersConfig {
    /// UDP addresses to receive exports on; empty: no listener.
    pub listen: Vec<SocketAddr>,
    /// Rate assumed when an exporter announces none (1), 1 to 2^24.
    pub sampling_rate: u32,
    /// How long data waits for its template (10 s), 1 s to 10 min.
    pub template_wait: Duration,
    /// Kernel receive buffer asked for per socket (8 MiB), 64 KiB to 1 GiB.
    pub receive_buffer_bytes: usize,
    /// Exporter sessions tracked at once (4096), 1 to 1 000 000.
    pub max_sessions: usize,
    /// Bytes one exporter session may hold (4 MiB), 64 KiB to 1 GiB.
    pub max_exporter_bytes: usize,
    /// Bytes one sFlow agent's flow tables may hold (8 MiB), 64 KiB to 1 GiB.
    pub max_agent_bytes: usize,
    /// Bytes all exporter sessions and sFlow tables may hold (256 MiB), 1 MiB to 64 GiB,
    /// at least each of the two above.
    pub max_total_bytes: usize,
    pub devices: Vec<ExporterDevice>,
}

impl Default for ExportersConfig {
    fn default() -> Self {
        ExportersConfig {
            listen: Vec::new(),
            sampling_rate: 1,
            template_wait: Duration::from_secs(10),
            receive_buffer_bytes: 8 << 20,
            max_sessions: 4096,
            max_exporter_bytes: 4 << 20,
            max_agent_bytes: 8 << 20,
            max_total_bytes: 256 << 20,
            devices: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawExporters {
    listen: Vec<String>,
    sampling_rate: i64,
    template_wait: String,
    receive_buffer_bytes: i64,
    max_sessions: i64,
    max_exporter_bytes: i64,
    max_agent_bytes: i64,
    max_total_bytes: i64,
    /// Kept as values so that one malformed entry does not hide the others.
    device: Vec<toml::Value>,
}

impl Default for RawExporters {
    fn default() -> Self {
        RawExporters {
            listen: Vec::new(),
            sampling_rate: 1,
            template_wait: "10s".into(),
            receive_buffer_bytes: 8 << 20,
            max_sessions: 4096,
            max_exporter_bytes: 4 << 20,
            max_agent_bytes: 8 << 20,
            max_total_bytes: 256 << 20,
            device: Vec::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawDevice {
    address: Option<String>,
    sampling_rate: Option<i64>,
}

const RATE_MAX: i64 = 1 << 24;

impl RawExporters {
    pub(crate) fn validate(self, d: &mut Diagnostics) -> ExportersConfig {
        let key = |k: &str| join_key("exporters", k);
        let mut c = ExportersConfig::default();
        for (i, s) in self.listen.iter().enumerate() {
            match s.parse::<SocketAddr>() {
                Ok(a) if c.listen.contains(&a) => d.push(
                    format!("exporters.listen[{i}]"),
                    format!("{s:?} is listed twice"),
                ),
                Ok(a) => c.listen.push(a),
                Err(_) => d.push(
                    format!("exporters.listen[{i}]"),
                    format!(
                        "{s:?} is not an address:port; write e.g. \"0.0.0.0:2055\" or \"[::]:6343\""
                    ),
                ),
            }
        }
        if let Some(r) = in_range(self.sampling_rate, 1, RATE_MAX, &key("sampling_rate"), d) {
            c.sampling_rate = r as u32;
        }
        if let Some(w) = duration(&self.template_wait, &key("template_wait"), d) {
            if w < Duration::from_secs(1) || w > Duration::from_secs(600) {
                d.push(
                    key("template_wait"),
                    format!(
                        "{:?} is out of range; accepted: 1s to 10m",
                        self.template_wait
                    ),
                );
            } else {
                c.template_wait = w;
            }
        }
        if let Some(b) = in_range(
            self.receive_buffer_bytes,
            64 << 10,
            1 << 30,
            &key("receive_buffer_bytes"),
            d,
        ) {
            c.receive_buffer_bytes = b as usize;
        }
        if let Some(n) = in_range(self.max_sessions, 1, 1_000_000, &key("max_sessions"), d) {
            c.max_sessions = n as usize;
        }
        let exporter = in_range(
            self.max_exporter_bytes,
            64 << 10,
            1 << 30,
            &key("max_exporter_bytes"),
            d,
        );
        let agent = in_range(
            self.max_agent_bytes,
            64 << 10,
            1 << 30,
            &key("max_agent_bytes"),
            d,
        );
        let total = in_range(
            self.max_total_bytes,
            1 << 20,
            64 << 30,
            &key("max_total_bytes"),
            d,
        );
        if let (Some(e), Some(a), Some(t)) = (exporter, agent, total) {
            if t < e.max(a) {
                d.push(
                    key("max_total_bytes"),
                    format!(
                        "{t} is less than max_exporter_bytes ({e}) or max_agent_bytes ({a}); the total bounds them all"
                    ),
                );
            } else {
                c.max_exporter_bytes = e as usize;
                c.max_agent_bytes = a as usize;
                c.max_total_bytes = t as usize;
            }
        }
        for (i, v) in self.device.iter().enumerate() {
            let path = format!("exporters.device[{i}]");
            let Some(t) = v.as_table() else {
                d.push(
                    path,
                    format!(
                        "must be a table (write each as [[exporters.device]]), found {}",
                        v.type_str()
                    ),
                );
                continue;
            };
            let raw = fields::<RawDevice>(t, &path, None, d);
            let address = match raw.address {
                None => {
                    d.push(join_key(&path, "address"), "is required");
                    None
                }
                Some(s) => match s.parse::<IpAddr>() {
                    Ok(a) if c.devices.iter().any(|x| x.address == a) => {
                        d.push(
                            join_key(&path, "address"),
                            format!("{s:?} is configured twice"),
                        );
                        None
                    }
                    Ok(a) => Some(a),
                    Err(_) => {
                        d.push(
                            join_key(&path, "address"),
                            format!("{s:?} is not an IP address"),
                        );
                        None
                    }
                },
            };
            let rate = match raw.sampling_rate {
                None => {
                    d.push(join_key(&path, "sampling_rate"), "is required");
                    None
                }
                Some(r) => in_range(r, 1, RATE_MAX, &join_key(&path, "sampling_rate"), d),
            };
            if let (Some(address), Some(rate)) = (address, rate) {
                c.devices.push(ExporterDevice {
                    address,
                    sampling_rate: rate as u32,
                });
            }
        }
        c
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
    fn absent_means_no_listener_and_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.exporters, ExportersConfig::default());
        assert!(c.exporters.listen.is_empty());
    }

    #[test]
    fn reads_every_key() {
        let c = parse(
            "[exporters]\nlisten = [\"127.0.0.1:2055\", \"[::1]:6343\"]\nsampling_rate = 10\n\
             template_wait = \"30s\"\nreceive_buffer_bytes = 1048576\nmax_sessions = 16\n\
             max_exporter_bytes = 65536\nmax_agent_bytes = 131072\nmax_total_bytes = 1048576\n\
             [[exporters.device]]\naddress = \"192.0.2.1\"\nsampling_rate = 1000\n",
        )
        .unwrap();
        let e = c.exporters;
        assert_eq!(
            e.listen,
            vec![
                "127.0.0.1:2055".parse::<SocketAddr>().unwrap(),
                "[::1]:6343".parse().unwrap()
            ]
        );
        assert_eq!(e.sampling_rate, 10);
        assert_eq!(e.template_wait, Duration::from_secs(30));
        assert_eq!((e.receive_buffer_bytes, e.max_sessions), (1 << 20, 16));
        assert_eq!(
            (e.max_exporter_bytes, e.max_agent_bytes, e.max_total_bytes),
            (64 << 10, 128 << 10, 1 << 20)
        );
        assert_eq!(
            e.devices,
            vec![ExporterDevice {
                address: "192.0.2.1".parse().unwrap(),
                sampling_rate: 1000
            }]
        );
    }

    #[test]
    fn every_bad_key_is_reported_with_its_path() {
        let e = parse(
            "[exporters]\nlisten = [\"localhost:2055\", \"127.0.0.1:1\", \"127.0.0.1:1\"]\n\
             sampling_rate = 0\ntemplate_wait = \"1h\"\nreceive_buffer_bytes = 10\n\
             max_sessions = 0\nport = 1\nmax_exporter_bytes = 1\n\
             [[exporters.device]]\naddress = \"router\"\nsampling_rate = -1\n\
             [[exporters.device]]\nrate = 3\n",
        )
        .unwrap_err();
        for want in [
            "t.toml: exporters.listen[0]: \"localhost:2055\" is not an address:port",
            "exporters.listen[2]: \"127.0.0.1:1\" is listed twice",
            "exporters.sampling_rate",
            "exporters.template_wait: \"1h\" is out of range",
            "exporters.receive_buffer_bytes",
            "exporters.max_sessions",
            "exporters.max_exporter_bytes",
            "exporters.port",
            "exporters.device[0].address: \"router\" is not an IP address",
            "exporters.device[0].sampling_rate",
            "exporters.device[1].rate",
            "exporters.device[1].address: is required",
            "exporters.device[1].sampling_rate: is required",
        ] {
            assert!(e.contains(want), "missing {want:?} in:\n{e}");
        }
    }
}

#[cfg(test)]
mod bound_tests {
    #[test]
    fn a_total_below_one_exporter_is_refused() {
        let e = crate::parse(
            "[exporters]\nmax_exporter_bytes = 8388608\nmax_total_bytes = 4194304\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("exporters.max_total_bytes: 4194304 is less than"),
            "{e}"
        );
    }
}
