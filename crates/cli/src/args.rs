//! Arguments shared by the commands that read packets, and process-wide helpers.

use anyhow::Context;
use normwatch_config::Config;
use normwatch_pipeline::capture::{Input, SourceOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where packets come from.
#[derive(Debug, clap::Args)]
pub struct InputArgs {
    /// Capture file(s) to read, pcap or pcapng, processed in order as one stream.
    #[arg(long, value_name = "FILE", num_args = 1.., required_unless_present_any = ["interface", "exports_only"], conflicts_with_all = ["interface", "exports_only"])]
    pub pcap: Vec<PathBuf>,
    /// Capture live from this network interface (Linux AF_PACKET; needs CAP_NET_RAW).
    #[arg(long, short = 'i', value_name = "IF", conflicts_with = "exports_only")]
    pub interface: Option<String>,
    /// Read no packets: only the NetFlow v5/v9, IPFIX and sFlow exports received on the
    /// addresses of `[exporters] listen`, until interrupted or --duration passes. (With
    /// --pcap or --interface, those exports are received alongside the packets.)
    #[arg(long)]
    pub exports_only: bool,
    /// Stop a live capture (or --exports-only) after this long (e.g. `30s`, `5m`); otherwise
    /// it runs until interrupted (SIGINT or SIGTERM), then ends every open flow.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", conflicts_with = "pcap")]
    pub duration: Option<Duration>,
    /// Override the configured checksum policy: `verify` drops packets with bad checksums
    /// (Zeek's default), `ignore` counts them (like `zeek -C`).
    #[arg(long, value_enum, value_name = "POLICY")]
    pub checksums: Option<ChecksumArg>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ChecksumArg {
    Verify,
    Ignore,
}

impl InputArgs {
    pub fn input(&self) -> Input {
        match &self.interface {
            Some(i) => Input::Live {
                interface: i.clone(),
                duration: self.duration,
            },
            None if self.exports_only => Input::Exports {
                duration: self.duration,
            },
            None => Input::Files(self.pcap.clone()),
        }
    }

    pub fn checksums(&self) -> Option<bool> {
        self.checksums.map(|c| c == ChecksumArg::Verify)
    }

    pub fn source(&self, pps: Option<u64>) -> SourceOptions {
        SourceOptions { pps }
    }
}

/// Loads the configuration at `path`, or the defaults.
pub fn config(path: Option<&Path>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(p) => normwatch_config::load(p)?,
        None => Config::default(),
    })
}

/// How the commands that hold open flows (`run`, `flows`, `sensor`) are stopped.
#[derive(Debug)]
pub struct StopFlags {
    /// Raised by the first SIGINT or SIGTERM: stop reading, end every open flow and hand it
    /// on through every stage, then exit.
    pub stop: Arc<AtomicBool>,
    /// Raised by a second signal: the same, without waiting on a broker or a delivery
    /// (what is not acknowledged goes to the spool or the outbox). A third signal ends the
    /// process at once (exit 1).
    pub force: Arc<AtomicBool>,
}

/// Installs the handlers behind [`StopFlags`]: signals are counted on a thread of their own.
pub fn stop_flags() -> anyhow::Result<StopFlags> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    let force = Arc::new(AtomicBool::new(false));
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handler")?;
    let (s, f) = (stop.clone(), force.clone());
    std::thread::Builder::new()
        .name("nw-signals".into())
        .spawn(move || {
            for (n, sig) in signals.forever().enumerate() {
                match n {
                    0 => {
                        tracing::info!(
                            signal = sig,
                            "stopping: every open flow is ended and handed on; a second signal stops without waiting for delivery"
                        );
                        s.store(true, Ordering::SeqCst);
                    }
                    1 => {
                        tracing::warn!(
                            signal = sig,
                            "stopping now: unacknowledged batches stay in the spool; a third signal exits at once"
                        );
                        f.store(true, Ordering::SeqCst);
                    }
                    _ => std::process::exit(1),
                }
            }
        })
        .context("cannot start the signal thread")?;
    Ok(StopFlags { stop, force })
}

/// A flag raised by SIGINT or SIGTERM; a second signal ends the process at once (exit 1).
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, stop.clone())
            .context("cannot install signal handler")?;
        signal_hook::flag::register(sig, stop.clone()).context("cannot install signal handler")?;
    }
    Ok(stop)
}

/// Writes the metrics in Prometheus text format to standard error.
#[allow(clippy::print_stderr)]
pub fn print_metrics(m: &normwatch_pipeline::metrics::Metrics) {
    eprint!("{}", m.encode_text());
}

/// Where the metrics endpoint listens.
#[derive(Debug, Default, clap::Args)]
pub struct MetricsArgs {
    /// Serve /metrics, /healthz and /readyz on ADDR (e.g. `127.0.0.1:9464`, `[::1]:9464`),
    /// or `off`. Overrides telemetry.metrics_listen (default 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

/// Starts the metrics endpoint the arguments or the configuration ask for. An address the
/// user chose that cannot be bound is an error; the default address taken by another process
/// is only a warning (several stages may share a host).
pub fn serve_metrics(
    args: &MetricsArgs,
    cfg: &Config,
    metrics: &normwatch_pipeline::metrics::Metrics,
) -> anyhow::Result<Option<normwatch_telemetry::MetricsServer>> {
    let (addr, explicit) = match args.metrics_listen.as_deref() {
        Some("off") => (None, true),
        Some(a) => (
            Some(a.parse::<std::net::SocketAddr>().map_err(|_| {
                crate::UsageError(format!(
                    "--metrics-listen {a:?}: write an address:port such as 127.0.0.1:9464, or off"
                ))
            })?),
            true,
        ),
        None => (
            cfg.telemetry.metrics_listen,
            cfg.telemetry.metrics_listen_explicit,
        ),
    };
    let Some(addr) = addr else { return Ok(None) };
    match normwatch_telemetry::MetricsServer::start(addr, metrics.registry.clone()) {
        Ok(s) => Ok(Some(s)),
        Err(e) if !explicit => {
            tracing::warn!(
                "{e}; metrics are not served (set telemetry.metrics_listen or --metrics-listen)"
            );
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}
