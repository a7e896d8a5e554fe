//! The process's metrics registry and the pipeline's own counters.

use normwatch_model::{Alert, AlertState};
use normwatch_sensor::decode::DropReason;
use normwatch_sensor::SensorStats;
use normwatch_transport::metrics::TransportMetrics;
use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use std::collections::HashMap;

/// Counters of the stages wired here (`normwatch_sensor_*`, `normwatch_detect_*`).
#[derive(Clone, Debug)]
pub struct PipelineMetrics {
    /// Flow records the flow table produced.
    pub sensor_records: IntCounter,
    /// Flow records handed to the transport.
    pub sensor_records_published: IntCounter,
    /// Batches handed to the transport.
    pub sensor_batches_published: IntCounter,
    /// Flow records that could not be handed to the transport.
    pub sensor_records_lost: IntCounter,
    /// Flow records consumed and handed on by the detector stage.
    pub detect_records: IntCounter,
}

impl PipelineMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let c = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(PipelineMetrics {
            sensor_records: c(
                "normwatch_sensor_flow_records_total",
                "Flow records produced by the flow table.",
            )?,
            sensor_records_published: c(
                "normwatch_sensor_published_records_total",
                "Flow records handed to the transport.",
            )?,
            sensor_batches_published: c(
                "normwatch_sensor_published_batches_total",
                "Flow record batches handed to the transport.",
            )?,
            sensor_records_lost: c(
                "normwatch_sensor_lost_records_total",
                "Flow records that could not be handed to the transport.",
            )?,
            detect_records: c(
                "normwatch_detect_flow_records_total",
                "Flow records consumed by the detector stage.",
            )?,
        })
    }
}

/// The sensor's packet-level metrics (`normwatch_sensor_*`), fed from the flow table's
/// counters between batches. Labels: the fixed drop reasons and capture drop places.
#[derive(Clone, Debug)]
pub struct SensorMetrics {
    pub packets: IntCounter,
    pub bytes: IntCounter,
    /// Packets not counted into a flow, by decoder reason.
    pub dropped: IntCounterVec,
    /// Packets lost before decoding (`kernel`: the capture ring was full; `channel`: a queue
    /// to the flow table, none since the ring is read in place, kept at 0 for dashboards).
    pub capture_dropped: IntCounterVec,
    /// Times the kernel found the capture ring full (`tp_freeze_q_cnt`).
    pub capture_ring_freezes: IntCounter,
    pub active_flows: IntGauge,
    pub evicted_flows: IntCounter,
}

impl SensorMetrics {
    fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = SensorMetrics {
            packets: IntCounter::new(
                "normwatch_sensor_packets_total",
                "Packets (frames) read from captures or interfaces.",
            )?,
            bytes: IntCounter::new(
                "normwatch_sensor_bytes_total",
                "Captured bytes of those packets.",
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "normwatch_sensor_dropped_packets_total",
                    "Packets not counted into any flow, by reason.",
                ),
                &["reason"],
            )?,
            capture_dropped: IntCounterVec::new(
                Opts::new(
                    "normwatch_sensor_capture_dropped_packets_total",
                    "Packets lost before decoding: kernel (capture ring full) or channel (queue to the flow table).",
                ),
                &["where"],
            )?,
            capture_ring_freezes: IntCounter::new(
                "normwatch_sensor_capture_ring_freezes_total",
                "Times the kernel found the live-capture ring full (tp_freeze_q_cnt); its drops are in capture_dropped_packets_total{where=\"kernel\"}.",
            )?,
            active_flows: IntGauge::new(
                "normwatch_sensor_active_flows",
                "Flows currently tracked by the flow table.",
            )?,
            evicted_flows: IntCounter::new(
                "normwatch_sensor_evicted_flows_total",
                "Flows reported early because the flow table was full.",
            )?,
        };
        registry.register(Box::new(m.packets.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.capture_dropped.clone()))?;
        registry.register(Box::new(m.capture_ring_freezes.clone()))?;
        registry.register(Box::new(m.active_flows.clone()))?;
        registry.register(Box::new(m.evicted_flows.clone()))?;
        // Every label value exists from the start, so rates over them are defined at once.
        for r in DropReason::ALL {
            m.dropped.with_label_values(&[r.as_str()]);
        }
        for w in ["kernel", "channel"] {
            m.capture_dropped.with_label_values(&[w]);
        }
        Ok(m)
    }

    /// Adds what the flow table counted since `seen` (its counters as last observed), then
    /// remembers `now`.
    pub fn observe(&self, seen: &mut SensorStats, now: &SensorStats) {
        self.packets
            .inc_by(now.packets.saturating_sub(seen.packets));
        self.bytes.inc_by(now.bytes.saturating_sub(seen.bytes));
        for r in DropReason::ALL {
            let d = now.drops_for(r).saturating_sub(seen.drops_for(r));
            if d > 0 {
                self.dropped.with_label_values(&[r.as_str()]).inc_by(d);
            }
        }
        self.evicted_flows
            .inc_by(now.evictions().saturating_sub(seen.evictions()));
        // A difference, not a value: with several capture threads each table adds its own.
        self.active_flows
            .add(now.flows_active as i64 - seen.flows_active as i64);
        seen.clone_from(now);
    }

    /// Adds capture-level drops (totals since the capture started, `seen` as last observed).
    pub fn observe_capture(
        &self,
        seen: &mut (u64, u64, u64),
        kernel: u64,
        channel: u64,
        freezes: u64,
    ) {
        self.capture_dropped
            .with_label_values(&["kernel"])
            .inc_by(kernel.saturating_sub(seen.0));
        self.capture_dropped
            .with_label_values(&["channel"])
            .inc_by(channel.saturating_sub(seen.1));
        self.capture_ring_freezes
            .inc_by(freezes.saturating_sub(seen.2));
        *seen = (kernel, channel, freezes);
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
    fn new(registry: &Registry) -> prometheus::Result<Self> {
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
pub fn observe_normals(m: &DetectMetrics, d: &normwatch_detect::Detector) {
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

/// Every metric of one process, in one registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub transport: TransportMetrics,
    pub pipeline: PipelineMetrics,
    pub sensor: SensorMetrics,
    pub detect: DetectMetrics,
    pub evidence: crate::evidence::EvidenceMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let mut transport = TransportMetrics::new(&registry).expect("metric definitions are valid");
        let pipeline = PipelineMetrics::new(&registry).expect("metric definitions are valid");
        // Records the spool drops are records the sensor lost.
        transport.lost_records = pipeline.sensor_records_lost.clone();
        let sensor = SensorMetrics::new(&registry).expect("metric definitions are valid");
        let detect = DetectMetrics::new(&registry).expect("metric definitions are valid");
        let evidence =
            crate::evidence::EvidenceMetrics::new(&registry).expect("metric definitions are valid");
        Metrics {
            registry,
            transport,
            pipeline,
            sensor,
            detect,
            evidence,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode_text(&self) -> String {
        let mut buf = Vec::new();
        // Encoding into memory fails only for invalid metric families, which cannot be built.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
