//! Transport metrics (`normwatch_transport_*`). Labels are bounded: the topic (three values)
//! and the reject reason (the fixed set of [`crate::wire::DecodeError::reason`] labels).

use crate::bus::Topic;
use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Every transport counter and gauge. Cheap to clone (the metrics are shared handles).
#[derive(Clone, Debug)]
pub struct TransportMetrics {
    /// Messages acknowledged by the broker (or queued on the in-process bus), by topic.
    pub produced_messages: IntCounterVec,
    /// Payload bytes of those messages, by topic.
    pub produced_bytes: IntCounterVec,
    /// Deliveries the broker did not acknowledge in time (the message went to the spool).
    pub delivery_failures: IntCounterVec,
    /// Messages written to the sensor's disk spool.
    pub spooled_messages: IntCounter,
    /// Spooled messages later acknowledged by the broker.
    pub replayed_messages: IntCounter,
    /// Spooled messages dropped because the spool was full (oldest first) or one message was
    /// larger than the whole spool.
    pub spool_dropped_messages: IntCounter,
    /// Flow records in the batches the spool dropped or could not keep. Not registered
    /// here: the pipeline points it at `normwatch_sensor_lost_records_total`.
    pub lost_records: IntCounter,
    /// Messages waiting in the spool.
    pub spool_messages: IntGauge,
    /// Bytes the spool holds on disk.
    pub spool_bytes: IntGauge,
    /// 1 while the broker is unreachable from this process, else 0.
    pub broker_down: IntGauge,
    /// Messages consumed, by topic.
    pub consumed_messages: IntCounterVec,
    /// Batches rejected by the wire decoder, by reason.
    pub rejected_batches: IntCounterVec,
    /// Batches dropped as redeliveries of one already processed.
    pub duplicate_batches: IntCounter,
    /// Errors reported by the Kafka client (connection loss, broker errors), all kinds.
    pub client_errors: IntCounter,
    /// Messages on the consumer's assigned partitions not yet consumed, by topic.
    pub consumer_lag_messages: IntGaugeVec,
}

impl TransportMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let counter_vec = |name: &str, help: &str, label: &str| {
            IntCounterVec::new(Opts::new(name, help), &[label])
        };
        let m = TransportMetrics {
            produced_messages: counter_vec(
                "normwatch_transport_produced_messages_total",
                "Messages acknowledged by the transport, by topic.",
                "topic",
            )?,
            produced_bytes: counter_vec(
                "normwatch_transport_produced_bytes_total",
                "Payload bytes of the messages acknowledged by the transport, by topic.",
                "topic",
            )?,
            delivery_failures: counter_vec(
                "normwatch_transport_delivery_failures_total",
                "Messages the broker did not acknowledge in time (sent to the spool), by topic.",
                "topic",
            )?,
            spooled_messages: IntCounter::new(
                "normwatch_transport_spooled_messages_total",
                "Messages written to the disk spool while the broker was unreachable.",
            )?,
            replayed_messages: IntCounter::new(
                "normwatch_transport_replayed_messages_total",
                "Spooled messages later acknowledged by the broker.",
            )?,
            spool_dropped_messages: IntCounter::new(
                "normwatch_transport_spool_dropped_messages_total",
                "Spooled messages dropped because the spool was full (oldest first).",
            )?,
            lost_records: IntCounter::new(
                "normwatch_transport_lost_records_total",
                "Flow records in batches the spool dropped or could not keep.",
            )?,
            spool_messages: IntGauge::new(
                "normwatch_transport_spool_messages",
                "Messages waiting in the disk spool.",
            )?,
            spool_bytes: IntGauge::new(
                "normwatch_transport_spool_bytes",
                "Bytes held by the disk spool.",
            )?,
            broker_down: IntGauge::new(
                "normwatch_transport_broker_down",
                "1 while no broker is reachable, else 0.",
            )?,
            consumed_messages: counter_vec(
                "normwatch_transport_consumed_messages_total",
                "Messages consumed, by topic.",
                "topic",
            )?,
            rejected_batches: counter_vec(
                "normwatch_transport_rejected_batches_total",
                "Batches rejected by the wire decoder, by reason.",
                "reason",
            )?,
            duplicate_batches: IntCounter::new(
                "normwatch_transport_duplicate_batches_total",
                "Batches dropped as redeliveries of a batch already processed.",
            )?,
            client_errors: IntCounter::new(
                "normwatch_transport_client_errors_total",
                "Errors reported by the Kafka client.",
            )?,
            consumer_lag_messages: IntGaugeVec::new(
                Opts::new(
                    "normwatch_transport_consumer_lag_messages",
                    "Messages on this consumer's partitions not yet consumed, by topic.",
                ),
                &["topic"],
            )?,
        };
        registry.register(Box::new(m.produced_messages.clone()))?;
        registry.register(Box::new(m.produced_bytes.clone()))?;
        registry.register(Box::new(m.delivery_failures.clone()))?;
        registry.register(Box::new(m.spooled_messages.clone()))?;
        registry.register(Box::new(m.replayed_messages.clone()))?;
        registry.register(Box::new(m.spool_dropped_messages.clone()))?;
        registry.register(Box::new(m.spool_messages.clone()))?;
        registry.register(Box::new(m.spool_bytes.clone()))?;
        registry.register(Box::new(m.broker_down.clone()))?;
        registry.register(Box::new(m.consumed_messages.clone()))?;
        registry.register(Box::new(m.rejected_batches.clone()))?;
        registry.register(Box::new(m.duplicate_batches.clone()))?;
        registry.register(Box::new(m.client_errors.clone()))?;
        registry.register(Box::new(m.consumer_lag_messages.clone()))?;
        // Every reason exists from the start, so rates over them are defined at once.
        for r in crate::wire::DecodeError::REASONS {
            m.rejected_batches.with_label_values(&[r]);
        }
        Ok(m)
    }

    /// Metrics registered nowhere (for tests and callers that do not export them).
    pub fn unregistered() -> Self {
        Self::new(&Registry::new()).expect("metric definitions are valid")
    }

    /// The label value of `topic`.
    pub fn topic_label(topic: Topic) -> &'static str {
        match topic {
            Topic::Flows => "flows",
            Topic::Alerts => "alerts",
            Topic::Evidence => "evidence",
        }
    }
}
