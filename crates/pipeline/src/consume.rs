//! The consuming stage: batches from the flows topic are verified, de-duplicated and handed to
//! a [`FlowSink`]; a batch's offset is committed only after the sink has made it durable.
//! Bad batches (corrupt, wrong schema version) are counted by reason, logged and skipped:
//! they never stop the consumer.

use crate::capture::InputError;
use crate::sinks::FlowSink;
use normwatch_config::{BusKind, Config, SpoolConfig};
use normwatch_model::FlowRecord;
use normwatch_transport::bus::{Subscriber, TransportError};
use normwatch_transport::dedup::Deduplicator;
use normwatch_transport::metrics::TransportMetrics;
use normwatch_transport::spool::{Spool, SpoolError};
use normwatch_transport::wire::decode_batch_into;
use prometheus::{IntCounter, Registry};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The spool of one detector's alert publisher: `detect-<group>-<pid>` under `spool.path`,
/// apart from any sensor's on this host and from the other members of the group (a spool is
/// locked by the process using it).
///
/// A detector commits a flow batch once the alert events it caused are acknowledged or in
/// this spool, so what a detector leaves in its spool (killed, or stopped during an outage)
/// must not be stranded: every member, as it starts, takes over the spools of its group that
/// no live process holds, moving their events into its own, which it sends first.
pub fn member_spool(spool: &SpoolConfig, group: &str) -> Result<SpoolConfig, SpoolError> {
    let mut own = spool.clone();
    let prefix = format!("detect-{group}-");
    own.path = spool.path.join(format!("{prefix}{}", std::process::id()));
    let Ok(dirs) = std::fs::read_dir(&spool.path) else {
        return Ok(own);
    };
    let mut orphans: Vec<_> = dirs
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p != &own.path
                && p.is_dir()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_prefix(&prefix))
                    .is_some_and(|pid| pid.chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    if orphans.is_empty() {
        return Ok(own);
    }
    orphans.sort();
    let mut mine = Spool::open(&own.path, own.max_bytes)?;
    for dir in orphans {
        let mut theirs = match Spool::open(&dir, own.max_bytes) {
            Ok(s) => s,
            // A live member's, or one another starting member is taking over.
            Err(SpoolError::Locked(_)) => continue,
            Err(e) => {
                tracing::warn!(error = %e, path = %dir.display(), "cannot open an earlier detector's spool");
                continue;
            }
        };
        let moved = mine.take_from(&mut theirs)?;
        drop(theirs);
        if moved > 0 {
            tracing::info!(
                events = moved,
                from = %dir.display(),
                "took over alert events an earlier detector of the group left spooled"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(own)
}

/// At a detector's end: its spool is removed if empty, else left for the next member of the
/// group to take over (see [`member_spool`]).
pub fn release_member_spool(path: &Path, max_bytes: u64) {
    let empty = Spool::open(path, max_bytes).is_ok_and(|s| s.is_empty());
    if empty {
        let _ = std::fs::remove_dir_all(path);
    } else {
        tracing::warn!(
            path = %path.display(),
            "alert events remain spooled; the next detector of the group sends them"
        );
    }
}

/// A sink that only counts.
#[derive(Debug, Default)]
pub struct CountingSink {
    pub records: u64,
}

impl FlowSink for CountingSink {
    fn accept(&mut self, records: &[FlowRecord]) -> anyhow::Result<()> {
        self.records += records.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// When the consumer stops.
#[derive(Debug, Default)]
pub struct ConsumeOptions {
    /// Stop after no message arrived for this long (`None`: run until stopped). The clock
    /// restarts whenever the consumer group hands this member partitions, so time spent
    /// joining or rebalancing is not counted as idle.
    pub exit_when_idle: Option<Duration>,
    /// At a successful end, the sink's [`FlowSink::end`] runs before the member leaves its
    /// group (a detector group member closes its alerts while it still owns its partitions).
    pub end_before_leaving: bool,
}

/// What a consumer run did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConsumeSummary {
    pub batches: u64,
    pub records: u64,
    pub duplicates: u64,
    pub rejected: u64,
}

/// Consumes flow batches until the transport closes, `stop` is raised, or the idle limit
/// passes; then commits and leaves the group.
pub fn consume_flows(
    sub: &mut dyn Subscriber,
    sink: &mut dyn FlowSink,
    transport: &TransportMetrics,
    metrics: &ConsumeMetrics,
    opts: &ConsumeOptions,
    stop: &AtomicBool,
) -> anyhow::Result<ConsumeSummary> {
    let mut dedup = Deduplicator::new(65_536);
    let mut summary = ConsumeSummary::default();
    let mut last_message = Instant::now();
    // A message arrived since `last_message` was last set.
    let mut heard = false;
    // Every batch is decoded into this one buffer.
    let mut records: Vec<FlowRecord> = Vec::new();
    let mut assignments = sub.assignments();
    let result = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let polled = sub.poll(Duration::from_millis(100));
        if sub.assignments() != assignments {
            assignments = sub.assignments();
            last_message = Instant::now();
            // Partitions are read again from where the new assignment starts.
            dedup = Deduplicator::new(65_536);
            if let Err(e) = sink.reassigned() {
                break Err(e.context("cannot take over the assigned partitions"));
            }
        }
        let delivery = match polled {
            Ok(Some(d)) => d,
            Ok(None) => {
                if let Err(e) = sink.idle() {
                    break Err(e.context("idle work of the flow sink failed"));
                }
                // The clock is read here, when a poll found nothing, rather than for every
                // message: the last one came at most one poll ago.
                if heard {
                    heard = false;
                    last_message = Instant::now();
                }
                if opts
                    .exit_when_idle
                    .is_some_and(|idle| last_message.elapsed() >= idle)
                {
                    break Ok(());
                }
                continue;
            }
            Err(TransportError::Closed) => break Ok(()),
            Err(e) => break Err(anyhow::Error::new(e).context("cannot consume flows")),
        };
        heard = true;
        let replayed = sub.replayed(&delivery);
        match decode_batch_into::<FlowRecord>(&delivery.payload, &mut records) {
            Ok(batch) => {
                if dedup.is_new(batch.sensor_id, delivery.partition, batch.seq) {
                    if let Err(e) = sink
                        .accept_batch(&records, &delivery.key, batch.clock_ns, replayed)
                        .and_then(|()| sink.flush())
                    {
                        // Not committed: a restart processes this batch again.
                        break Err(e.context("cannot hand flows on"));
                    }
                    summary.batches += 1;
                    summary.records += records.len() as u64;
                    metrics.records.inc_by(records.len() as u64);
                } else {
                    summary.duplicates += 1;
                    transport.duplicate_batches.inc();
                    tracing::debug!(
                        sensor = %batch.sensor_id,
                        seq = batch.seq,
                        partition = delivery.partition,
                        "dropped a batch already processed"
                    );
                }
            }
            Err(e) => {
                summary.rejected += 1;
                transport
                    .rejected_batches
                    .with_label_values(&[e.reason()])
                    .inc();
                tracing::warn!(
                    reason = e.reason(),
                    partition = delivery.partition,
                    offset = delivery.offset,
                    "rejected a batch: {e}"
                );
            }
        }
        // A replayed delivery lies before the committed offset, which must not move back.
        if replayed {
            continue;
        }
        if let Err(e) = sub.commit(&delivery) {
            break Err(anyhow::Error::new(e).context("cannot commit a consumed batch"));
        }
    };
    let result = if opts.end_before_leaving {
        result.and_then(|()| sink.end())
    } else {
        result
    };
    let closed = sub.close();
    result?;
    closed.map_err(|e| anyhow::Error::new(e).context("cannot commit consumed batches"))?;
    Ok(summary)
}

/// The consuming side's counters (`normwatch_detect_*`).
#[derive(Clone, Debug)]
pub struct ConsumeMetrics {
    /// Flow records consumed and handed on by the detector stage.
    pub records: IntCounter,
}

impl ConsumeMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let records = IntCounter::new(
            "normwatch_detect_flow_records_total",
            "Flow records consumed by the detector stage.",
        )?;
        registry.register(Box::new(records.clone()))?;
        Ok(ConsumeMetrics { records })
    }
}

/// Refuses a Kafka-only subcommand on a configuration whose bus is the in-process one.
pub(crate) fn need_kafka(cfg: &Config, what: &str) -> Result<(), InputError> {
    if cfg.bus.kind == BusKind::Kafka {
        return Ok(());
    }
    let origin = cfg.source.as_ref().map_or_else(
        || "the configuration".to_string(),
        |p| p.display().to_string(),
    );
    Err(InputError(format!(
        "`normwatch {what}` talks to Kafka, but {origin} has bus.kind = \"memory\": set [bus] kind = \"kafka\" and brokers, or run every stage in one process with `normwatch run`"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use normwatch_transport::bus::{memory_bus, Topic};

    /// Regression: a failed evidence delivery waited for the next batch or alert; an idle
    /// consumer now gives its sink idle turns, where the evidence stage retries on its timer.
    #[test]
    fn an_idle_bus_gives_the_sink_idle_turns_for_timed_work() {
        #[derive(Default)]
        struct Idle(u32);
        impl FlowSink for Idle {
            fn accept(&mut self, _: &[FlowRecord]) -> anyhow::Result<()> {
                Ok(())
            }
            fn flush(&mut self) -> anyhow::Result<()> {
                Ok(())
            }
            fn idle(&mut self) -> anyhow::Result<()> {
                self.0 += 1;
                Ok(())
            }
        }
        let (publisher, bus) = memory_bus(4);
        let mut sub = bus.subscriber(Topic::Flows);
        let metrics = crate::metrics::Metrics::new();
        let mut sink = Idle::default();
        let stop = AtomicBool::new(false);
        let summary = consume_flows(
            &mut sub,
            &mut sink,
            &metrics.transport,
            &metrics.consume,
            &ConsumeOptions {
                exit_when_idle: Some(Duration::from_millis(500)),
                ..ConsumeOptions::default()
            },
            &stop,
        )
        .unwrap();
        drop(publisher);
        assert_eq!(summary.records, 0);
        assert!(sink.0 >= 2, "idle turns: {}", sink.0);
    }
}
