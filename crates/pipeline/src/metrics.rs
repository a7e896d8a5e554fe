//! The process's metrics registry and the counters of the transport seam (records published
//! and consumed). Each stage's own metrics live beside it: the sensor's in [`crate::source`],
//! the detector's in [`crate::detector`], the evidence stage's in [`crate::evidence`].

use normwatch_transport::metrics::TransportMetrics;
use prometheus::{Encoder, IntCounter, Registry, TextEncoder};

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

/// Every metric of one process, in one registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub transport: TransportMetrics,
    pub pipeline: PipelineMetrics,
    pub sensor: crate::source::SensorMetrics,
    pub detect: crate::detector::DetectMetrics,
    pub evidence: crate::evidence::EvidenceMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let mut transport = TransportMetrics::new(&registry).expect("metric definitions are valid");
        let pipeline = PipelineMetrics::new(&registry).expect("metric definitions are valid");
        // Records the spool drops are records the sensor lost.
        transport.lost_records = pipeline.sensor_records_lost.clone();
        let sensor =
            crate::source::SensorMetrics::new(&registry).expect("metric definitions are valid");
        let detect =
            crate::detector::DetectMetrics::new(&registry).expect("metric definitions are valid");
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
