//! `normwatch demo`: the whole system on simulated traffic, in one process and one command.
//! It writes a self-contained working directory (configuration, attribution databases,
//! recipients directory, signing key, the scenario's capture), runs the embedded pipeline over
//! it while serving metrics, prints alerts as they open and close, packages every closed alert
//! for its recipients, and ends with a summary.

use crate::args::{serve_metrics, stop_flag, MetricsArgs};
use crate::output::JsonAlerts;
use crate::UsageError;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use normwatch_evidence::keys::SecretKey;
use normwatch_model::{Alert, AlertState};
use normwatch_pipeline::capture::{Input, SourceOptions};
use normwatch_pipeline::detector::{self, DetectorSink};
use normwatch_pipeline::evidence::{evidence_config, EvidenceStage};
use normwatch_pipeline::metrics::Metrics;
use normwatch_pipeline::sinks::{AlertSink, TeeAlerts};
use normwatch_pipeline::topology::{self, SensorOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CONFIG: &str = include_str!("../../../config/demo/normwatch.toml");
const RECIPIENTS: &str = include_str!("../../../config/demo/recipients.toml");
const GEOIP: [(&str, &[u8]); 3] = [
    (
        "GeoLite2-Country-Test.mmdb",
        include_bytes!("../../../config/demo/geoip/GeoLite2-Country-Test.mmdb"),
    ),
    (
        "GeoLite2-ASN-Test.mmdb",
        include_bytes!("../../../config/demo/geoip/GeoLite2-ASN-Test.mmdb"),
    ),
    (
        "LICENSE-MIT",
        include_bytes!("../../../config/demo/geoip/LICENSE-MIT"),
    ),
];

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// The working directory to create (or reuse): configuration, capture, alerts, evidence.
    #[arg(
        long,
        short = 'o',
        value_name = "DIR",
        default_value = "normwatch-demo"
    )]
    out: PathBuf,
    /// The scenario to simulate (see `normwatch simulate --list`).
    #[arg(long, short = 's', value_name = "NAME", default_value = "all")]
    scenario: String,
    /// Replay the capture at most this many packets per second (as a live link would deliver
    /// it) instead of as fast as possible.
    #[arg(long, value_name = "N")]
    pps: Option<u64>,
    /// Keep serving metrics this long after the summary (e.g. `30s`), so Prometheus can
    /// scrape the final values; interrupt to end early.
    #[arg(long, value_parser = humantime::parse_duration, value_name = "DURATION", default_value = "0s")]
    hold: Duration,
    #[command(flatten)]
    metrics: MetricsArgs,
}

/// Prints alert events as they happen (above the progress bar).
struct PrintAlerts {
    bar: ProgressBar,
}

impl AlertSink for PrintAlerts {
    fn alert(&mut self, a: &Alert) -> anyhow::Result<()> {
        let line = match a.state {
            AlertState::Open => format!(
                "ALERT  {:<18} {:<16} {:<9} {}  [{}]",
                a.kind.as_str(),
                a.asset.as_str(),
                format!("{:?}", a.severity).to_lowercase(),
                a.summary,
                a.norms.violated.join(", ")
            ),
            AlertState::Closed => format!(
                "CLOSED {:<18} {:<16} after {:.0} s; top source {}",
                a.kind.as_str(),
                a.asset.as_str(),
                (a.window_end_ns.saturating_sub(a.window_start_ns)) as f64 / 1e9,
                a.top_sources
                    .first()
                    .map_or_else(|| "-".to_string(), |s| s.addr.to_string())
            ),
            AlertState::Update => return Ok(()),
        };
        if self.bar.is_hidden() {
            outln!("{line}");
        } else {
            self.bar.println(line);
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Counts what the summary reports.
#[derive(Default)]
struct Tally {
    opened: Vec<Alert>,
}

impl AlertSink for Tally {
    fn alert(&mut self, a: &Alert) -> anyhow::Result<()> {
        if a.state == AlertState::Open {
            self.opened.push(a.clone());
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Lays out the working directory; returns the configuration's path.
fn prepare(out: &Path, scenario: &str) -> anyhow::Result<(PathBuf, PathBuf, u64)> {
    std::fs::create_dir_all(out.join("geoip"))
        .with_context(|| format!("cannot create {}", out.display()))?;
    let out = out
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", out.display()))?;
    let config = out.join("normwatch.toml");
    write(&config, CONFIG.as_bytes())?;
    for (name, bytes) in GEOIP {
        write(&out.join("geoip").join(name), bytes)?;
    }
    // Directory drops (`outbox/XX`) resolve against the recipients file: under `out`.
    write(&out.join("recipients.toml"), RECIPIENTS.as_bytes())?;
    let key = out.join("signing.key");
    if !key.exists() {
        SecretKey::generate()?
            .write(&key)
            .with_context(|| format!("cannot write {}", key.display()))?;
    }
    let pcap = out.join(format!("{scenario}.pcap"));
    let file = std::fs::File::create(&pcap)
        .with_context(|| format!("cannot create {}", pcap.display()))?;
    let written = match normwatch_simulate::write_scenario(scenario, std::io::BufWriter::new(file))
    {
        Ok(w) => w,
        Err(e @ normwatch_simulate::SimulateError::Unknown(_)) => {
            let _ = std::fs::remove_file(&pcap);
            return Err(UsageError(e.to_string()).into());
        }
        Err(e) => return Err(e).context("cannot write the scenario"),
    };
    Ok((config, pcap, written.packets))
}

pub fn run(args: DemoArgs) -> anyhow::Result<()> {
    let (config_path, pcap, packets) = prepare(&args.out, &args.scenario)?;
    let out = config_path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let cfg = normwatch_config::load(&config_path)?;
    let ev_cfg = evidence_config(&cfg)?.context("the demo configuration has no [evidence]")?;
    let stop = stop_flag()?;
    let metrics = Metrics::new();
    let server = serve_metrics(&args.metrics, &cfg, &metrics)?;
    outln!(
        "normwatch demo: scenario {:?}, {packets} packets in {}",
        args.scenario,
        pcap.display()
    );
    if let Some(s) = &server {
        outln!("metrics:  http://{}/metrics", s.addr());
    }

    let bar = ProgressBar::new(packets);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} packets {per_sec} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    // The bar follows the sensor's packet counter from a thread of its own.
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let bar = bar.clone();
        let counter = metrics.sensor.packets.clone();
        let done = done.clone();
        std::thread::Builder::new()
            .name("nw-progress".into())
            .spawn(move || {
                while !done.load(Ordering::Acquire) {
                    bar.set_position(counter.get());
                    std::thread::sleep(Duration::from_millis(100));
                }
            })?
    };

    let mut stage = EvidenceStage::open(
        ev_cfg,
        detector::norms(&cfg)?,
        Some(&out.join("evidence")),
        metrics.evidence.clone(),
    )?
    .with_assets(&cfg.assets);
    let mut print = PrintAlerts { bar: bar.clone() };
    let mut tally = Tally::default();
    let mut file = JsonAlerts::create(&out.join("alerts.jsonl"))?;
    let mut alert_sinks = TeeAlerts(vec![&mut print, &mut tally, &mut file]);
    let detector = detector::detector(&cfg)?;
    let mut sink = DetectorSink::new(detector, &mut alert_sinks, None)
        .with_metrics(metrics.detect.clone(), &cfg.assets)
        .with_evidence(&mut stage);
    server.as_ref().inspect(|s| s.set_ready(true));
    let opts = SensorOptions {
        source: SourceOptions { pps: args.pps },
        ..SensorOptions::default()
    };
    let result = topology::run(
        &cfg,
        &Input::Files(vec![pcap.clone()]),
        &opts,
        &mut sink,
        &metrics,
        &stop,
    );
    let finished = sink.finish();
    drop(sink);
    drop(alert_sinks);
    done.store(true, Ordering::Release);
    let _ = ticker.join();
    bar.finish_and_clear();
    let (sensor, consumed) = result?;
    finished?;

    stage.save_follow_up()?;
    // The summary.
    outln!();
    outln!(
        "{} packets → {} flow records ({} batches over the in-process bus)",
        sensor.stats.packets,
        consumed.records,
        consumed.batches
    );
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut by_norm: BTreeMap<&str, usize> = BTreeMap::new();
    for a in &tally.opened {
        *by_kind.entry(a.kind.as_str()).or_default() += 1;
        for n in &a.norms.violated {
            *by_norm.entry(n.as_str()).or_default() += 1;
        }
    }
    outln!("alerts: {}", tally.opened.len());
    for (k, n) in &by_kind {
        outln!("  {n:>3}  {k}");
    }
    outln!("norms the activity would violate if State-conducted or knowingly supported:");
    for (k, n) in &by_norm {
        outln!("  {n:>3}  {k}");
    }
    outln!(
        "evidence packages: {} in {}",
        stage.built.len(),
        stage.root().display()
    );
    let mut by_recipient: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (_, b) in &stage.built {
        *by_recipient
            .entry((b.recipient.as_str(), b.recipient_name.as_str()))
            .or_default() += 1;
    }
    for ((code, name), n) in &by_recipient {
        outln!("  {n:>3}  to {code} ({name})");
    }
    let requests = stage.requests()?;
    if requests.iter().any(|r| !r.follow_ups.is_empty()) {
        outln!(
            "requests followed up (event time; `normwatch requests --store {}`):",
            stage.root().display()
        );
        for f in normwatch_evidence::followup::figures(&requests) {
            outln!(
                "  {}: {} requests, {} stopped before the deadline, {} still going at it{}",
                f.state,
                f.requests,
                f.stopped_before_deadline,
                f.continuing,
                f.median_seconds_to_stop
                    .map_or_else(String::new, |s| format!(
                        ", median time to stop {}",
                        normwatch_evidence::followup::span_text((s * 1e9) as u64)
                    ))
            );
        }
        // A campaign: alerts from overlapping hosts, one request per State naming every
        // service they impaired (and updates for alerts after the requests went out).
        let mut campaigns: BTreeMap<&str, (Vec<&str>, &[String], usize)> = BTreeMap::new();
        for r in &requests {
            if let Some(c) = &r.watch.campaign {
                let e = campaigns.entry(c).or_default();
                e.0.push(&r.watch.recipient);
                if r.watch.services.len() > e.1.len() {
                    e.1 = &r.watch.services;
                }
                e.2 += r.watch.updates.len();
            }
        }
        for (c, (states, services, updates)) in &campaigns {
            if services.len() > 1 || *updates > 0 {
                outln!(
                    "  campaign {c}: one request to each of {} naming {} services{}: {}",
                    states.join(", "),
                    services.len(),
                    if *updates > 0 {
                        format!(" ({updates} updates for later alerts)")
                    } else {
                        String::new()
                    },
                    services.join("; ")
                );
            }
        }
        for r in &requests {
            if let Some(f) = r.follow_ups.last() {
                let dir = stage.package_dir(&f.id);
                let text = std::fs::read_to_string(dir.join("follow-up.md")).unwrap_or_default();
                let line = text
                    .lines()
                    .find(|l| l.starts_with("The activity"))
                    .unwrap_or_default();
                outln!("  {} → {}: {line}", r.watch.package_id, r.watch.recipient);
            }
        }
    }
    outln!("alert events: {}", out.join("alerts.jsonl").display());
    if let Some((_, b)) = stage.built.first() {
        outln!(
            "verify one: normwatch verify {} --key {}",
            stage.package_dir(&b.id).display(),
            out.join("signing.key.pub").display()
        );
    }
    drop(stage);
    if let Some(s) = &server {
        if !args.hold.is_zero() {
            outln!(
                "serving metrics on http://{}/metrics for {:?}",
                s.addr(),
                args.hold
            );
            let until = std::time::Instant::now() + args.hold;
            while std::time::Instant::now() < until && !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(())
}
