//! The sensor stage: flow records from the source, batched and published on the flows topic.

use crate::batcher::{Encoded, FlowBatcher};
use crate::sinks::RecordSink;
use normwatch_model::FlowRecord;
use normwatch_transport::bus::{Publisher, Topic};
use prometheus::{IntCounter, Registry};
use std::time::Instant;

/// A [`RecordSink`] that publishes batches. The first transport error is kept (and later
/// records are dropped and counted) so the caller can report it once the source is done.
pub struct Publish<'a> {
    batcher: FlowBatcher,
    publisher: &'a mut dyn Publisher,
    metrics: PublishMetrics,
    encoded: Vec<Encoded>,
    error: Option<anyhow::Error>,
    /// Records handed to the transport.
    pub records: u64,
    /// Batches handed to the transport.
    pub batches: u64,
}

impl std::fmt::Debug for Publish<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publish")
            .field("records", &self.records)
            .field("batches", &self.batches)
            .finish_non_exhaustive()
    }
}

impl<'a> Publish<'a> {
    pub fn new(
        batcher: FlowBatcher,
        publisher: &'a mut dyn Publisher,
        metrics: PublishMetrics,
    ) -> Self {
        Publish {
            batcher,
            publisher,
            metrics,
            encoded: Vec::new(),
            error: None,
            records: 0,
            batches: 0,
        }
    }

    fn send(&mut self) {
        for e in self.encoded.drain(..) {
            if self.error.is_some() {
                self.metrics.records_lost.inc_by(e.records as u64);
                continue;
            }
            match self.publisher.publish(Topic::Flows, &e.key, e.payload) {
                Ok(()) => {
                    self.records += e.records as u64;
                    self.batches += 1;
                    self.metrics.records_published.inc_by(e.records as u64);
                    self.metrics.batches_published.inc();
                }
                Err(err) => {
                    self.metrics.records_lost.inc_by(e.records as u64);
                    self.error = Some(anyhow::Error::new(err).context("cannot publish flows"));
                }
            }
        }
    }

    fn fail_encode(&mut self, e: normwatch_transport::wire::EncodeError) {
        if self.error.is_none() {
            self.error = Some(anyhow::Error::new(e).context("cannot encode a flow batch"));
        }
    }

    /// Sends every partial batch and returns the first error met, if any.
    pub fn finish(mut self) -> anyhow::Result<(u64, u64)> {
        if let Err(e) = self.batcher.flush(&mut self.encoded) {
            self.fail_encode(e);
        }
        self.send();
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.records, self.batches)),
        }
    }

    /// Whether publishing failed (reading can stop early).
    pub fn failed(&self) -> bool {
        self.error.is_some()
    }
}

impl RecordSink for Publish<'_> {
    fn records(&mut self, buf: &mut Vec<FlowRecord>, now: Instant) {
        if buf.is_empty() {
            return;
        }
        self.metrics.records.inc_by(buf.len() as u64);
        if let Err(e) = self.batcher.push(buf, now, &mut self.encoded) {
            buf.clear();
            self.fail_encode(e);
        }
        self.send();
    }

    fn tick(&mut self, now: Instant) {
        if let Err(e) = self.batcher.tick(now, &mut self.encoded) {
            self.fail_encode(e);
        }
        self.send();
    }
}

/// The publishing side's counters (`normwatch_sensor_*`).
#[derive(Clone, Debug)]
pub struct PublishMetrics {
    /// Flow records the flow table produced.
    pub records: IntCounter,
    /// Flow records handed to the transport.
    pub records_published: IntCounter,
    /// Batches handed to the transport.
    pub batches_published: IntCounter,
    /// Flow records that could not be handed to the transport.
    pub records_lost: IntCounter,
}

impl PublishMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let c = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        Ok(PublishMetrics {
            records: c(
                "normwatch_sensor_flow_records_total",
                "Flow records produced by the flow table.",
            )?,
            records_published: c(
                "normwatch_sensor_published_records_total",
                "Flow records handed to the transport.",
            )?,
            batches_published: c(
                "normwatch_sensor_published_batches_total",
                "Flow record batches handed to the transport.",
            )?,
            records_lost: c(
                "normwatch_sensor_lost_records_total",
                "Flow records that could not be handed to the transport.",
            )?,
        })
    }
}
