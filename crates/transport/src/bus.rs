//! The transport seam: stages publish keyed messages to topics and consume them with explicit
//! acknowledgement (at-least-once: a consumer commits a delivery only after its outputs are
//! safe). [`MemoryBus`] is the in-process implementation used when every stage runs in one
//! process; Kafka implements the same traits for the distributed deployment.

use crate::metrics::TransportMetrics;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TrySendError};
use std::time::Duration;

/// The topics between stages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Flow record batches, keyed by asset id (or responder address).
    Flows,
    /// Alert events, keyed by alert id.
    Alerts,
    /// Evidence package announcements.
    Evidence,
}

impl Topic {
    pub const ALL: [Topic; 3] = [Topic::Flows, Topic::Alerts, Topic::Evidence];

    /// The default topic name.
    pub const fn default_name(self) -> &'static str {
        match self {
            Topic::Flows => "normwatch.flows",
            Topic::Alerts => "normwatch.alerts",
            Topic::Evidence => "normwatch.evidence",
        }
    }

    fn index(self) -> usize {
        match self {
            Topic::Flows => 0,
            Topic::Alerts => 1,
            Topic::Evidence => 2,
        }
    }
}

/// Why a transport call failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransportError {
    /// The other side is gone: no consumer remains, or every publisher has finished.
    #[error("transport closed")]
    Closed,
    /// The bounded queue is full (only from non-blocking calls).
    #[error("transport queue full")]
    Full,
    /// The broker refused or failed the request.
    #[error("broker error: {0}")]
    Broker(String),
}

/// A message as consumed; pass it back to [`Subscriber::commit`] once processed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    pub topic: Topic,
    pub key: Vec<u8>,
    pub payload: Vec<u8>,
    /// The partition it came from (Kafka); 0 on the in-process bus.
    pub partition: i32,
    /// Where the message sits in its partition (Kafka) or its arrival order (memory bus).
    pub offset: u64,
}

/// Publishes keyed messages.
pub trait Publisher: Send {
    /// Publishes one message, waiting while the transport is full (backpressure).
    fn publish(&mut self, topic: Topic, key: &[u8], payload: Vec<u8>)
        -> Result<(), TransportError>;
    /// Waits until every published message is acknowledged by the transport or kept where
    /// it survives the process (a publisher's disk spool, sent from there later).
    fn flush(&mut self, timeout: Duration) -> Result<(), TransportError>;
    /// Like `flush`, and also waits until nothing is left in a spool: every message is on
    /// the broker.
    fn drain(&mut self, timeout: Duration) -> Result<(), TransportError> {
        self.flush(timeout)
    }
}

/// Consumes messages of one topic as a member of a consumer group.
pub trait Subscriber: Send {
    /// The next delivery, or `None` if none arrived within `timeout`.
    /// `Err(Closed)` once the topic is drained and every publisher has gone.
    fn poll(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError>;
    /// Marks `delivery` (and everything before it) processed.
    fn commit(&mut self, delivery: &Delivery) -> Result<(), TransportError>;
    /// Records everything committed so far where a restart finds it, and leaves the group.
    /// Call before exiting.
    fn close(&mut self) -> Result<(), TransportError> {
        Ok(())
    }
    /// How many partition assignments this member has received from its group so far (a
    /// consumer that is not a group member always answers 0). Waiting for the group is not
    /// idleness: a caller that stops when idle restarts its clock when this changes.
    fn assignments(&self) -> u64 {
        0
    }
    /// Whether `delivery` is replayed to rebuild state: a member that rebuilds its state
    /// from the topic reads each partition it is given from the start, and what lies before
    /// the group's committed offset was processed (and its effects published) before.
    fn replayed(&self, delivery: &Delivery) -> bool {
        let _ = delivery;
        false
    }
}

#[derive(Debug)]
struct Msg {
    key: Vec<u8>,
    payload: Vec<u8>,
}

/// The in-process bus: one bounded queue per topic. Every consumer of a topic takes from the
/// same queue, so each message goes to exactly one of them (a consumer group); a full queue
/// blocks publishers until consumers catch up. When every [`MemoryPublisher`] clone is dropped,
/// consumers drain what is left and then see [`TransportError::Closed`].
pub fn memory_bus(capacity: usize) -> (MemoryPublisher, MemoryBus) {
    let (a, ra) = bounded(capacity.max(1));
    let (b, rb) = bounded(capacity.max(1));
    let (c, rc) = bounded(capacity.max(1));
    (
        MemoryPublisher {
            senders: [a, b, c],
            metrics: None,
        },
        MemoryBus {
            receivers: [ra, rb, rc],
            metrics: None,
        },
    )
}

/// The consuming side of the in-process bus; makes subscribers.
#[derive(Debug, Clone)]
pub struct MemoryBus {
    receivers: [Receiver<Msg>; 3],
    metrics: Option<TransportMetrics>,
}

impl MemoryBus {
    /// Counts consumed messages in `metrics` (subscribers made afterwards).
    pub fn with_metrics(mut self, metrics: TransportMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// A consumer of `topic` (all consumers of a topic share its messages).
    pub fn subscriber(&self, topic: Topic) -> MemorySubscriber {
        MemorySubscriber {
            topic,
            rx: self.receivers[topic.index()].clone(),
            next_offset: 0,
            metrics: self.metrics.clone(),
        }
    }

    /// Messages waiting on `topic`.
    pub fn depth(&self, topic: Topic) -> usize {
        self.receivers[topic.index()].len()
    }
}

/// Publishes to the in-process bus.
#[derive(Debug, Clone)]
pub struct MemoryPublisher {
    senders: [Sender<Msg>; 3],
    metrics: Option<TransportMetrics>,
}

impl MemoryPublisher {
    /// Counts published messages and bytes in `metrics`.
    pub fn with_metrics(mut self, metrics: TransportMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, topic: Topic, bytes: usize) {
        if let Some(m) = &self.metrics {
            let label = [TransportMetrics::topic_label(topic)];
            m.produced_messages.with_label_values(&label).inc();
            m.produced_bytes
                .with_label_values(&label)
                .inc_by(bytes as u64);
        }
    }

    /// Publishes without waiting: `Err(Full)` when the topic's queue is full.
    pub fn try_publish(
        &mut self,
        topic: Topic,
        key: &[u8],
        payload: Vec<u8>,
    ) -> Result<(), TransportError> {
        let msg = Msg {
            key: key.to_vec(),
            payload,
        };
        let bytes = msg.payload.len();
        match self.senders[topic.index()].try_send(msg) {
            Ok(()) => {
                self.count(topic, bytes);
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(TransportError::Full),
            Err(TrySendError::Disconnected(_)) => Err(TransportError::Closed),
        }
    }
}

impl Publisher for MemoryPublisher {
    fn publish(
        &mut self,
        topic: Topic,
        key: &[u8],
        payload: Vec<u8>,
    ) -> Result<(), TransportError> {
        let msg = Msg {
            key: key.to_vec(),
            payload,
        };
        let bytes = msg.payload.len();
        self.senders[topic.index()]
            .send(msg)
            .map_err(|_| TransportError::Closed)?;
        self.count(topic, bytes);
        Ok(())
    }

    fn flush(&mut self, _timeout: Duration) -> Result<(), TransportError> {
        // A message in the queue is already where consumers take it from.
        Ok(())
    }
}

/// Consumes one topic of the in-process bus.
#[derive(Debug)]
pub struct MemorySubscriber {
    topic: Topic,
    rx: Receiver<Msg>,
    next_offset: u64,
    metrics: Option<TransportMetrics>,
}

impl Subscriber for MemorySubscriber {
    fn poll(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        match self.rx.recv_timeout(timeout) {
            Ok(m) => {
                if let Some(metrics) = &self.metrics {
                    let label = [TransportMetrics::topic_label(self.topic)];
                    metrics.consumed_messages.with_label_values(&label).inc();
                    // What waits in the queue is exactly what this consumer group lags by.
                    metrics
                        .consumer_lag_messages
                        .with_label_values(&label)
                        .set(i64::try_from(self.rx.len()).unwrap_or(i64::MAX));
                }
                let offset = self.next_offset;
                self.next_offset += 1;
                Ok(Some(Delivery {
                    topic: self.topic,
                    key: m.key,
                    payload: m.payload,
                    partition: 0,
                    offset,
                }))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(TransportError::Closed),
        }
    }

    fn commit(&mut self, _delivery: &Delivery) -> Result<(), TransportError> {
        // In one process a crash loses the queue with the consumer; nothing to record.
        Ok(())
    }
}
