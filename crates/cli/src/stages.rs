//! `normwatch sensor`, `normwatch detect` and `normwatch run`.

use crate::args::{
    config, print_metrics, serve_metrics, stop_flag, stop_flags, InputArgs, MetricsArgs,
};
use crate::output::{Format, JsonAlerts, WriterSink};
use crate::UsageError;
use normwatch_pipeline::consume::{ConsumeOptions, ConsumeSummary, CountingSink};
use normwatch_pipeline::detector::{self, DetectorSink, LogAlerts};
use normwatch_pipeline::evidence::{evidence_config, EvidenceStage};
use normwatch_pipeline::metrics::Metrics;
use normwatch_pipeline::sinks::{AlertSink, FlowSink, TeeAlerts};
use normwatch_pipeline::topology::{self, SensorOptions, SensorSummary};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct SensorArgs {
    /// Configuration file: sensor settings, protected assets, and the bus (kind = "kafka",
    /// brokers), kafka and spool sections.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    input: InputArgs,
    /// Replay capture files at most this many packets per second instead of as fast as
    /// possible (flows then end and leave in real time, as from a live interface).
    #[arg(long, value_name = "N", conflicts_with = "interface")]
    pps: Option<u64>,
    /// At the end, wait this long for the broker to acknowledge every batch (spooled ones
    /// included); what is left stays in the spool for the next run.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "60s")]
    drain_timeout: Duration,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Print every metric (Prometheus text format) to standard error at the end.
    #[arg(long)]
    stats: bool,
}

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// Configuration file with bus.kind = "kafka", bus.brokers and kafka.group_id.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Write every consumed flow record to FILE (`-`: standard output); a batch is committed
    /// only once its records are written.
    #[arg(long, value_name = "FILE")]
    flows_out: Option<PathBuf>,
    /// Format of --flows-out.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Also write alert events (open, update, closed) as JSON lines to FILE (`-`: standard
    /// output). They always go to the alerts topic (`bus.topics.alerts`).
    #[arg(long, value_name = "FILE")]
    alerts_out: Option<PathBuf>,
    /// Exit after no batch arrived for this long (e.g. `10s`), counted from the latest
    /// partition assignment or batch; otherwise run until SIGINT or SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    exit_when_idle: Option<Duration>,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Print every metric (Prometheus text format) to standard error at the end.
    #[arg(long)]
    stats: bool,
}

#[derive(Debug, clap::Args)]
pub struct PackageArgs {
    /// Configuration file with bus.kind = "kafka", bus.brokers and an `[evidence]` section.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: PathBuf,
    /// Store packages (and the delivery outbox) under DIR instead of evidence.out_dir.
    #[arg(long, value_name = "DIR")]
    evidence_dir: Option<PathBuf>,
    /// Exit after nothing arrived for this long (e.g. `10s`), counted from the latest
    /// partition assignment or message; otherwise run until SIGINT or SIGTERM.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION")]
    exit_when_idle: Option<Duration>,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Print every metric (Prometheus text format) to standard error at the end.
    #[arg(long)]
    stats: bool,
}

impl PackageArgs {
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }
}

pub fn package(args: PackageArgs) -> anyhow::Result<()> {
    let cfg = config(Some(&args.config))?;
    let Some(ev) = evidence_config(&cfg)? else {
        return Err(UsageError(format!(
            "{}: `normwatch package` needs an [evidence] section (recipients, signing key, attribution databases)",
            args.config.display()
        ))
        .into());
    };
    let stop = stop_flag()?;
    let metrics = Metrics::new();
    let server = serve_metrics(&args.metrics, &cfg, &metrics)?;
    let mut stage = EvidenceStage::open(
        ev,
        detector::norms(&cfg)?,
        args.evidence_dir.as_deref(),
        metrics.evidence.clone(),
    )?
    .with_assets(&cfg.assets);
    server.as_ref().inspect(|s| s.set_ready(true));
    let opts = ConsumeOptions {
        exit_when_idle: args.exit_when_idle,
        ..ConsumeOptions::default()
    };
    let result =
        normwatch_pipeline::evidence::package(&cfg, &mut stage, &opts, &metrics.transport, &stop);
    // The follow-up's last observations, for the next run to continue from.
    if let Err(e) = stage.save_follow_up() {
        tracing::warn!(error = %e, "cannot save the follow-up of requests");
    }
    if let Ok(s) = &result {
        tracing::info!(
            alert_events = s.alert_events,
            alerts_packaged = s.alerts_packaged,
            packages = s.packages,
            flow_batches = s.flow_batches,
            rejected = s.rejected,
            dir = %stage.root().display(),
            "packager finished"
        );
    }
    if args.stats {
        print_metrics(&metrics);
    }
    result.map(|_| ())
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Configuration file (sensor settings, protected assets). Defaults apply without it.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    input: InputArgs,
    /// Replay capture files at most this many packets per second.
    #[arg(long, value_name = "N", conflicts_with = "interface")]
    pps: Option<u64>,
    /// Write every flow record that crossed the bus to FILE (`-`: standard output).
    #[arg(long, value_name = "FILE")]
    flows_out: Option<PathBuf>,
    /// Format of --flows-out.
    #[arg(long, value_enum, default_value_t = Format::Json)]
    format: Format,
    /// Write alert events (open, update, closed) as JSON lines to FILE (`-`: standard
    /// output); without it, each event is logged as one line on standard error.
    #[arg(long, value_name = "FILE")]
    alerts_out: Option<PathBuf>,
    /// Package every closed alert as signed evidence for its recipient States, stored (with
    /// the delivery outbox) under DIR; needs the configuration's `[evidence]` section. Without
    /// it, evidence.out_dir is used when `[evidence]` is present.
    #[arg(long, value_name = "DIR")]
    evidence_dir: Option<PathBuf>,
    #[command(flatten)]
    metrics: MetricsArgs,
    /// Print every metric (Prometheus text format) to standard error at the end.
    #[arg(long)]
    stats: bool,
}

impl SensorArgs {
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }
}

impl DetectArgs {
    pub fn config_path(&self) -> &std::path::Path {
        &self.config
    }
}

impl RunArgs {
    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }
}

fn sink(path: Option<&PathBuf>, format: Format) -> anyhow::Result<Box<dyn FlowSink>> {
    Ok(match path {
        None => Box::new(CountingSink::default()),
        Some(p) if p.as_os_str() == "-" => Box::new(WriterSink::create(None, format)?),
        Some(p) => Box::new(WriterSink::create(Some(p), format)?),
    })
}

fn log_sensor(s: &SensorSummary) {
    tracing::info!(
        packets = s.stats.packets,
        records = s.records,
        batches = s.batches,
        "sensor finished"
    );
}

fn log_consumer(s: &ConsumeSummary) {
    tracing::info!(
        records = s.records,
        batches = s.batches,
        duplicates = s.duplicates,
        rejected = s.rejected,
        "consumer finished"
    );
}

pub fn sensor(args: SensorArgs) -> anyhow::Result<()> {
    let cfg = config(Some(&args.config))?;
    let flags = stop_flags()?;
    let metrics = Metrics::new();
    let server = serve_metrics(&args.metrics, &cfg, &metrics)?;
    server.as_ref().inspect(|s| s.set_ready(true));
    let opts = SensorOptions {
        source: args.input.source(args.pps),
        checksums: args.input.checksums(),
        drain_timeout: args.drain_timeout,
        force: flags.force.clone(),
        ..SensorOptions::default()
    };
    let result = topology::sensor(&cfg, &args.input.input(), &opts, &metrics, &flags.stop);
    if let Ok(s) = &result {
        log_sensor(s);
    }
    if args.stats {
        print_metrics(&metrics);
    }
    result.map(|_| ())
}

pub fn detect(args: DetectArgs) -> anyhow::Result<()> {
    let cfg = config(Some(&args.config))?;
    both_stdout(args.flows_out.as_ref(), args.alerts_out.as_ref())?;
    let stop = stop_flag()?;
    let metrics = Metrics::new();
    let server = serve_metrics(&args.metrics, &cfg, &metrics)?;
    server.as_ref().inspect(|s| s.set_ready(true));
    let mut flows = match &args.flows_out {
        Some(p) => Some(sink(Some(p), args.format)?),
        None => None,
    };
    let mut alerts_file = match &args.alerts_out {
        Some(p) => Some(JsonAlerts::create(p)?),
        None => None,
    };
    let mut log = LogAlerts;
    let mut tee: Vec<&mut dyn AlertSink> = vec![&mut log];
    if let Some(f) = alerts_file.as_mut() {
        tee.push(f);
    }
    let mut alerts = TeeAlerts(tee);
    let opts = ConsumeOptions {
        exit_when_idle: args.exit_when_idle,
        ..ConsumeOptions::default()
    };
    let flows_ref: Option<&mut dyn FlowSink> = match flows.as_mut() {
        Some(f) => Some(f.as_mut()),
        None => None,
    };
    let result = topology::detect(&cfg, flows_ref, Some(&mut alerts), &opts, &metrics, &stop);
    if let Ok(s) = &result {
        log_consumer(&s.consumed);
        tracing::info!(
            alerts = s.opened,
            events = s.events,
            already_published = s.suppressed,
            "detector finished"
        );
    }
    if args.stats {
        print_metrics(&metrics);
    }
    result.map(|_| ())
}

/// Only one output may take standard output.
fn both_stdout(flows: Option<&PathBuf>, alerts: Option<&PathBuf>) -> anyhow::Result<()> {
    let dash = |p: Option<&PathBuf>| p.is_some_and(|p| p.as_os_str() == "-");
    if dash(flows) && dash(alerts) {
        return Err(UsageError(
            "--flows-out and --alerts-out cannot both be standard output".into(),
        )
        .into());
    }
    Ok(())
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let cfg = config(args.config.as_deref())?;
    both_stdout(args.flows_out.as_ref(), args.alerts_out.as_ref())?;
    let flags = stop_flags()?;
    let metrics = Metrics::new();
    let server = serve_metrics(&args.metrics, &cfg, &metrics)?;
    server.as_ref().inspect(|s| s.set_ready(true));
    let mut flows: Option<Box<dyn FlowSink>> = match &args.flows_out {
        Some(p) => Some(sink(Some(p), args.format)?),
        None => None,
    };
    let mut alert_sink: Box<dyn AlertSink> = match &args.alerts_out {
        Some(p) => Box::new(JsonAlerts::create(p)?),
        None => Box::new(LogAlerts),
    };
    let mut evidence = match evidence_config(&cfg)? {
        Some(ev) => {
            let mut stage = EvidenceStage::open(
                ev,
                detector::norms(&cfg)?,
                args.evidence_dir.as_deref(),
                metrics.evidence.clone(),
            )?
            .with_assets(&cfg.assets);
            stage.defer_delivery_when(flags.force.clone());
            Some(stage)
        }
        None if args.evidence_dir.is_some() => {
            return Err(UsageError(
                "--evidence-dir needs an [evidence] section in the configuration (recipients, signing key, attribution databases)".into(),
            )
            .into())
        }
        None => None,
    };
    let detector = detector::detector(&cfg)?;
    let mut sink = DetectorSink::new(
        detector,
        alert_sink.as_mut(),
        flows.as_mut().map(|f| f.as_mut() as &mut dyn FlowSink),
    )
    .with_metrics(metrics.detect.clone(), &cfg.assets);
    if let Some(stage) = evidence.as_mut() {
        sink = sink.with_evidence(stage);
    }
    let opts = SensorOptions {
        source: args.input.source(args.pps),
        checksums: args.input.checksums(),
        force: flags.force.clone(),
        ..SensorOptions::default()
    };
    let result = topology::run(
        &cfg,
        &args.input.input(),
        &opts,
        &mut sink,
        &metrics,
        &flags.stop,
    );
    // Every alert still open is closed at the end of the input, also after an error.
    let finished = sink.finish();
    if let Ok((s, c)) = &result {
        log_sensor(s);
        log_consumer(c);
        tracing::info!(
            alerts = sink.opened,
            events = sink.events,
            "detector finished"
        );
    }
    let result = result.and(finished);
    drop(sink);
    if let Some(stage) = evidence.as_mut() {
        // The follow-up's last observations, for the next run to continue from.
        if let Err(e) = stage.save_follow_up() {
            tracing::warn!(error = %e, "cannot save the follow-up of requests");
        }
        tracing::info!(
            packages = stage.built.len(),
            dir = %stage.root().display(),
            "evidence packages built"
        );
    }
    if args.stats {
        print_metrics(&metrics);
    }
    result.map(|_| ())
}
