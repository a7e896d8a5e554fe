//! `normwatch flows`: packets to flow records, printed.

use crate::output::{FlowWriter, Format};
use crate::UsageError;
use anyhow::Context;
use normwatch_config::{ChecksumPolicy, Config};
use normwatch_model::FlowRecord;
use normwatch_sensor::capture::file::read_file;
use normwatch_sensor::capture::live::{LiveCapture, LiveConfig};
use normwatch_sensor::decode::{ChecksumSettings, DropReason};
use normwatch_sensor::flow::DEFAULT_LIKELY_SERVER_PORTS;
use normwatch_sensor::{FlowConfig, FlowTable, SensorStats};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Debug, clap::Args)]
pub struct FlowsArgs {
    /// Capture file(s) to read, pcap or pcapng, processed in order as one stream.
    #[arg(long, value_name = "FILE", num_args = 1.., required_unless_present = "interface", conflicts_with = "interface")]
    pcap: Vec<PathBuf>,
    /// Capture live from this network interface (Linux AF_PACKET; needs CAP_NET_RAW).
    #[arg(long, short = 'i', value_name = "IF")]
    interface: Option<String>,
    /// Configuration file (sensor settings and protected assets). Defaults apply without it.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// Output format: `zeek` (TSV with Zeek conn.log column names) or `json` (full records).
    #[arg(long, value_enum, default_value_t = Format::Zeek)]
    format: Format,
    /// Write flows to FILE instead of standard output.
    #[arg(long, short = 'o', value_name = "FILE")]
    output: Option<PathBuf>,
    /// Override the configured checksum policy: `verify` drops packets with bad checksums
    /// (Zeek's default), `ignore` counts them (like `zeek -C`).
    #[arg(long, value_enum, value_name = "POLICY")]
    checksums: Option<ChecksumArg>,
    /// Stop a live capture after this long (e.g. `30s`, `5m`); otherwise it runs until
    /// interrupted (SIGINT or SIGTERM), then prints every open flow.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", requires = "interface")]
    duration: Option<Duration>,
    /// Print packet, drop and flow counters to standard error at the end.
    #[arg(long)]
    stats: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum ChecksumArg {
    Verify,
    Ignore,
}

/// Builds the flow-table settings from the validated configuration.
pub fn flow_config(cfg: &Config, checksums: Option<bool>) -> FlowConfig {
    let t = &cfg.sensor.timeouts;
    let ns = |d: Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
    let ignore_src = cfg
        .sensor
        .ignore_checksum_nets
        .iter()
        .map(|net| {
            let (bits, len) = match net {
                ipnet::IpNet::V4(n) => (
                    u128::from(n.network().to_ipv6_mapped()),
                    u32::from(n.prefix_len()) + 96,
                ),
                ipnet::IpNet::V6(n) => (u128::from(n.network()), u32::from(n.prefix_len())),
            };
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            (bits & mask, mask)
        })
        .collect();
    FlowConfig {
        sensor_id: cfg.sensor.id.clone(),
        max_flows: cfg.sensor.max_flows,
        tcp_idle_ns: ns(t.tcp_idle),
        udp_idle_ns: ns(t.udp_idle),
        icmp_idle_ns: ns(t.icmp_idle),
        other_idle_ns: ns(t.other_idle),
        active_ns: t.active.map(ns),
        tcp_attempt_ns: ns(t.tcp_attempt),
        tcp_linger_ns: ns(t.tcp_linger),
        checksums: ChecksumSettings {
            verify: checksums.unwrap_or(cfg.sensor.checksums == ChecksumPolicy::Verify),
            ignore_src,
        },
        likely_server_ports: cfg
            .sensor
            .likely_server_ports
            .clone()
            .unwrap_or_else(|| DEFAULT_LIKELY_SERVER_PORTS.to_vec()),
        assets: Arc::new(cfg.assets.clone()),
    }
}

/// Writes records as they come; remembers the first write error (a closed pipe ends output
/// quietly, anything else fails the run).
struct Sink {
    writer: FlowWriter<Box<dyn Write>>,
    error: Option<io::Error>,
}

impl Sink {
    fn drain(&mut self, buf: &mut Vec<FlowRecord>) {
        for r in buf.drain(..) {
            if self.error.is_none() {
                if let Err(e) = self.writer.write(&r) {
                    self.error = Some(e);
                }
            }
        }
    }

    fn finish(mut self) -> anyhow::Result<()> {
        if self.error.is_none() {
            if let Err(e) = self.writer.flush() {
                self.error = Some(e);
            }
        }
        match self.error {
            Some(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            Some(e) => Err(e).context("cannot write flows"),
            None => Ok(()),
        }
    }
}

pub fn run(args: FlowsArgs) -> anyhow::Result<()> {
    let cfg = match &args.config {
        Some(path) => normwatch_config::load(path)?,
        None => Config::default(),
    };
    let checksums = args.checksums.map(|c| c == ChecksumArg::Verify);
    let mut table = FlowTable::new(flow_config(&cfg, checksums));
    let out: Box<dyn Write> = match &args.output {
        Some(p) => {
            Box::new(BufWriter::new(File::create(p).map_err(|e| {
                UsageError(format!("cannot create {}: {e}", p.display()))
            })?))
        }
        None => Box::new(BufWriter::new(io::stdout().lock())),
    };
    let mut sink = Sink {
        writer: FlowWriter::new(out, args.format).context("cannot write flows")?,
        error: None,
    };
    let mut buf = Vec::new();
    let result = if let Some(iface) = &args.interface {
        live(&cfg, iface, args.duration, &mut table, &mut sink, &mut buf)
    } else {
        files(&args.pcap, &mut table, &mut sink, &mut buf)
    };
    // Whatever happened, every flow already built is printed.
    table.flush(&mut buf);
    sink.drain(&mut buf);
    if args.stats {
        print_stats(table.stats());
    }
    let written = sink.finish();
    result.and(written)
}

fn files(
    paths: &[PathBuf],
    table: &mut FlowTable,
    sink: &mut Sink,
    buf: &mut Vec<FlowRecord>,
) -> anyhow::Result<()> {
    for path in paths {
        read_file(path, |frame| {
            table.process_frame(frame.link, frame.data, frame.wire_len, frame.ts_ns, buf);
            if !buf.is_empty() {
                sink.drain(buf);
            }
        })?;
    }
    Ok(())
}

fn live(
    cfg: &Config,
    iface: &str,
    duration: Option<Duration>,
    table: &mut FlowTable,
    sink: &mut Sink,
    buf: &mut Vec<FlowRecord>,
) -> anyhow::Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handler")?;
    }
    let mut capture = LiveCapture::start(&LiveConfig {
        interface: iface.to_string(),
        snaplen: cfg.capture.snaplen as usize,
        promiscuous: cfg.capture.promiscuous,
        channel_capacity: cfg.capture.channel_capacity,
    })
    .map_err(|e| UsageError(e.to_string()))?;
    tracing::info!(interface = iface, "capturing");
    let started = Instant::now();
    let deadline = duration.map(|d| started + d);
    let consume = |batch: normwatch_sensor::capture::live::Batch,
                   table: &mut FlowTable,
                   sink: &mut Sink,
                   buf: &mut Vec<FlowRecord>,
                   capture: &LiveCapture| {
        for f in batch.frames() {
            table.process_frame(f.link, f.data, f.wire_len, f.ts_ns, buf);
        }
        sink.drain(buf);
        capture.recycle(batch);
    };
    while !stop.load(Ordering::Relaxed)
        && deadline.is_none_or(|d| Instant::now() < d)
        && !capture.is_finished()
    {
        match capture.next_batch(Duration::from_millis(100)) {
            Some(batch) => consume(batch, table, sink, buf, &capture),
            None => {
                // Quiet link: let time pass so idle flows still end.
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                table.advance_to(now, buf);
                sink.drain(buf);
            }
        }
    }
    capture.stop();
    while let Some(batch) = capture.next_batch(Duration::from_millis(10)) {
        consume(batch, table, sink, buf, &capture);
    }
    let s = capture.stats();
    tracing::info!(
        received = s.received.load(Ordering::Relaxed),
        kernel_dropped = s.kernel_dropped.load(Ordering::Relaxed),
        channel_dropped = s.channel_dropped.load(Ordering::Relaxed),
        "capture stopped"
    );
    Ok(())
}

#[allow(clippy::print_stderr)]
fn print_stats(s: &SensorStats) {
    eprintln!("packets\t{}", s.packets);
    eprintln!("bytes\t{}", s.bytes);
    eprintln!("flows_created\t{}", s.flows_created);
    eprintln!("flows_evicted\t{}", s.evictions());
    eprintln!("fragments\t{}", s.fragments);
    eprintln!("fragments_orphaned\t{}", s.fragments_orphaned);
    eprintln!("ics_malformed\t{}", s.ics_malformed);
    for r in DropReason::ALL {
        let n = s.drops_for(r);
        if n > 0 {
            eprintln!("drop.{}\t{}", r.as_str(), n);
        }
    }
}
