//! The sensor stage: flow records from the source, batched and published on the flows topic.

use crate::batcher::{Encoded, FlowBatcher};
use crate::sinks::RecordSink;
use normwatch_model::FlowRecord;
use normwatch_transport::bus::{Publisher, Topic};
use prometheus::{IntCounter, Registry};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::time::Instant;

/// A [`RecordSink`] that publishes batches. The first transport error is kept (and later
/// records are dropped and counted) so the caller can report it once the source is done.
pub struct Publish<'a> {
    batcher: FlowBatcher,
    publisher: &'a mut (dyn Publisher + Send),
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
        publisher: &'a mut (dyn Publisher + Send),
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

/// Records handed to the publishing thread at a time (at least).
const HANDOFF_RECORDS: usize = 256;
/// Hand-offs queued before the flow table waits for the publishing thread.
const HANDOFF_QUEUE: usize = 16;

enum Handed {
    Records(Vec<FlowRecord>, Instant),
    Tick(Instant),
}

/// The [`RecordSink`] side of [`on_own_thread`]: collects records and hands them over a few
/// hundred at a time, in order, and every tick (after what it holds).
struct Handoff {
    to: SyncSender<Handed>,
    /// Emptied buffers coming back, so none is allocated per hand-off.
    spare: Receiver<Vec<FlowRecord>>,
    held: Vec<FlowRecord>,
}

impl Handoff {
    fn hand_over(&mut self, now: Instant) {
        if self.held.is_empty() {
            return;
        }
        let next = self
            .spare
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(HANDOFF_RECORDS));
        let full = std::mem::replace(&mut self.held, next);
        // Refused only once the publishing thread is gone (it panicked): its join says so.
        let _ = self.to.send(Handed::Records(full, now));
    }
}

impl RecordSink for Handoff {
    fn records(&mut self, buf: &mut Vec<FlowRecord>, now: Instant) {
        if self.held.is_empty() {
            // The whole run at once, without copying a record.
            std::mem::swap(&mut self.held, buf);
        } else {
            self.held.append(buf);
        }
        if self.held.len() >= HANDOFF_RECORDS {
            self.hand_over(now);
        }
    }

    fn tick(&mut self, now: Instant) {
        self.hand_over(now);
        let _ = self.to.send(Handed::Tick(now));
    }
}

/// Runs `produce` (the packet reader and flow table) on this thread and `publish` (batching,
/// encoding, publishing) on a thread of its own: the two halves of the sensor take a core
/// each. Records reach `publish` in the order they were produced, so the batches are those
/// one thread would make; a full hand-off queue makes the flow table wait, as a slow
/// publisher did before. Returns what `produce` returned and what [`Publish::finish`] did.
pub fn on_own_thread<T>(
    publish: Publish<'_>,
    produce: impl FnOnce(&mut dyn RecordSink) -> T,
) -> (T, anyhow::Result<(u64, u64)>) {
    std::thread::scope(|scope| {
        let (to, from) = sync_channel::<Handed>(HANDOFF_QUEUE);
        let (give_back, spare) = channel::<Vec<FlowRecord>>();
        let span = tracing::Span::current();
        let worker = std::thread::Builder::new()
            .name("nw-publish".into())
            .spawn_scoped(scope, move || {
                let _span = span.entered();
                let mut publish = publish;
                for handed in from {
                    match handed {
                        Handed::Records(mut records, now) => {
                            publish.records(&mut records, now);
                            records.clear();
                            let _ = give_back.send(records);
                        }
                        Handed::Tick(now) => publish.tick(now),
                    }
                }
                publish.finish()
            });
        let worker = match worker {
            Ok(w) => w,
            Err(e) => {
                return (
                    produce(&mut Dropped),
                    Err(anyhow::Error::new(e).context("cannot start the publishing thread")),
                )
            }
        };
        let mut handoff = Handoff {
            to,
            spare,
            held: Vec::with_capacity(HANDOFF_RECORDS),
        };
        let produced = produce(&mut handoff);
        handoff.hand_over(Instant::now());
        // Closes the queue: the publishing thread takes in the rest, then finishes.
        drop(handoff);
        let published = worker
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the publishing thread panicked")));
        (produced, published)
    })
}

/// Takes records nowhere (only where no publishing thread could be started, whose error is
/// returned).
struct Dropped;

impl RecordSink for Dropped {
    fn records(&mut self, buf: &mut Vec<FlowRecord>, _: Instant) {
        buf.clear();
    }

    fn tick(&mut self, _: Instant) {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use normwatch_model::{AssetId, AssetMatch, ConnState, DirStats, EndReason, Side};
    use normwatch_transport::bus::{memory_bus, Delivery, Subscriber};
    use std::sync::Arc;
    use std::time::Duration;

    fn rec(id: u64) -> FlowRecord {
        FlowRecord {
            sensor_id: Arc::from("s1"),
            flow_id: id,
            orig_addr: "192.0.2.1".parse().unwrap(),
            orig_port: 40000,
            resp_addr: format!("10.0.{}.1", id % 7).parse().unwrap(),
            resp_port: 53,
            ip_proto: 17,
            first_ns: 1_000_000_000 + id * 1_000_000,
            last_ns: 1_000_000_000 + id * 1_000_000,
            orig: DirStats::default(),
            resp: DirStats::default(),
            conn_state: ConnState::S0,
            asset: id.is_multiple_of(3).then(|| AssetMatch {
                id: AssetId(Arc::from(format!("asset-{}", id % 5))),
                side: Side::Resp,
            }),
            ics: None,
            end_reason: EndReason::Interim,
            export: None,
            prior: None,
            attempts: None,
            orig_ttl: None,
            resp_ttl: None,
        }
    }

    /// Publishes 5 000 records, handed over as they would come from a capture (a few per
    /// frame, a tick now and then), and returns every message on the bus.
    fn publish_all(threaded: bool) -> (Vec<Delivery>, (u64, u64)) {
        let (mut publisher, bus) = memory_bus(100_000);
        let mut sub = bus.subscriber(Topic::Flows);
        let batcher = FlowBatcher::new(Arc::from("s1"), 7, 64, 1 << 20, Duration::from_millis(20))
            .by_event_time();
        let metrics = PublishMetrics::new(&Registry::new()).unwrap();
        let publish = Publish::new(batcher, &mut publisher, metrics);
        let produce = |sink: &mut dyn RecordSink| {
            let now = Instant::now();
            let mut buf = Vec::new();
            for id in 0..5_000 {
                buf.push(rec(id));
                if id.is_multiple_of(3) {
                    sink.records(&mut buf, now);
                    assert!(buf.is_empty(), "the sink takes the records");
                }
                if id.is_multiple_of(1_000) {
                    sink.tick(now);
                }
            }
            sink.records(&mut buf, now);
            "read"
        };
        let (read, published) = if threaded {
            on_own_thread(publish, produce)
        } else {
            let mut publish = publish;
            let read = produce(&mut publish);
            (read, publish.finish())
        };
        assert_eq!(read, "read");
        let published = published.unwrap();
        drop(publisher);
        let mut out = Vec::new();
        while let Ok(Some(d)) = sub.poll(Duration::from_millis(10)) {
            out.push(d);
        }
        (out, published)
    }

    #[test]
    fn a_publishing_thread_sends_the_messages_one_thread_would() {
        let (one, one_totals) = publish_all(false);
        let (two, two_totals) = publish_all(true);
        assert_eq!(one_totals.0, 5_000);
        assert_eq!(one_totals, two_totals);
        assert_eq!(one.len() as u64, one_totals.1);
        let messages = |d: &[Delivery]| -> Vec<(Vec<u8>, Vec<u8>)> {
            d.iter()
                .map(|d| (d.key.clone(), d.payload.clone()))
                .collect()
        };
        assert_eq!(
            messages(&one),
            messages(&two),
            "same keys, same bytes, same order"
        );
    }
}
