//! The seams between stages: what each stage hands its output to.
//!
//! - [`RecordSink`]: the flow table's finished records (sensor side: batching, publishing).
//! - [`FlowSink`]: consumed flow records (detector stage, evidence stage, outputs).
//! - [`AlertSink`]: alert events (log, alerts topic, evidence stage).
//! - [`FlowAndAlertSink`]: a stage that takes both (the evidence stage).
//!
//! The traits live here, apart from every stage, so stages depend on this module and never on
//! each other.

use normwatch_model::{Alert, FlowRecord};
use std::time::Instant;

/// Receives what the flow table produces.
pub trait RecordSink {
    /// Takes (drains) finished records; `now` is the wall clock, for batching deadlines.
    fn records(&mut self, buf: &mut Vec<FlowRecord>, now: Instant);
    /// Called regularly even when no record ended, so partial batches can go out.
    fn tick(&mut self, now: Instant);
}

/// Where consumed flow records go.
pub trait FlowSink {
    /// Takes one batch's records.
    fn accept(&mut self, records: &[FlowRecord]) -> anyhow::Result<()>;
    /// Takes one consumed batch: its records, its key (the asset id, for a batch of an
    /// asset's records) and the sensor's clock before it (see `normwatch_transport::wire`).
    /// A batch may be empty: a tick that only moves the key's asset's clock. A `replayed`
    /// batch was processed before (this member rebuilds its state from the topic, see
    /// `normwatch_transport::bus::Subscriber::replayed`): only state is rebuilt from it,
    /// nothing is handed on.
    fn accept_batch(
        &mut self,
        records: &[FlowRecord],
        key: &[u8],
        clock_ns: u64,
        replayed: bool,
    ) -> anyhow::Result<()> {
        let _ = (key, clock_ns);
        if records.is_empty() || replayed {
            return Ok(());
        }
        self.accept(records)
    }
    /// The consumer group changed this member's partitions: what follows starts again from
    /// the start of each (a rebuilding member), so state built so far is dropped.
    fn reassigned(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// The input ended (idle limit, stop signal, closed bus) without error; called before the
    /// member leaves its group, so what this does is done before another member takes over.
    fn end(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Makes everything accepted so far durable; called before offsets are committed.
    fn flush(&mut self) -> anyhow::Result<()>;
    /// No records arrived for a poll interval: time-driven work (retrying deliveries) runs
    /// here, so it does not wait for traffic.
    fn idle(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Where alert events go.
pub trait AlertSink {
    fn alert(&mut self, alert: &Alert) -> anyhow::Result<()>;
    /// Makes the alerts so far durable; called before the records behind them are committed.
    fn flush(&mut self) -> anyhow::Result<()>;
    /// Like `flush`, and waits until the alerts are where others read them (not only in a
    /// spool).
    fn drain(&mut self) -> anyhow::Result<()> {
        self.flush()
    }
}

/// Hands every event to each of several sinks.
pub struct TeeAlerts<'a>(pub Vec<&'a mut dyn AlertSink>);

impl std::fmt::Debug for TeeAlerts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TeeAlerts").field(&self.0.len()).finish()
    }
}

impl AlertSink for TeeAlerts<'_> {
    fn alert(&mut self, a: &Alert) -> anyhow::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.alert(a))
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.flush())
    }

    fn drain(&mut self) -> anyhow::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.drain())
    }
}

/// Hands every batch to each of several flow sinks.
pub struct TeeFlows<'a>(pub Vec<&'a mut dyn FlowSink>);

impl std::fmt::Debug for TeeFlows<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("TeeFlows").field(&self.0.len()).finish()
    }
}

impl FlowSink for TeeFlows<'_> {
    fn accept(&mut self, records: &[FlowRecord]) -> anyhow::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.accept(records))
    }

    fn accept_batch(
        &mut self,
        records: &[FlowRecord],
        key: &[u8],
        clock_ns: u64,
        replayed: bool,
    ) -> anyhow::Result<()> {
        self.0
            .iter_mut()
            .try_for_each(|s| s.accept_batch(records, key, clock_ns, replayed))
    }

    fn reassigned(&mut self) -> anyhow::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.reassigned())
    }

    fn end(&mut self) -> anyhow::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.end())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.flush())
    }

    fn idle(&mut self) -> anyhow::Result<()> {
        self.0.iter_mut().try_for_each(|s| s.idle())
    }
}

/// A stage that takes both the consumed flows and the alert events they caused (the evidence
/// stage): handed to the detector stage as one sink, so no shared handle is needed.
pub trait FlowAndAlertSink: FlowSink + AlertSink {}

impl<T: FlowSink + AlertSink> FlowAndAlertSink for T {}
