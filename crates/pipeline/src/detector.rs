//! The detector stage: consumed flow records through the detector core, alert events to an
//! [`AlertSink`].

use crate::sinks::{AlertSink, FlowAndAlertSink, FlowSink};

use anyhow::Context;
use normwatch_config::norms::{parse_norms, NormCatalogue};
use normwatch_config::Config;
use normwatch_detect::Detector;
use normwatch_model::{Alert, AlertState, AssetIndex, FlowRecord};
use normwatch_transport::bus::{Publisher, Topic};
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry,
};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

/// The catalogue built into the binary (`config/norms.toml`), used when the configuration
/// names none.
const BUILT_IN_NORMS: &str = include_str!("../../../config/norms.toml");

/// Logs each alert event as one line.
#[derive(Debug, Default)]
pub struct LogAlerts;

impl AlertSink for LogAlerts {
    fn alert(&mut self, a: &Alert) -> anyhow::Result<()> {
        let state = match a.state {
            AlertState::Open => "opened",
            AlertState::Update => "updated",
            AlertState::Closed => "closed",
        };
        tracing::info!(
            id = %a.id,
            asset = %a.asset.as_str(),
            kind = a.kind.as_str(),
            severity = ?a.severity,
            violated = ?a.norms.violated,
            "alert {state}: {}",
            a.summary
        );
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Publishes each alert event as JSON to the alerts topic, keyed by the alert id (so all the
/// events of one attack stay in order on one partition). `flush` returns once the transport
/// acknowledged every event, which is what lets the consumer commit the flows behind them.
pub struct PublishAlerts<'a> {
    publisher: &'a mut dyn Publisher,
    timeout: Duration,
}

impl std::fmt::Debug for PublishAlerts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishAlerts").finish_non_exhaustive()
    }
}

impl<'a> PublishAlerts<'a> {
    /// `timeout`: how long `flush` waits for the acknowledgements.
    pub fn new(publisher: &'a mut dyn Publisher, timeout: Duration) -> Self {
        PublishAlerts { publisher, timeout }
    }
}

impl AlertSink for PublishAlerts<'_> {
    fn alert(&mut self, a: &Alert) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(a).context("cannot encode an alert")?;
        self.publisher
            .publish(Topic::Alerts, a.id.as_bytes(), payload)
            .context("cannot publish an alert")
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.publisher
            .flush(self.timeout)
            .context("alert events were not acknowledged")
    }

    fn drain(&mut self) -> anyhow::Result<()> {
        self.publisher
            .drain(self.timeout)
            .context("alert events are not all on the alerts topic")
    }
}

/// The norm catalogue the configuration names, or the built-in one.
pub fn norms(cfg: &Config) -> anyhow::Result<NormCatalogue> {
    Ok(match &cfg.detect.norms {
        Some(path) => normwatch_config::norms::load_norms(path)?,
        None => parse_norms(BUILT_IN_NORMS, Path::new("built-in norms.toml"))?,
    })
}

/// A detector set up from the configuration.
pub fn detector(cfg: &Config) -> anyhow::Result<Detector> {
    Ok(Detector::new(
        Arc::new(cfg.assets.clone()),
        norms(cfg).context("cannot load the norm catalogue")?,
        cfg.detect.clone(),
    ))
}

/// A [`FlowSink`] that runs the detector over every batch, hands alert events to `alerts`,
/// the records on to `flows` if given, and both to the evidence stage if given (each batch's
/// alert events before its records).
pub struct DetectorSink<'a> {
    detector: Detector,
    alerts: &'a mut dyn AlertSink,
    flows: Option<&'a mut dyn FlowSink>,
    evidence: Option<&'a mut dyn FlowAndAlertSink>,
    buf: Vec<Alert>,
    metrics: Option<Observed>,
    rebuild: Option<Rebuild<'a>>,
    finished: bool,
    /// Alert events emitted, and alerts opened.
    pub events: u64,
    pub opened: u64,
    /// Alert events not emitted again: already on the alerts topic (see
    /// [`DetectorSink::rebuilding`]).
    pub suppressed: u64,
}

/// Reads every alert event on the alerts topic (JSON payloads).
pub type PublishedAlerts<'a> = Box<dyn FnMut() -> anyhow::Result<Vec<Vec<u8>>> + 'a>;

/// A member that rebuilds its state from the topics (see [`DetectorSink::rebuilding`]).
struct Rebuild<'a> {
    published: PublishedAlerts<'a>,
    /// Events on the alerts topic not yet met again, by payload, with their count.
    pending: HashMap<Vec<u8>, u32>,
}

/// What the sink keeps to feed the detector metrics.
#[derive(Debug)]
struct Observed {
    m: DetectMetrics,
    open: OpenAlerts,
    /// When the per-asset normals were last published (see [`NORMALS_EVERY`]).
    normals_at: Option<Instant>,
}

/// How often the per-asset gauges are refreshed while batches stream in (every asset's
/// gauges, a dozen label lookups each: per batch, that cost more than the detection), and
/// at every idle turn and at the end. Far below any scrape interval.
const NORMALS_EVERY: Duration = Duration::from_millis(250);

impl std::fmt::Debug for DetectorSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectorSink")
            .field("events", &self.events)
            .field("opened", &self.opened)
            .finish_non_exhaustive()
    }
}

impl<'a> DetectorSink<'a> {
    pub fn new(
        detector: Detector,
        alerts: &'a mut dyn AlertSink,
        flows: Option<&'a mut dyn FlowSink>,
    ) -> Self {
        DetectorSink {
            detector,
            alerts,
            flows,
            evidence: None,
            buf: Vec::new(),
            metrics: None,
            rebuild: None,
            finished: false,
            events: 0,
            opened: 0,
            suppressed: 0,
        }
    }

    /// Hands every alert event and every batch of records to the evidence stage too.
    pub fn with_evidence(mut self, evidence: &'a mut dyn FlowAndAlertSink) -> Self {
        self.evidence = Some(evidence);
        self
    }

    /// A member of a detector group that rebuilds its state from the topics: whenever the
    /// group assigns it partitions it starts a fresh detector, reads them from their start
    /// (the consumer marks what was processed before as replayed: see
    /// `normwatch_transport::bus::Subscriber::replayed`), and emits only the alert events
    /// `published` (the alerts topic, read after this member's own events are all on it)
    /// does not hold yet. The detector is deterministic, so the rebuilt state is the one its
    /// predecessor had, an event already on the topic comes out byte for byte the same and
    /// is held back, and whatever the predecessor had not sent (the close of an alert it
    /// opened) is sent now.
    pub fn rebuilding(mut self, published: PublishedAlerts<'a>) -> Self {
        self.rebuild = Some(Rebuild {
            published,
            pending: HashMap::new(),
        });
        self
    }

    /// Keeps the detector metrics; the assets' thresholds are published at once.
    pub fn with_metrics(mut self, m: DetectMetrics, assets: &AssetIndex) -> Self {
        for a in assets.assets() {
            let t = a.thresholds.total;
            for (rate, v) in [
                ("pps", t.pps),
                ("bps", t.bps),
                ("new_flows_per_s", t.new_flows_per_s),
            ] {
                if let Some(v) = v {
                    m.asset_threshold
                        .with_label_values(&[a.id.as_str(), rate])
                        .set(v as f64);
                }
            }
        }
        self.metrics = Some(Observed {
            m,
            open: OpenAlerts::default(),
            normals_at: None,
        });
        self
    }

    fn emit(&mut self) -> anyhow::Result<()> {
        for a in self.buf.drain(..) {
            if let Some(o) = self.metrics.as_mut() {
                o.open.event(&o.m, &a, self.detector.event_time_ns());
            }
            if let Some(r) = self.rebuild.as_mut().filter(|r| !r.pending.is_empty()) {
                let bytes = serde_json::to_vec(&a).context("cannot encode an alert")?;
                if let Some(n) = r.pending.get_mut(&bytes) {
                    *n -= 1;
                    if *n == 0 {
                        r.pending.remove(&bytes);
                    }
                    self.suppressed += 1;
                    continue;
                }
            }
            self.events += 1;
            self.opened += u64::from(a.state == AlertState::Open);
            self.alerts.alert(&a)?;
            if let Some(e) = self.evidence.as_mut() {
                e.alert(&a)?;
            }
        }
        Ok(())
    }

    /// Closes every open alert (end of input) and flushes; once.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if !self.finished {
            self.finished = true;
            self.detector.finish(&mut self.buf);
            self.emit()?;
            self.observe_normals();
        }
        self.flush()
    }
}

impl DetectorSink<'_> {
    /// Publishes the per-asset gauges now.
    fn observe_normals(&mut self) {
        if let Some(o) = self.metrics.as_mut() {
            observe_normals(&o.m, &self.detector);
            o.normals_at = Some(Instant::now());
        }
    }

    /// Runs the detector over one batch; `clock_ns`: see [`Detector::process_at`] (`None`:
    /// the latest event time this detector saw).
    fn batch(
        &mut self,
        records: &[FlowRecord],
        key: &[u8],
        clock_ns: Option<u64>,
        replayed: bool,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        match clock_ns {
            None => self.detector.process(records, &mut self.buf),
            Some(c) if records.is_empty() => {
                if let Ok(id) = std::str::from_utf8(key) {
                    self.detector.tick(id, c, &mut self.buf);
                }
            }
            Some(c) => self.detector.process_at(records, c, &mut self.buf),
        }
        self.emit()?;
        if let Some(o) = &self.metrics {
            let done = Instant::now();
            o.m.batch_seconds
                .observe(done.saturating_duration_since(started).as_secs_f64());
            if o.normals_at
                .is_none_or(|t| done.saturating_duration_since(t) >= NORMALS_EVERY)
            {
                self.observe_normals();
            }
        }
        let clock = clock_ns.unwrap_or(0);
        if let Some(f) = self.flows.as_mut() {
            f.accept_batch(records, key, clock, replayed)?;
        }
        if let Some(e) = self.evidence.as_mut() {
            e.accept_batch(records, key, clock, replayed)?;
        }
        Ok(())
    }
}

impl FlowSink for DetectorSink<'_> {
    fn accept(&mut self, records: &[FlowRecord]) -> anyhow::Result<()> {
        self.batch(records, &[], None, false)
    }

    fn accept_batch(
        &mut self,
        records: &[FlowRecord],
        key: &[u8],
        clock_ns: u64,
        replayed: bool,
    ) -> anyhow::Result<()> {
        self.batch(records, key, Some(clock_ns), replayed)
    }

    fn reassigned(&mut self) -> anyhow::Result<()> {
        let Some(r) = self.rebuild.as_mut() else {
            return Ok(());
        };
        // This member's own events first, so the topic read below holds them.
        self.alerts.drain()?;
        let published = (r.published)().context("cannot read the alerts topic")?;
        r.pending.clear();
        for p in published {
            *r.pending.entry(p).or_default() += 1;
        }
        self.detector.reset();
        if let Some(o) = self.metrics.as_mut() {
            o.open.clear(&o.m);
        }
        tracing::info!(
            published = r.pending.values().map(|&n| u64::from(n)).sum::<u64>(),
            "rebuilding detector state from the start of the assigned partitions"
        );
        if let Some(f) = self.flows.as_mut() {
            f.reassigned()?;
        }
        if let Some(e) = self.evidence.as_mut() {
            e.reassigned()?;
        }
        Ok(())
    }

    fn end(&mut self) -> anyhow::Result<()> {
        self.finish()?;
        if let Some(f) = self.flows.as_mut() {
            f.end()?;
        }
        if let Some(e) = self.evidence.as_mut() {
            e.end()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.alerts.flush()?;
        if let Some(f) = self.flows.as_mut() {
            f.flush()?;
        }
        if let Some(e) = self.evidence.as_mut() {
            AlertSink::flush(&mut **e)?;
        }
        Ok(())
    }

    fn idle(&mut self) -> anyhow::Result<()> {
        self.observe_normals();
        if let Some(f) = self.flows.as_mut() {
            f.idle()?;
        }
        if let Some(e) = self.evidence.as_mut() {
            e.idle()?;
        }
        Ok(())
    }
}

/// The detector stage's metrics (`normwatch_detect_*`). Label values (assets, kinds, norms,
/// severities, sectors) come from the configuration and the norm catalogue, never from
/// traffic.
#[derive(Clone, Debug)]
pub struct DetectMetrics {
    /// Inbound packets, bits and new flows per second towards each asset, in the latest
    /// complete event second.
    pub asset_pps: GaugeVec,
    pub asset_bps: GaugeVec,
    pub asset_new_flows: GaugeVec,
    /// The configured static thresholds (total), for dashboards to draw beside the rates.
    pub asset_threshold: GaugeVec,
    /// The asset's learned normal, by rate (pps, bps, new_flows_per_s).
    pub asset_baseline: GaugeVec,
    /// Quiet seconds the baseline has learned from.
    pub asset_baseline_seconds: GaugeVec,
    /// Service ratios on the asset's service ports: the learned normal (continuously) and
    /// the values measured at its latest alert.
    pub asset_impairment: GaugeVec,
    /// Alerts open now.
    pub open_alerts: IntGaugeVec,
    /// Alerts open now, per norm they would violate.
    pub open_alerts_by_norm: IntGaugeVec,
    /// Alert events emitted.
    pub alert_events: IntCounterVec,
    /// Event time from an attack's start to its alert's opening.
    pub open_delay: HistogramVec,
    /// Wall time to run the detector over one consumed batch and hand on its events.
    pub batch_seconds: Histogram,
    /// Event time of the latest record processed (seconds since the epoch).
    pub event_time: Gauge,
}

impl DetectMetrics {
    pub(crate) fn new(registry: &Registry) -> prometheus::Result<Self> {
        let gauge =
            |name: &str, help: &str, labels: &[&str]| GaugeVec::new(Opts::new(name, help), labels);
        let m = DetectMetrics {
            asset_pps: gauge(
                "normwatch_detect_asset_packets_per_second",
                "Inbound packets per second towards the asset (latest complete event second).",
                &["asset"],
            )?,
            asset_bps: gauge(
                "normwatch_detect_asset_bits_per_second",
                "Inbound bits per second towards the asset (latest complete event second).",
                &["asset"],
            )?,
            asset_new_flows: gauge(
                "normwatch_detect_asset_new_flows_per_second",
                "New flows per second towards the asset (latest complete event second).",
                &["asset"],
            )?,
            asset_threshold: gauge(
                "normwatch_detect_asset_threshold",
                "The asset's configured total threshold, by rate (pps, bps, new_flows_per_s).",
                &["asset", "rate"],
            )?,
            asset_baseline: gauge(
                "normwatch_detect_asset_baseline",
                "The asset's learned normal inbound traffic, by rate (pps, bps, new_flows_per_s).",
                &["asset", "rate"],
            )?,
            asset_baseline_seconds: gauge(
                "normwatch_detect_asset_baseline_seconds",
                "Quiet seconds the asset's baseline has learned from.",
                &["asset"],
            )?,
            asset_impairment: gauge(
                "normwatch_detect_asset_service_ratio",
                "Service ratios on the asset's service ports (0 to 1): baseline_handshake_completion and baseline_response_ratio (learned), handshake_completion and response_ratio (at the latest alert).",
                &["asset", "ratio"],
            )?,
            open_alerts: IntGaugeVec::new(
                Opts::new(
                    "normwatch_detect_open_alerts",
                    "Alerts open now, by asset, sector, kind and severity.",
                ),
                &["asset", "sector", "kind", "severity"],
            )?,
            open_alerts_by_norm: IntGaugeVec::new(
                Opts::new(
                    "normwatch_detect_open_alerts_by_norm",
                    "Alerts open now, by asset and by each norm the activity would violate.",
                ),
                &["asset", "norm"],
            )?,
            alert_events: IntCounterVec::new(
                Opts::new(
                    "normwatch_detect_alert_events_total",
                    "Alert events emitted, by asset, kind and state (open, update, closed).",
                ),
                &["asset", "kind", "state"],
            )?,
            open_delay: HistogramVec::new(
                HistogramOpts::new(
                    "normwatch_detect_alert_open_delay_seconds",
                    "Event time from an attack's first second to its alert opening, by kind.",
                )
                .buckets(vec![0.0, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0]),
                &["kind"],
            )?,
            batch_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "normwatch_detect_batch_seconds",
                    "Wall time to run the detector over one batch and hand on its alert events.",
                )
                .buckets(prometheus::exponential_buckets(0.000_01, 4.0, 10)?),
            )?,
            event_time: Gauge::new(
                "normwatch_detect_event_time_seconds",
                "Event time of the latest flow record processed, seconds since the epoch.",
            )?,
        };
        registry.register(Box::new(m.asset_pps.clone()))?;
        registry.register(Box::new(m.asset_bps.clone()))?;
        registry.register(Box::new(m.asset_new_flows.clone()))?;
        registry.register(Box::new(m.asset_threshold.clone()))?;
        registry.register(Box::new(m.asset_baseline.clone()))?;
        registry.register(Box::new(m.asset_baseline_seconds.clone()))?;
        registry.register(Box::new(m.asset_impairment.clone()))?;
        registry.register(Box::new(m.open_alerts.clone()))?;
        registry.register(Box::new(m.open_alerts_by_norm.clone()))?;
        registry.register(Box::new(m.alert_events.clone()))?;
        registry.register(Box::new(m.open_delay.clone()))?;
        registry.register(Box::new(m.batch_seconds.clone()))?;
        registry.register(Box::new(m.event_time.clone()))?;
        Ok(m)
    }
}

/// Follows alert events to keep the open-alert gauges right as severities change and alerts
/// close.
#[derive(Debug, Default)]
pub struct OpenAlerts {
    /// Alert id → the label values its gauges were raised under.
    open: HashMap<String, (Vec<String>, Vec<String>)>,
}

impl OpenAlerts {
    /// Forgets every open alert (the detector's state was dropped), lowering its gauges.
    pub fn clear(&mut self, m: &DetectMetrics) {
        for (_, (labels, norms)) in self.open.drain() {
            let l: Vec<&str> = labels.iter().map(String::as_str).collect();
            m.open_alerts.with_label_values(&l).dec();
            for n in &norms {
                m.open_alerts_by_norm.with_label_values(&[l[0], n]).dec();
            }
        }
    }

    pub fn event(&mut self, m: &DetectMetrics, a: &Alert, opened_at_ns: u64) {
        let state = match a.state {
            AlertState::Open => "open",
            AlertState::Update => "update",
            AlertState::Closed => "closed",
        };
        m.alert_events
            .with_label_values(&[a.asset.as_str(), a.kind.as_str(), state])
            .inc();
        if let Some(i) = &a.impairment {
            if let Some(v) = i.handshake_completion {
                m.asset_impairment
                    .with_label_values(&[a.asset.as_str(), "handshake_completion"])
                    .set(v);
            }
            if let Some(v) = i.response_ratio {
                m.asset_impairment
                    .with_label_values(&[a.asset.as_str(), "response_ratio"])
                    .set(v);
            }
        }
        if a.state == AlertState::Open {
            let delay = opened_at_ns.saturating_sub(a.window_start_ns) as f64 / 1e9;
            m.open_delay
                .with_label_values(&[a.kind.as_str()])
                .observe(delay);
        }
        if let Some((labels, norms)) = self.open.remove(&a.id) {
            let l: Vec<&str> = labels.iter().map(String::as_str).collect();
            m.open_alerts.with_label_values(&l).dec();
            for n in &norms {
                m.open_alerts_by_norm
                    .with_label_values(&[a.asset.as_str(), n])
                    .dec();
            }
        }
        if a.state != AlertState::Closed {
            let labels = vec![
                a.asset.as_str().to_string(),
                a.sector.as_str().to_string(),
                a.kind.as_str().to_string(),
                severity_label(a.severity).to_string(),
            ];
            let l: Vec<&str> = labels.iter().map(String::as_str).collect();
            m.open_alerts.with_label_values(&l).inc();
            for n in &a.norms.violated {
                m.open_alerts_by_norm
                    .with_label_values(&[a.asset.as_str(), n])
                    .inc();
            }
            self.open
                .insert(a.id.clone(), (labels, a.norms.violated.clone()));
        }
    }
}

/// Publishes what the detector holds per asset: the latest final second and the learned
/// normal (read from its state, not counted again here).
pub fn observe_normals(m: &DetectMetrics, d: &Detector) {
    m.event_time.set(d.event_time_ns() as f64 / 1e9);
    for (asset, n) in d.normals() {
        m.asset_pps.with_label_values(&[asset]).set(n.latest.pps);
        m.asset_bps.with_label_values(&[asset]).set(n.latest.bps);
        m.asset_new_flows
            .with_label_values(&[asset])
            .set(n.latest.new_flows_per_s);
        for (rate, v) in [
            ("pps", n.pps),
            ("bps", n.bps),
            ("new_flows_per_s", n.new_flows_per_s),
        ] {
            m.asset_baseline.with_label_values(&[asset, rate]).set(v);
        }
        m.asset_baseline_seconds
            .with_label_values(&[asset])
            .set(n.seconds as f64);
        for (ratio, v) in [
            ("baseline_handshake_completion", n.handshake_completion),
            ("baseline_response_ratio", n.response_ratio),
        ] {
            if let Some(v) = v {
                m.asset_impairment.with_label_values(&[asset, ratio]).set(v);
            }
        }
    }
}

fn severity_label(s: normwatch_model::Severity) -> &'static str {
    match s {
        normwatch_model::Severity::Low => "low",
        normwatch_model::Severity::Medium => "medium",
        normwatch_model::Severity::High => "high",
        normwatch_model::Severity::Critical => "critical",
    }
}
