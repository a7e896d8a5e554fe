//! The process's metrics registry: every stage's metrics, each defined beside its stage (the
//! sensor's in [`crate::capture`], publishing in [`crate::publish`], consuming in
//! [`crate::consume`], the detector's in [`crate::detector`], the evidence stage's in
//! [`crate::evidence`]). Stages never depend on this module.

use normwatch_transport::metrics::TransportMetrics;
use prometheus::{Encoder, Registry, TextEncoder};

/// Every metric of one process, in one registry.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub transport: TransportMetrics,
    pub publish: crate::publish::PublishMetrics,
    pub consume: crate::consume::ConsumeMetrics,
    pub sensor: crate::capture::SensorMetrics,
    pub detect: crate::detector::DetectMetrics,
    pub evidence: crate::evidence::EvidenceMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let mut transport = TransportMetrics::new(&registry).expect("metric definitions are valid");
        let publish =
            crate::publish::PublishMetrics::new(&registry).expect("metric definitions are valid");
        let consume =
            crate::consume::ConsumeMetrics::new(&registry).expect("metric definitions are valid");
        // Records the spool drops are records the sensor lost.
        transport.lost_records = publish.records_lost.clone();
        let sensor =
            crate::capture::SensorMetrics::new(&registry).expect("metric definitions are valid");
        let detect =
            crate::detector::DetectMetrics::new(&registry).expect("metric definitions are valid");
        let evidence =
            crate::evidence::EvidenceMetrics::new(&registry).expect("metric definitions are valid");
        Metrics {
            registry,
            transport,
            publish,
            consume,
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
