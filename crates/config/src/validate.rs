//! Stage two: raw values into typed settings. Each check reports into the shared
//! [`Diagnostics`] and carries on with a stand-in value, so one mistake never hides another.

use crate::diag::Diagnostics;
use crate::raw::{
    fields, RawAsset, RawCapture, RawRates, RawSensor, RawThresholds, RawTimeouts,
    DEFAULT_AGGREGATE_ATTEMPTS_ABOVE, DEFAULT_CHANNEL_CAPACITY, DEFAULT_MAX_FLOWS, DEFAULT_SNAPLEN,
};
use crate::{BpfInstruction, CaptureConfig, ChecksumPolicy, SensorConfig, Timeouts};
use ipnet::IpNet;
use normwatch_model::{Asset, AssetId, Rates, Role, Sector, Thresholds};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub(crate) const DURATION_HINT: &str =
    "write a duration as a string such as \"1500ms\", \"90s\", \"5m\", \"1h\"";

/// Parses a humantime duration.
pub(crate) fn duration(s: &str, key: &str, d: &mut Diagnostics) -> Option<Duration> {
    match humantime::parse_duration(s) {
        Ok(v) => Some(v),
        Err(e) => {
            d.push(
                key,
                format!("{s:?} is not a duration ({e}); {DURATION_HINT}"),
            );
            None
        }
    }
}

pub(crate) fn in_range(v: i64, lo: i64, hi: i64, key: &str, d: &mut Diagnostics) -> Option<i64> {
    if (lo..=hi).contains(&v) {
        Some(v)
    } else {
        d.push(key, format!("{v} is out of range; accepted: {lo} to {hi}"));
        None
    }
}

/// Parses a CIDR prefix, or a bare address as a host prefix (/32, /128). Host bits set is an
/// error rather than silently truncated: "10.10.10.5/24" is more often a typo for a host than
/// a deliberate network.
pub(crate) fn cidr(s: &str, key: &str, d: &mut Diagnostics) -> Option<IpNet> {
    let net = match s.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match s.parse::<IpAddr>() {
            Ok(a) => IpNet::from(a),
            Err(_) => {
                d.push(
                    key,
                    format!(
                        "{s:?} is not a CIDR prefix or address; write e.g. \"192.0.2.0/24\", \"2001:db8::/32\" or \"192.0.2.7\""
                    ),
                );
                return None;
            }
        },
    };
    if net.trunc() != net {
        d.push(
            key,
            format!(
                "{s} has host bits set; did you mean {}? (or {} for the single host)",
                net.trunc(),
                IpNet::from(net.addr())
            ),
        );
        return None;
    }
    Some(net)
}

fn is_sensor_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn is_asset_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'))
}

impl RawSensor {
    pub(crate) fn validate(self, d: &mut Diagnostics) -> SensorConfig {
        if !is_sensor_id(&self.id) {
            d.push(
                "sensor.id",
                format!(
                    "{:?} is not a valid sensor id; use 1 to 64 letters, digits, '.', '_' or '-'",
                    self.id
                ),
            );
        }
        let max_flows = in_range(self.max_flows, 1, 100_000_000, "sensor.max_flows", d)
            .unwrap_or(DEFAULT_MAX_FLOWS) as usize;
        let checksums = match self.checksums.as_str() {
            "verify" => ChecksumPolicy::Verify,
            "ignore" => ChecksumPolicy::Ignore,
            other => {
                d.push(
                    "sensor.checksums",
                    format!("{other:?} is not one of verify, ignore"),
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
                    let key = format!("sensor.likely_server_ports[{i}]");
                    in_range(*p, 1, 65_535, &key, d).map(|p| p as u16)
                })
                .collect()
        });
        let report_interval = match duration(&self.report_interval, "sensor.report_interval", d) {
            Some(v) if v.is_zero() => None,
            Some(v) if v < Duration::from_millis(10) || v > Duration::from_secs(60) => {
                d.push(
                    "sensor.report_interval",
                    format!(
                        "{:?} is out of range; accepted: 10ms to 60s, or \"0s\" to report flows only when they end",
                        self.report_interval
                    ),
                );
                SensorConfig::default().report_interval
            }
            Some(v) => Some(v),
            None => SensorConfig::default().report_interval,
        };
        let aggregate_attempts_above = in_range(
            self.aggregate_attempts_above,
            0,
            1_000_000_000,
            "sensor.aggregate_attempts_above",
            d,
        )
        .unwrap_or(DEFAULT_AGGREGATE_ATTEMPTS_ABOVE);
        let raw: RawTimeouts = fields(&self.timeouts, "sensor.timeouts", Some(DURATION_HINT), d);
        SensorConfig {
            report_interval,
            aggregate_attempts_above: (aggregate_attempts_above > 0)
                .then_some(aggregate_attempts_above as u64),
            id: Arc::from(self.id.as_str()),
            max_flows,
            checksums,
            ignore_checksum_nets,
            likely_server_ports,
            timeouts: raw.validate(d),
        }
    }
}

impl RawTimeouts {
    fn validate(self, d: &mut Diagnostics) -> Timeouts {
        let key = |n: &str| format!("sensor.timeouts.{n}");
        let mut positive = |s: &str, n: &str| -> Option<Duration> {
            match duration(s, &key(n), d)? {
                v if v.is_zero() => {
                    d.push(key(n), format!("{s:?} must be longer than zero"));
                    None
                }
                v => Some(v),
            }
        };
        let tcp_idle = positive(&self.tcp_idle, "tcp_idle");
        let udp_idle = positive(&self.udp_idle, "udp_idle");
        let icmp_idle = positive(&self.icmp_idle, "icmp_idle");
        let other_idle = positive(&self.other_idle, "other_idle");
        let tcp_attempt = positive(&self.tcp_attempt, "tcp_attempt");
        let tcp_linger = positive(&self.tcp_linger, "tcp_linger");
        let active = match duration(&self.active, &key("active"), d) {
            Some(v) if v.is_zero() => None,
            Some(v) if v < Duration::from_secs(1) => {
                d.push(
                    key("active"),
                    format!(
                        "{:?} is too short; accepted: at least 1s, or \"0s\" to disable",
                        self.active
                    ),
                );
                None
            }
            v => v,
        };
        // Compared only when both sides are valid, so one bad value is one report.
        if let Some(idle) = tcp_idle {
            for (name, v) in [("tcp_attempt", tcp_attempt), ("tcp_linger", tcp_linger)] {
                if v.is_some_and(|v| v > idle) {
                    d.push(
                        key(name),
                        format!(
                            "must not be longer than tcp_idle ({})",
                            humantime::format_duration(idle)
                        ),
                    );
                }
            }
        }
        let dflt = Timeouts::default();
        Timeouts {
            tcp_idle: tcp_idle.unwrap_or(dflt.tcp_idle),
            udp_idle: udp_idle.unwrap_or(dflt.udp_idle),
            icmp_idle: icmp_idle.unwrap_or(dflt.icmp_idle),
            other_idle: other_idle.unwrap_or(dflt.other_idle),
            active,
            tcp_attempt: tcp_attempt.unwrap_or(dflt.tcp_attempt),
            tcp_linger: tcp_linger.unwrap_or(dflt.tcp_linger),
        }
    }
}

impl RawCapture {
    pub(crate) fn validate(self, d: &mut Diagnostics) -> CaptureConfig {
        let channel_capacity = in_range(
            self.channel_capacity,
            1,
            16_777_216,
            "capture.channel_capacity",
            d,
        )
        .unwrap_or(DEFAULT_CHANNEL_CAPACITY) as usize;
        let snaplen = in_range(self.snaplen, 64, 262_144, "capture.snaplen", d)
            .unwrap_or(DEFAULT_SNAPLEN) as u32;
        let ring_size = match &self.ring_size {
            None => DEFAULT_RING_SIZE,
            Some(v) => match crate::bus::byte_size(v, "capture.ring_size", d) {
                Some(b) if (MIN_RING_SIZE..=MAX_RING_SIZE).contains(&b) => b,
                Some(b) => {
                    d.push(
                        "capture.ring_size",
                        format!("{b} bytes is out of range; accepted: 4MiB to 16GiB"),
                    );
                    DEFAULT_RING_SIZE
                }
                None => DEFAULT_RING_SIZE,
            },
        };
        let filter = self
            .filter
            .as_deref()
            .and_then(|f| bpf_program(f, "capture.filter", d));
        let threads = in_range(self.threads, 1, 64, "capture.threads", d).unwrap_or(1) as usize;
        CaptureConfig {
            channel_capacity,
            snaplen,
            promiscuous: self.promiscuous,
            ring_size,
            filter,
            threads,
        }
    }
}

/// 32 MiB: 200 ms of 60-byte frames at 1 M packets/s. The kernel zeroes the whole ring when
/// capture starts (about 0.1 s of CPU for 32 MiB on the 2-core test machine), once.
pub(crate) const DEFAULT_RING_SIZE: u64 = 32 << 20;
const MIN_RING_SIZE: u64 = 4 << 20;
const MAX_RING_SIZE: u64 = 16 << 30;
/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS`).
const BPF_MAX_INSNS: usize = 4096;

/// Parses a classic BPF program as `tcpdump -ddd EXPRESSION` prints it: the instruction
/// count, then one `code jt jf k` line per instruction (decimal). Lines may also be separated
/// by commas, the one-line form of `nfbpf_compile` and iptables' `--bytecode`.
fn bpf_program(text: &str, key: &str, d: &mut Diagnostics) -> Option<Vec<BpfInstruction>> {
    const HINT: &str = "write the output of `tcpdump -ddd EXPRESSION`: the instruction count, then one `code jt jf k` line per instruction";
    let mut lines = text
        .split(['\n', ','])
        .map(str::trim)
        .filter(|l| !l.is_empty());
    let Some(first) = lines.next() else {
        d.push(key, format!("is empty; {HINT}"));
        return None;
    };
    let Ok(count) = first.parse::<usize>() else {
        d.push(
            key,
            format!("starts with {first:?}, not an instruction count; {HINT}"),
        );
        return None;
    };
    let mut prog = Vec::new();
    for (n, line) in lines.enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let parsed = match f.as_slice() {
            [c, t, e, k] => match (c.parse(), t.parse(), e.parse(), k.parse()) {
                (Ok(code), Ok(jt), Ok(jf), Ok(k)) => Some(BpfInstruction { code, jt, jf, k }),
                _ => None,
            },
            _ => None,
        };
        match parsed {
            Some(i) => prog.push(i),
            None => {
                d.push(
                    key,
                    format!(
                        "instruction {} ({line:?}) is not four numbers `code jt jf k` (code up to 65535, jt and jf up to 255, k up to 4294967295); {HINT}",
                        n + 1
                    ),
                );
                return None;
            }
        }
    }
    if prog.len() != count {
        d.push(
            key,
            format!("says {count} instructions but has {}; {HINT}", prog.len()),
        );
        return None;
    }
    if prog.is_empty() || prog.len() > BPF_MAX_INSNS {
        d.push(
            key,
            format!(
                "has {} instructions; accepted: 1 to {BPF_MAX_INSNS}",
                prog.len()
            ),
        );
        return None;
    }
    // Class BPF_RET: a program must end by returning, or the kernel refuses it.
    if prog.last().is_some_and(|i| i.code & 0x07 != 0x06) {
        d.push(
            key,
            "does not end with a return instruction (class BPF_RET); is it complete?",
        );
        return None;
    }
    Some(prog)
}

/// An `[[asset]]` after stage two: its id as written (for the uniqueness check, even when
/// the entry is otherwise invalid) and the asset if the entry is valid.
#[derive(Debug)]
pub(crate) struct Checked {
    pub id: Option<String>,
    pub asset: Option<Asset>,
}

const REQUIRED: &str = "every [[asset]] needs id, name, operator, sector, service and cidrs";

/// A required, non-empty string field of an asset.
fn required(key: &str, field: &str, v: Option<String>, d: &mut Diagnostics) -> Option<String> {
    match v {
        None => {
            d.push(format!("{key}.{field}"), format!("is missing; {REQUIRED}"));
            None
        }
        Some(s) if s.trim().is_empty() => {
            d.push(format!("{key}.{field}"), "must not be empty");
            None
        }
        Some(s) => Some(s),
    }
}

impl RawAsset {
    pub(crate) fn validate(self, key: &str, d: &mut Diagnostics) -> Checked {
        let errors_before = d.len();
        let id = required(key, "id", self.id, d);
        if let Some(id) = id.as_deref().filter(|id| !is_asset_id(id)) {
            d.push(
                format!("{key}.id"),
                format!(
                    "{id:?} is not a valid asset id; use 1 to 64 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit"
                ),
            );
        }
        let name = required(key, "name", self.name, d);
        let operator = required(key, "operator", self.operator, d);
        let sector = required(key, "sector", self.sector, d);
        let service = required(key, "service", self.service, d);
        let sector = sector.and_then(|s| {
            let parsed = Sector::parse(&s);
            if parsed.is_none() {
                d.push(
                    format!("{key}.sector"),
                    format!(
                        "sector {s:?} is not one of {}",
                        Sector::ALL.map(Sector::as_str).join(", ")
                    ),
                );
            }
            parsed
        });
        let mut cidrs: Vec<IpNet> = Vec::new();
        match self.cidrs {
            None => d.push(format!("{key}.cidrs"), format!("is missing; {REQUIRED}")),
            Some(list) if list.is_empty() => d.push(
                format!("{key}.cidrs"),
                "needs at least one prefix, e.g. [\"192.0.2.0/24\"]",
            ),
            Some(list) => {
                for (i, s) in list.iter().enumerate() {
                    let k = format!("{key}.cidrs[{i}]");
                    let Some(net) = cidr(s, &k, d) else { continue };
                    if let Some(j) = cidrs.iter().position(|n| *n == net) {
                        d.push(k, format!("{net} is listed twice (also cidrs[{j}])"));
                    } else {
                        cidrs.push(net);
                    }
                }
            }
        }
        let mut roles = Vec::new();
        for (i, r) in self.roles.iter().enumerate() {
            let k = format!("{key}.roles[{i}]");
            match Role::parse(r) {
                Some(role) if roles.contains(&role) => {
                    d.push(k, format!("role {r:?} is listed twice"));
                }
                Some(role) => roles.push(role),
                None => d.push(
                    k,
                    format!(
                        "role {r:?} is not one of {}",
                        Role::ALL.map(Role::as_str).join(", ")
                    ),
                ),
            }
        }
        let mut service_ports: Vec<u16> = Vec::new();
        for (i, p) in self.service_ports.iter().enumerate() {
            let k = format!("{key}.service_ports[{i}]");
            if let Some(p) = in_range(*p, 1, 65_535, &k, d) {
                if service_ports.contains(&(p as u16)) {
                    d.push(k, format!("port {p} is listed twice"));
                } else {
                    service_ports.push(p as u16);
                }
            }
        }
        let allow: Vec<IpNet> = self
            .allow
            .iter()
            .enumerate()
            .filter_map(|(i, s)| cidr(s, &format!("{key}.allow[{i}]"), d))
            .collect();
        let thresholds = thresholds(&self.thresholds, &format!("{key}.thresholds"), d);
        let asset = match (id.as_deref(), name, operator, sector, service) {
            (Some(id), Some(name), Some(operator), Some(sector), Some(service))
                if d.len() == errors_before =>
            {
                Some(Asset {
                    id: AssetId(Arc::from(id)),
                    name,
                    operator,
                    sector,
                    service,
                    cidrs,
                    roles,
                    service_ports,
                    thresholds,
                    allow,
                })
            }
            _ => None,
        };
        Checked { id, asset }
    }
}

/// One positive rate, if set.
fn rate(v: Option<i64>, key: String, d: &mut Diagnostics) -> Option<u64> {
    let v = v?;
    in_range(v, 1, i64::MAX, &key, d).map(|v| v as u64)
}

fn rates(r: RawRates, key: &str, d: &mut Diagnostics) -> Rates {
    Rates {
        pps: rate(r.pps, format!("{key}.pps"), d),
        bps: rate(r.bps, format!("{key}.bps"), d),
        new_flows_per_s: rate(r.new_flows_per_s, format!("{key}.new_flows_per_s"), d),
    }
}

/// `[asset.thresholds]`: totals, and `tcp` / `udp` / `icmp` sub-tables, all optional.
fn thresholds(t: &toml::Table, key: &str, d: &mut Diagnostics) -> Thresholds {
    let raw: RawThresholds = fields(t, key, None, d);
    let total = rates(
        RawRates {
            pps: raw.pps,
            bps: raw.bps,
            new_flows_per_s: raw.new_flows_per_s,
        },
        key,
        d,
    );
    let sub = |name: &str, t: &toml::Table, d: &mut Diagnostics| {
        let k = format!("{key}.{name}");
        let raw: RawRates = fields(t, &k, None, d);
        rates(raw, &k, d)
    };
    Thresholds {
        total,
        tcp: sub("tcp", &raw.tcp, d),
        udp: sub("udp", &raw.udp, d),
        icmp: sub("icmp", &raw.icmp, d),
    }
}
