//! Kafka through `rdkafka` (librdkafka built from the crate's bundled source).
//!
//! - [`KafkaPublisher`]: an idempotent producer (`acks=all`, lz4 or zstd). While no broker is
//!   reachable, or when a delivery fails, messages go to the on-disk [`Spool`]; a replay
//!   thread sends them back in order once the broker returns, and new messages queue behind
//!   the spool until it is empty, so each partition still sees a sensor's batches in order.
//! - [`KafkaSubscriber`]: a member of the detectors' consumer group. Offsets are stored only
//!   when the caller commits a delivery (after processing it and acknowledging its outputs)
//!   and are committed to the broker every second and on close.
//! - [`ensure_topics`]: creates missing topics with the configured partitions.
//! - [`check_client_options`]: has librdkafka itself judge the passthrough options.

use crate::bus::{Delivery, Publisher, Subscriber, Topic, TransportError};
use crate::metrics::TransportMetrics;
use crate::spool::{Position, Spool, SpoolEntry, SpoolError};
use normwatch_config::{BusConfig, Compression, KafkaConfig, SpoolConfig, TopicConfig};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{
    BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig, ThreadedProducer,
};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Spooled messages sent ahead of their acknowledgement during a replay.
const REPLAY_WINDOW: usize = 256;
/// Largest message the producer sends (librdkafka's default `message.max.bytes` is 1 000 000).
pub const MAX_MESSAGE_BYTES: usize = 900_000;

/// `max.message.bytes` of the topics normwatch creates (a record batch, headers included).
const TOPIC_MAX_MESSAGE_BYTES: &str = "1048576";

/// Why the Kafka transport could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KafkaSetupError {
    #[error("bus.brokers is empty: list the Kafka bootstrap servers as \"host:port,host:port\"")]
    NoBrokers,
    #[error("kafka.sasl: cannot read the password: {0}")]
    Secret(#[source] std::io::Error),
    #[error("kafka.tls.key_password_file: cannot read {path}: {source}")]
    KeyPassword {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("librdkafka refused the settings: {0}")]
    Refused(String),
    #[error("Kafka client error: {0}")]
    Client(#[from] KafkaError),
    #[error("cannot open the spool: {0}")]
    Spool(#[from] SpoolError),
    #[error("cannot create topic {topic:?}: {reason}")]
    Topic { topic: String, reason: String },
    #[error("cannot start the spool replay thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// The configured name of each topic.
#[derive(Clone, Debug)]
pub struct TopicNames([String; 3]);

impl TopicNames {
    pub fn from_config(bus: &BusConfig) -> Self {
        TopicNames([
            bus.topics.flows.name.clone(),
            bus.topics.alerts.name.clone(),
            bus.topics.evidence.name.clone(),
        ])
    }

    pub fn name(&self, topic: Topic) -> &str {
        &self.0[topic_index(topic)]
    }

    fn topic(&self, name: &str) -> Option<Topic> {
        Topic::ALL.into_iter().find(|t| self.name(*t) == name)
    }
}

fn topic_index(topic: Topic) -> usize {
    match topic {
        Topic::Flows => 0,
        Topic::Alerts => 1,
        Topic::Evidence => 2,
    }
}

/// The settings shared by every client: brokers, identity, security, passthrough options.
pub fn client_config(
    bus: &BusConfig,
    kafka: &KafkaConfig,
) -> Result<ClientConfig, KafkaSetupError> {
    if bus.brokers.is_empty() {
        return Err(KafkaSetupError::NoBrokers);
    }
    let mut c = ClientConfig::new();
    // Passthrough first: validation guarantees it names nothing set below.
    for (k, v) in &kafka.options {
        c.set(k, v);
    }
    c.set("bootstrap.servers", bus.brokers.join(","));
    c.set("client.id", &kafka.client_id);
    c.set("security.protocol", kafka.security_protocol());
    if let Some(tls) = &kafka.tls {
        if let Some(ca) = &tls.ca {
            c.set("ssl.ca.location", ca.display().to_string());
        }
        if let Some(cert) = &tls.cert {
            c.set("ssl.certificate.location", cert.display().to_string());
        }
        if let Some(key) = &tls.key {
            c.set("ssl.key.location", key.display().to_string());
        }
        if let Some(path) = &tls.key_password_file {
            let pw =
                std::fs::read_to_string(path).map_err(|source| KafkaSetupError::KeyPassword {
                    path: path.clone(),
                    source,
                })?;
            c.set("ssl.key.password", pw.trim_end_matches(['\r', '\n']));
        }
    }
    if let Some(sasl) = &kafka.sasl {
        c.set("sasl.mechanism", sasl.mechanism.as_str());
        c.set("sasl.username", &sasl.username);
        c.set(
            "sasl.password",
            sasl.password.resolve().map_err(KafkaSetupError::Secret)?,
        );
    }
    c.set_log_level(RDKafkaLogLevel::Warning);
    Ok(c)
}

/// `msg` with the value of every sensitive property of `c` (see
/// [`normwatch_config::is_sensitive_option`]) replaced, so that librdkafka's messages, which
/// quote the values they refuse, never carry a secret into a log or an error.
pub fn redact(c: &ClientConfig, msg: &str) -> String {
    let mut msg = msg.to_string();
    // `config_map` hides only the values rdkafka knows to be secret; `get` gives them all.
    let mut secrets: Vec<&str> = c
        .config_map()
        .into_keys()
        .filter(|k| normwatch_config::is_sensitive_option(k))
        .filter_map(|k| c.get(k))
        .filter(|v| !v.is_empty())
        .collect();
    // Longest first, so a secret containing another is replaced whole.
    secrets.sort_by_key(|v| std::cmp::Reverse(v.len()));
    for v in secrets {
        msg = msg.replace(v, "[redacted]");
    }
    msg
}

/// librdkafka's refusal to create a client, without the secrets of its settings.
/// A TLS file librdkafka cannot use is named (its message says only which property failed).
fn refused(c: &ClientConfig, e: &KafkaError) -> KafkaSetupError {
    let mut msg = redact(c, &e.to_string());
    for (prop, key) in [
        ("ssl.ca.location", "kafka.tls.ca"),
        ("ssl.certificate.location", "kafka.tls.cert"),
        ("ssl.key.location", "kafka.tls.key"),
    ] {
        if let (true, Some(path)) = (msg.contains(prop), c.get(prop)) {
            msg = format!("{key} {path}: {msg}");
        }
    }
    KafkaSetupError::Refused(msg)
}

fn set_default(c: &mut ClientConfig, key: &str, value: &str) {
    if c.get(key).is_none() {
        c.set(key, value);
    }
}

fn producer_config(bus: &BusConfig, kafka: &KafkaConfig) -> Result<ClientConfig, KafkaSetupError> {
    let mut c = client_config(bus, kafka)?;
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    c.set(
        "compression.type",
        match kafka.compression {
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        },
    );
    c.set(
        "message.timeout.ms",
        kafka
            .delivery_timeout
            .as_millis()
            .clamp(1, i32::MAX as u128)
            .to_string(),
    );
    // Throughput defaults an operator may override through kafka.options.
    set_default(&mut c, "linger.ms", "5");
    set_default(&mut c, "batch.size", "1000000");
    // The partitioner of the Java client, so every producer maps a key to the same partition.
    set_default(&mut c, "partitioner", "murmur2_random");
    Ok(c)
}

fn consumer_config(bus: &BusConfig, kafka: &KafkaConfig) -> Result<ClientConfig, KafkaSetupError> {
    let mut c = client_config(bus, kafka)?;
    c.set("group.id", &kafka.group_id);
    // Offsets are stored only for processed deliveries; the stored ones are committed every
    // second, on rebalance and on close.
    c.set("enable.auto.offset.store", "false");
    c.set("enable.auto.commit", "true");
    set_default(&mut c, "auto.commit.interval.ms", "1000");
    set_default(&mut c, "auto.offset.reset", "earliest");
    // The detector's alert latency budget is a second: do not let a fetch idle for
    // librdkafka's default 500 ms (some brokers hold a fetch that long even with data ready).
    set_default(&mut c, "fetch.wait.max.ms", "20");
    // Statistics feed the consumer-lag gauge.
    set_default(&mut c, "statistics.interval.ms", "5000");
    Ok(c)
}

/// Has librdkafka check the passthrough options (names and values) of the producer and the
/// consumer without connecting anywhere. Secrets are not read.
pub fn check_client_options(bus: &BusConfig, kafka: &KafkaConfig) -> Result<(), String> {
    let mut kafka = kafka.clone();
    kafka.sasl = None;
    if let Some(tls) = &mut kafka.tls {
        tls.key_password_file = None;
    }
    let mut bus = bus.clone();
    if bus.brokers.is_empty() {
        bus.brokers = vec!["localhost:9092".into()];
    }
    for (role, cfg) in [
        ("producer", producer_config(&bus, &kafka)),
        ("consumer", consumer_config(&bus, &kafka)),
    ] {
        let cfg = cfg.map_err(|e| e.to_string())?;
        if let Err(e) = cfg.create_native_config() {
            return Err(format!(
                "kafka.options: librdkafka refuses them for the {role}: {}",
                redact(&cfg, &e.to_string())
            ));
        }
    }
    Ok(())
}

/// Creates each configured topic that does not exist yet, with its configured partitions and
/// replication. Existing topics are left as they are.
pub fn ensure_topics(
    bus: &BusConfig,
    kafka: &KafkaConfig,
    timeout: Duration,
) -> Result<(), KafkaSetupError> {
    let c = client_config(bus, kafka)?;
    let admin: AdminClient<DefaultClientContext> = c.create().map_err(|e| refused(&c, &e))?;
    create_topics(&admin, bus, timeout)
}

fn create_topics<C: ClientContext>(
    admin: &AdminClient<C>,
    bus: &BusConfig,
    timeout: Duration,
) -> Result<(), KafkaSetupError> {
    let t = &bus.topics;
    let specs: Vec<NewTopic<'_>> = [&t.flows, &t.alerts, &t.evidence]
        .into_iter()
        .map(|tc: &TopicConfig| {
            NewTopic::new(
                &tc.name,
                i32::try_from(tc.partitions).unwrap_or(i32::MAX),
                TopicReplication::Fixed(i32::from(tc.replication)),
            )
            // The broker refuses what no normwatch producer sends, so an oversized message
            // from elsewhere never reaches (and wedges) a consumer.
            .set("max.message.bytes", TOPIC_MAX_MESSAGE_BYTES)
        })
        .collect();
    let opts = AdminOptions::new()
        .operation_timeout(Some(timeout))
        .request_timeout(Some(timeout));
    let results = futures_executor::block_on(admin.create_topics(specs.iter(), &opts))?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaSetupError::Topic {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the spool half-written (each call is one
    // write), so the data stays usable.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a produced message came from, returned with its delivery report.
#[derive(Debug)]
enum Origin {
    Live(Topic),
    Replay(Position),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplayState {
    Pending,
    Acked,
    Failed,
}

/// Spooled messages sent and not yet settled.
#[derive(Debug, Default)]
struct ReplayWindow {
    /// The last position handed to the producer; reading resumes after it.
    sent: Option<Position>,
    inflight: BTreeMap<Position, ReplayState>,
}

#[derive(Debug)]
struct ProducerShared {
    spool: Mutex<Spool>,
    /// New messages go to the spool (the broker is down, or the spool still holds messages).
    spool_mode: AtomicBool,
    broker_down: AtomicBool,
    replay: Mutex<ReplayWindow>,
    metrics: TransportMetrics,
    names: TopicNames,
    /// Counters already folded into the metrics (the spool counts since it was opened).
    dropped_seen: AtomicU64,
    dropped_weight_seen: AtomicU64,
    /// How often spooled data is forced to the device; zero: after every message.
    sync_interval: Duration,
    /// Live messages handed to librdkafka whose delivery report has not come yet; the
    /// condition is signalled by every report, so waiting for acknowledgements costs no
    /// fixed slice of time.
    live: Mutex<u64>,
    settled: Condvar,
}

impl ProducerShared {
    fn sent_live(&self) {
        *lock(&self.live) += 1;
    }

    fn settled_live(&self) {
        let mut n = lock(&self.live);
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.settled.notify_all();
        }
    }

    /// Waits until every live message is acknowledged or spooled; false at the deadline.
    fn wait_settled(&self, deadline: Instant) -> bool {
        let mut n = lock(&self.live);
        while *n > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            n = match self.settled.wait_timeout(n, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }

    fn update_spool_gauges(&self, spool: &Spool) {
        let m = &self.metrics;
        m.spool_messages.set(spool.len() as i64);
        m.spool_bytes.set(spool.bytes() as i64);
        let dropped = spool.counters().dropped_entries;
        let before = self.dropped_seen.swap(dropped, Ordering::Relaxed);
        if dropped > before {
            m.spool_dropped_messages.inc_by(dropped - before);
        }
        let weight = spool.counters().dropped_weight;
        let before = self.dropped_weight_seen.swap(weight, Ordering::Relaxed);
        if weight > before {
            m.lost_records.inc_by(weight - before);
        }
    }

    /// Writes a message to the spool. A message that cannot be kept (larger than the whole
    /// spool, or the disk failed) is counted as dropped and logged.
    fn spool(&self, spool: &mut Spool, topic: &str, partition: i32, key: &[u8], payload: &[u8]) {
        let entry = SpoolEntry {
            topic: topic.to_string(),
            partition,
            key: key.to_vec(),
            payload: payload.to_vec(),
        };
        match spool.push(&entry) {
            Ok(dropped) => {
                self.metrics.spooled_messages.inc();
                if dropped > 0 {
                    tracing::warn!(
                        dropped,
                        "spool full: dropped the oldest spooled batches to keep the newest"
                    );
                }
            }
            Err(e) => {
                self.metrics.spool_dropped_messages.inc();
                self.metrics.lost_records.inc_by(batch_records(&entry));
                tracing::error!(error = %e, topic, "cannot spool a batch; it is lost");
            }
        }
        if self.sync_interval.is_zero() {
            if let Err(e) = spool.sync() {
                tracing::error!(error = %e, "cannot sync the spool");
            }
        }
        self.update_spool_gauges(spool);
    }

    fn set_broker_down(&self, down: bool, reason: &str) {
        let was = self.broker_down.swap(down, Ordering::AcqRel);
        if down && !was {
            self.metrics.broker_down.set(1);
            tracing::warn!(
                reason,
                "kafka: no broker reachable; batches go to the spool until one returns"
            );
        } else if !down && was {
            self.metrics.broker_down.set(0);
            tracing::info!("kafka: broker reachable again");
        }
    }
}

/// The flow records a spooled message holds (0 for what is not a flow batch).
fn batch_records(e: &SpoolEntry) -> u64 {
    crate::wire::record_count(&e.payload).map_or(0, u64::from)
}

/// The producer's callbacks: delivery reports and client errors.
#[derive(Debug)]
struct ProduceContext {
    shared: Arc<ProducerShared>,
}

impl ClientContext for ProduceContext {
    fn error(&self, error: KafkaError, reason: &str) {
        self.shared.metrics.client_errors.inc();
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.shared.spool_mode.store(true, Ordering::Release);
            self.shared.set_broker_down(true, reason);
        } else {
            tracing::debug!(%error, reason, "kafka client error");
        }
    }
}

impl ProducerContext for ProduceContext {
    type DeliveryOpaque = Box<Origin>;

    fn delivery(&self, result: &DeliveryResult<'_>, origin: Box<Origin>) {
        let s = &self.shared;
        let live = matches!(*origin, Origin::Live(_));
        self.report(s, result, *origin);
        if live {
            s.settled_live();
        }
    }
}

impl ProduceContext {
    fn report(&self, s: &ProducerShared, result: &DeliveryResult<'_>, origin: Origin) {
        match (result, origin) {
            (Ok(msg), Origin::Live(topic)) => {
                s.set_broker_down(false, "");
                let label = TransportMetrics::topic_label(topic);
                s.metrics
                    .produced_messages
                    .with_label_values(&[label])
                    .inc();
                s.metrics
                    .produced_bytes
                    .with_label_values(&[label])
                    .inc_by(msg.payload_len() as u64);
            }
            (Ok(msg), Origin::Replay(pos)) => {
                s.set_broker_down(false, "");
                s.metrics.replayed_messages.inc();
                if let Some(topic) = s.names.topic(msg.topic()) {
                    let label = TransportMetrics::topic_label(topic);
                    s.metrics
                        .produced_messages
                        .with_label_values(&[label])
                        .inc();
                    s.metrics
                        .produced_bytes
                        .with_label_values(&[label])
                        .inc_by(msg.payload_len() as u64);
                }
                lock(&s.replay).inflight.insert(pos, ReplayState::Acked);
            }
            (Err((e, msg)), Origin::Live(topic)) => {
                let label = TransportMetrics::topic_label(topic);
                s.metrics
                    .delivery_failures
                    .with_label_values(&[label])
                    .inc();
                tracing::debug!(error = %e, "delivery failed; spooling the batch");
                let mut spool = lock(&s.spool);
                s.spool_mode.store(true, Ordering::Release);
                s.spool(
                    &mut spool,
                    msg.topic(),
                    msg.partition(),
                    msg.key().unwrap_or_default(),
                    msg.payload().unwrap_or_default(),
                );
            }
            (Err((e, _)), Origin::Replay(pos)) => {
                tracing::debug!(error = %e, "replayed batch not acknowledged; it stays spooled");
                lock(&s.replay).inflight.insert(pos, ReplayState::Failed);
            }
        }
    }
}

/// Publishes to Kafka, spooling to disk what the broker cannot take.
pub struct KafkaPublisher {
    producer: ThreadedProducer<ProduceContext>,
    shared: Arc<ProducerShared>,
    stop: Arc<AtomicBool>,
    replayer: Option<JoinHandle<()>>,
    delivery_timeout: Duration,
    spool_dir: PathBuf,
    /// Something was published since the last flush that returned `Ok` (a flush with nothing
    /// new to settle returns at once: the detector flushes after every batch it consumes).
    unflushed: bool,
}

impl std::fmt::Debug for KafkaPublisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaPublisher")
            .field("spool_dir", &self.spool_dir)
            .field(
                "spool_mode",
                &self.shared.spool_mode.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl KafkaPublisher {
    /// Connects (lazily: an unreachable broker is not an error here), creates missing topics
    /// when the broker answers within `setup_timeout`, opens the spool and starts replaying
    /// whatever a previous run left in it.
    pub fn new(
        bus: &BusConfig,
        kafka: &KafkaConfig,
        spool: &SpoolConfig,
        metrics: TransportMetrics,
        setup_timeout: Duration,
    ) -> Result<Self, KafkaSetupError> {
        let mut spool_store = Spool::open(&spool.path, spool.max_bytes)?;
        spool_store.set_weigher(batch_records);
        let leftover = spool_store.len();
        let shared = Arc::new(ProducerShared {
            spool_mode: AtomicBool::new(leftover > 0),
            spool: Mutex::new(spool_store),
            broker_down: AtomicBool::new(false),
            replay: Mutex::new(ReplayWindow::default()),
            metrics,
            names: TopicNames::from_config(bus),
            dropped_seen: AtomicU64::new(0),
            dropped_weight_seen: AtomicU64::new(0),
            sync_interval: spool.sync_interval,
            live: Mutex::new(0),
            settled: Condvar::new(),
        });
        shared.update_spool_gauges(&lock(&shared.spool));
        if leftover > 0 {
            tracing::info!(
                messages = leftover,
                path = %spool.path.display(),
                "replaying batches spooled by an earlier run"
            );
        }
        let c = producer_config(bus, kafka)?;
        let producer: ThreadedProducer<ProduceContext> = c
            .create_with_context(ProduceContext {
                shared: shared.clone(),
            })
            .map_err(|e| refused(&c, &e))?;
        let c = client_config(bus, kafka)?;
        let admin: AdminClient<DefaultClientContext> = c.create().map_err(|e| refused(&c, &e))?;
        let topics_ready = match create_topics(&admin, bus, setup_timeout) {
            Ok(()) => true,
            Err(KafkaSetupError::Client(e)) => {
                tracing::warn!(
                    error = %e,
                    "cannot reach the broker to check topics; spooling until it answers"
                );
                shared.spool_mode.store(true, Ordering::Release);
                shared.set_broker_down(true, "topic setup failed");
                false
            }
            Err(e) => return Err(e),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let replayer = {
            let producer = producer.clone();
            let shared = shared.clone();
            let stop = stop.clone();
            let bus = bus.clone();
            std::thread::Builder::new()
                .name("nw-spool-replay".into())
                .spawn(move || {
                    Replayer {
                        producer,
                        shared,
                        stop,
                        admin,
                        bus,
                        topics_ready,
                    }
                    .run()
                })
                .map_err(KafkaSetupError::Thread)?
        };
        Ok(KafkaPublisher {
            producer,
            shared,
            stop,
            replayer: Some(replayer),
            delivery_timeout: kafka.delivery_timeout,
            spool_dir: spool.path.clone(),
            unflushed: false,
        })
    }

    /// Messages waiting in the spool.
    pub fn spooled(&self) -> u64 {
        lock(&self.shared.spool).len()
    }

    /// Whether new messages currently go to the spool.
    pub fn spooling(&self) -> bool {
        self.shared.spool_mode.load(Ordering::Acquire)
    }
}

impl Publisher for KafkaPublisher {
    fn drain(&mut self, timeout: Duration) -> Result<(), TransportError> {
        KafkaPublisher::drain(self, timeout)
    }

    fn publish(
        &mut self,
        topic: Topic,
        key: &[u8],
        payload: Vec<u8>,
    ) -> Result<(), TransportError> {
        self.unflushed = true;
        let name = self.shared.names.name(topic).to_string();
        if self.shared.spool_mode.load(Ordering::Acquire) {
            let mut spool = lock(&self.shared.spool);
            // Re-checked under the lock: the replay thread leaves spool mode holding it.
            if self.shared.spool_mode.load(Ordering::Acquire) {
                self.shared.spool(&mut spool, &name, -1, key, &payload);
                return Ok(());
            }
        }
        let mut record = BaseRecord::with_opaque_to(&name, Box::new(Origin::Live(topic)))
            .key(key)
            .payload(&payload);
        let started = Instant::now();
        loop {
            // Counted before the send: the report may come before `send` returns.
            self.shared.sent_live();
            let sent = self.producer.send(record);
            if sent.is_err() {
                self.shared.settled_live();
            }
            match sent {
                Ok(()) => return Ok(()),
                Err((e, back)) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull) => {
                    // A full queue is backpressure while the broker keeps up, an outage
                    // when it does not: wait for room unless the broker is known down.
                    if self.shared.broker_down.load(Ordering::Acquire)
                        || started.elapsed() > self.delivery_timeout
                    {
                        let mut spool = lock(&self.shared.spool);
                        self.shared.spool_mode.store(true, Ordering::Release);
                        self.shared.spool(&mut spool, &name, -1, key, &payload);
                        return Ok(());
                    }
                    record = back;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(TransportError::Broker(e.to_string())),
            }
        }
    }

    /// Returns once every message published so far is acknowledged by the broker or kept
    /// in the spool (forced to the device): either way it is no longer only in memory, and
    /// the spool's messages are sent when the broker returns, by this process or the next
    /// one using the spool. An outage is therefore no failure here; [`KafkaPublisher::drain`]
    /// waits for the spool to empty too.
    fn flush(&mut self, timeout: Duration) -> Result<(), TransportError> {
        if !self.unflushed {
            return Ok(());
        }
        let deadline = Instant::now() + timeout;
        // Send what lingers now; the reports arrive on the producer's polling thread.
        let _ = self.producer.flush(Duration::ZERO);
        let mut purged = false;
        loop {
            let slice = deadline.min(Instant::now() + Duration::from_millis(100));
            if self.shared.wait_settled(slice) {
                break;
            }
            if Instant::now() >= deadline {
                let live = *lock(&self.shared.live);
                return Err(TransportError::Broker(format!(
                    "after {timeout:?}, {live} messages are neither acknowledged nor spooled"
                )));
            }
            // With no broker reachable, what librdkafka holds would wait out the delivery
            // timeout (and a stop signal with it): it goes to the spool now instead. A
            // message the broker took after all is sent twice, never lost.
            if !purged && self.shared.broker_down.load(Ordering::Acquire) {
                purged = true;
                self.producer
                    .purge(PurgeConfig::default().queue().inflight());
            }
        }
        if self.shared.spool_mode.load(Ordering::Acquire) {
            lock(&self.shared.spool)
                .sync()
                .map_err(|e| TransportError::Broker(format!("cannot sync the spool: {e}")))?;
        }
        self.unflushed = false;
        Ok(())
    }
}

impl KafkaPublisher {
    /// Waits until every message is acknowledged, the spooled ones included (the end of a
    /// sensor run); an error says how many still wait in the spool.
    pub fn drain(&mut self, timeout: Duration) -> Result<(), TransportError> {
        let deadline = Instant::now() + timeout;
        loop {
            let _ = self.producer.flush(Duration::ZERO);
            let settled = self
                .shared
                .wait_settled(deadline.min(Instant::now() + Duration::from_millis(100)));
            let spooling = self.shared.spool_mode.load(Ordering::Acquire);
            if settled && !spooling {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let live = *lock(&self.shared.live);
                let spooled = lock(&self.shared.spool).len();
                return Err(TransportError::Broker(format!(
                    "after {timeout:?}, {live} messages are still unacknowledged and {spooled} wait in the spool at {} (they are sent when the broker returns, by this or the next run)",
                    self.spool_dir.display()
                )));
            }
            if settled {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Drop for KafkaPublisher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(h) = self.replayer.take() {
            let _ = h.join();
        }
        // Whatever librdkafka still holds fails back into the spool, so the next run sends it.
        self.producer
            .purge(PurgeConfig::default().queue().inflight());
        let _ = self.producer.flush(Duration::from_secs(5));
        let mut spool = lock(&self.shared.spool);
        if let Err(e) = spool.sync() {
            tracing::error!(error = %e, "cannot sync the spool");
        }
        let left = spool.len();
        if left > 0 {
            tracing::warn!(
                messages = left,
                path = %self.spool_dir.display(),
                "batches remain in the spool; the next run with this spool sends them"
            );
        }
    }
}

/// Sends spooled messages back in order once the broker answers.
struct Replayer {
    producer: ThreadedProducer<ProduceContext>,
    shared: Arc<ProducerShared>,
    stop: Arc<AtomicBool>,
    admin: AdminClient<DefaultClientContext>,
    bus: BusConfig,
    topics_ready: bool,
}

impl Replayer {
    fn run(mut self) {
        let mut last_sync = Instant::now();
        while !self.stop.load(Ordering::Acquire) {
            let interval = self.shared.sync_interval;
            if !interval.is_zero() && last_sync.elapsed() >= interval {
                last_sync = Instant::now();
                if let Err(e) = lock(&self.shared.spool).sync() {
                    tracing::error!(error = %e, "cannot sync the spool");
                }
            }
            if !self.shared.spool_mode.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            if !self.topics_ready {
                match create_topics(&self.admin, &self.bus, Duration::from_secs(5)) {
                    Ok(()) => self.topics_ready = true,
                    Err(e) => {
                        tracing::debug!(error = %e, "topics not ready yet");
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                }
            }
            if !self.step() {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Settles acknowledgements and sends more; false when there was nothing to do.
    fn step(&mut self) -> bool {
        let s = &self.shared;
        let (sent, room) = {
            let mut w = lock(&s.replay);
            if w.inflight.values().any(|st| *st == ReplayState::Failed) {
                if w.inflight.values().any(|st| *st == ReplayState::Pending) {
                    return false;
                }
                // Everything sent is settled and something failed: send again from the
                // oldest unacknowledged message once the broker is back.
                w.inflight.clear();
                w.sent = None;
                drop(w);
                std::thread::sleep(Duration::from_millis(500));
                return true;
            }
            let mut through = None;
            while let Some((&pos, &st)) = w.inflight.first_key_value() {
                if st != ReplayState::Acked {
                    break;
                }
                through = Some(pos);
                w.inflight.pop_first();
            }
            if let Some(pos) = through {
                let mut spool = lock(&s.spool);
                if let Err(e) = spool.commit(pos) {
                    tracing::error!(error = %e, "cannot record replay progress in the spool");
                }
                s.update_spool_gauges(&spool);
            }
            (w.sent, REPLAY_WINDOW.saturating_sub(w.inflight.len()))
        };
        if room == 0 {
            return false;
        }
        let entries = {
            let mut spool = lock(&s.spool);
            match spool.read(sent, room) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the spool");
                    return false;
                }
            }
        };
        if entries.is_empty() {
            if !lock(&s.replay).inflight.is_empty() || !lock(&s.spool).is_empty() {
                return false;
            }
            // Nothing left to replay. Send directly again only once a broker answers.
            if s.broker_down.load(Ordering::Acquire) {
                let topic = s.names.name(Topic::Flows).to_string();
                match self
                    .producer
                    .client()
                    .fetch_metadata(Some(&topic), Duration::from_secs(1))
                {
                    Ok(_) => s.set_broker_down(false, ""),
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(200));
                        return false;
                    }
                }
            }
            let w = lock(&s.replay);
            let spool = lock(&s.spool);
            if w.inflight.is_empty() && spool.is_empty() {
                s.spool_mode.store(false, Ordering::Release);
                if s.metrics.spooled_messages.get() > 0 {
                    tracing::info!("spool replayed; sending directly again");
                }
            }
            return false;
        }
        for (pos, e) in entries {
            lock(&s.replay).inflight.insert(pos, ReplayState::Pending);
            let mut record = BaseRecord::with_opaque_to(&e.topic, Box::new(Origin::Replay(pos)))
                .key(&e.key)
                .payload(&e.payload);
            if e.partition >= 0 {
                record = record.partition(e.partition);
            }
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((err, back))
                        if err.rdkafka_error_code() == Some(RDKafkaErrorCode::QueueFull)
                            && !self.stop.load(Ordering::Acquire) =>
                    {
                        record = back;
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    Err((err, _)) => {
                        tracing::warn!(error = %err, "cannot send a spooled batch; retrying later");
                        lock(&s.replay).inflight.insert(pos, ReplayState::Failed);
                        return true;
                    }
                }
            }
            lock(&s.replay).sent = Some(pos);
        }
        true
    }
}

/// The consumer's callbacks: client errors are counted and logged.
#[derive(Debug)]
struct ConsumeContext {
    metrics: TransportMetrics,
    /// The subscribed topic's name and metric label.
    topic: String,
    label: &'static str,
    /// Partition assignments received.
    assignments: Arc<AtomicU64>,
    /// Set when librdkafka reports every broker down, cleared by the next message.
    broker_down: AtomicBool,
    /// Rebuild mode: assigned partitions are read from the start; the group's committed
    /// offset of each, as found at the assignment (none: nothing committed, or not known).
    rebuild: bool,
    resume: Mutex<BTreeMap<i32, i64>>,
}

impl ClientContext for ConsumeContext {
    fn stats(&self, stats: rdkafka::statistics::Statistics) {
        // librdkafka's view of the assigned partitions: high watermark minus position.
        if let Some(t) = stats.topics.get(&self.topic) {
            let lag: i64 = t
                .partitions
                .iter()
                .filter(|(p, _)| **p >= 0)
                .map(|(_, p)| p.consumer_lag.max(0))
                .sum();
            self.metrics
                .consumer_lag_messages
                .with_label_values(&[self.label])
                .set(lag);
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.metrics.client_errors.inc();
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::AllBrokersDown) {
            self.broker_down.store(true, Ordering::Release);
            tracing::warn!(reason, "kafka: no broker reachable; waiting for one");
        } else {
            tracing::debug!(%error, reason, "kafka client error");
        }
    }
}

impl ConsumerContext for ConsumeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        if !self.rebuild {
            return;
        }
        let mut resume = BTreeMap::new();
        match consumer.committed_offsets((*tpl).clone(), Duration::from_secs(10)) {
            Ok(committed) => {
                for e in committed.elements() {
                    if let rdkafka::Offset::Offset(o) = e.offset() {
                        resume.insert(e.partition(), o);
                    }
                }
            }
            Err(e) => {
                // Everything is replayed as new: at least once, as without a rebuild.
                tracing::warn!(error = %e, "cannot read the group's committed offsets");
            }
        }
        for mut e in tpl.elements() {
            let _ = e.set_offset(rdkafka::Offset::Beginning);
        }
        *lock(&self.resume) = resume;
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                self.assignments.fetch_add(1, Ordering::Relaxed);
                tracing::info!(partitions = ?parts, "partitions assigned");
            }
            Rebalance::Revoke(tpl) => {
                let parts: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                tracing::info!(partitions = ?parts, "partitions revoked");
            }
            Rebalance::Error(e) => {
                self.metrics.client_errors.inc();
                tracing::warn!(error = %e, "consumer group rebalance failed");
            }
        }
    }
}

/// Consumes one topic as a member of the configured consumer group.
pub struct KafkaSubscriber {
    consumer: BaseConsumer<ConsumeContext>,
    topic: Topic,
    name: String,
    metrics: TransportMetrics,
    /// This topic's `consumed_messages` counter (looked up once, not per message).
    consumed: prometheus::IntCounter,
    stored: bool,
    assignments: Arc<AtomicU64>,
}

/// Every message on `topic` now (its payloads, partition by partition in offset order),
/// read from the start of each partition up to its end as found first, without joining a
/// consumer group. `timeout` bounds the whole read.
pub fn read_topic(
    bus: &BusConfig,
    kafka: &KafkaConfig,
    topic: Topic,
    timeout: Duration,
) -> Result<Vec<Vec<u8>>, TransportError> {
    let broker = |e: KafkaError| TransportError::Broker(e.to_string());
    let name = TopicNames::from_config(bus).name(topic).to_string();
    let mut c = consumer_config(bus, kafka).map_err(|e| TransportError::Broker(e.to_string()))?;
    c.set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().map_err(broker)?;
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let meta = consumer
        .fetch_metadata(Some(&name), left())
        .map_err(broker)?;
    let mut ends = BTreeMap::new();
    if let Some(t) = meta.topics().iter().find(|t| t.name() == name) {
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(&name, p.id(), left())
                .map_err(broker)?;
            if high > low {
                ends.insert(p.id(), high);
            }
        }
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    for p in ends.keys() {
        tpl.add_partition_offset(&name, *p, rdkafka::Offset::Beginning)
            .map_err(broker)?;
    }
    let mut got = Vec::new();
    if ends.is_empty() {
        return Ok(got);
    }
    consumer.assign(&tpl).map_err(broker)?;
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            return Err(TransportError::Broker(format!(
                "reading {name}: {} partitions not read to their end within {timeout:?}",
                ends.len()
            )));
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let end = ends.get(&m.partition()).copied();
                if end.is_some_and(|end| m.offset() < end) {
                    got.push(m.payload().unwrap_or_default().to_vec());
                }
                if end.is_some_and(|end| m.offset() + 1 >= end) {
                    ends.remove(&m.partition());
                }
            }
            Some(Err(e)) => tracing::debug!(error = %e, topic = %name, "reading a topic"),
            None => {}
        }
    }
    Ok(got)
}

impl KafkaSubscriber {
    /// Sets the consumer-lag gauge from the broker's high watermarks and this member's
    /// positions, so the figure a run ends with is not the statistics of seconds before.
    /// With the broker away the last figure stays (one short wait, not one per partition).
    fn settle_lag(&self) {
        let Ok(positions) = self.consumer.position() else {
            return;
        };
        let mut lag = 0i64;
        for e in positions.elements_for_topic(&self.name) {
            let Ok((low, high)) =
                self.consumer
                    .fetch_watermarks(&self.name, e.partition(), Duration::from_secs(2))
            else {
                return;
            };
            let at = match e.offset() {
                rdkafka::Offset::Offset(o) => o,
                _ => low,
            };
            lag += (high - at).max(0);
        }
        self.metrics
            .consumer_lag_messages
            .with_label_values(&[TransportMetrics::topic_label(self.topic)])
            .set(lag);
    }
}

impl std::fmt::Debug for KafkaSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSubscriber")
            .field("topic", &self.name)
            .finish_non_exhaustive()
    }
}

impl KafkaSubscriber {
    /// Joins the consumer group and subscribes to `topic`. The broker is contacted lazily.
    pub fn new(
        bus: &BusConfig,
        kafka: &KafkaConfig,
        topic: Topic,
        metrics: TransportMetrics,
    ) -> Result<Self, KafkaSetupError> {
        Self::create(bus, kafka, topic, metrics, false)
    }

    /// Like [`KafkaSubscriber::new`], for a member that rebuilds its state from the topic:
    /// every partition it is assigned is read from its start, and what lies before the
    /// group's committed offset is marked replayed ([`Subscriber::replayed`]).
    pub fn rebuilding(
        bus: &BusConfig,
        kafka: &KafkaConfig,
        topic: Topic,
        metrics: TransportMetrics,
    ) -> Result<Self, KafkaSetupError> {
        Self::create(bus, kafka, topic, metrics, true)
    }

    /// The partitions assigned to this member now, with their first and next offsets on the
    /// broker (low and high watermarks).
    pub fn assigned_ends(
        &self,
        timeout: Duration,
    ) -> Result<BTreeMap<i32, (i64, i64)>, TransportError> {
        let broker = |e: KafkaError| TransportError::Broker(e.to_string());
        let assigned = self.consumer.assignment().map_err(broker)?;
        let mut ends = BTreeMap::new();
        for e in assigned.elements_for_topic(&self.name) {
            let w = self
                .consumer
                .fetch_watermarks(&self.name, e.partition(), timeout)
                .map_err(broker)?;
            ends.insert(e.partition(), w);
        }
        Ok(ends)
    }

    fn create(
        bus: &BusConfig,
        kafka: &KafkaConfig,
        topic: Topic,
        metrics: TransportMetrics,
        rebuild: bool,
    ) -> Result<Self, KafkaSetupError> {
        let name = TopicNames::from_config(bus).name(topic).to_string();
        let assignments = Arc::new(AtomicU64::new(0));
        let c = consumer_config(bus, kafka)?;
        let consumer: BaseConsumer<ConsumeContext> = c
            .create_with_context(ConsumeContext {
                metrics: metrics.clone(),
                topic: name.clone(),
                label: TransportMetrics::topic_label(topic),
                assignments: assignments.clone(),
                broker_down: AtomicBool::new(false),
                rebuild,
                resume: Mutex::new(BTreeMap::new()),
            })
            .map_err(|e| refused(&c, &e))?;
        consumer.subscribe(&[&name])?;
        let consumed = metrics
            .consumed_messages
            .with_label_values(&[TransportMetrics::topic_label(topic)]);
        Ok(KafkaSubscriber {
            consumer,
            topic,
            name,
            metrics,
            consumed,
            stored: false,
            assignments,
        })
    }
}

impl Subscriber for KafkaSubscriber {
    fn poll(&mut self, timeout: Duration) -> Result<Option<Delivery>, TransportError> {
        match self.consumer.poll(timeout) {
            None => Ok(None),
            Some(Ok(m)) => {
                self.consumer
                    .context()
                    .broker_down
                    .store(false, Ordering::Release);
                self.consumed.inc();
                Ok(Some(Delivery {
                    topic: self.topic,
                    key: m.key().unwrap_or_default().to_vec(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                    partition: m.partition(),
                    offset: u64::try_from(m.offset()).unwrap_or(0),
                }))
            }
            Some(Err(e)) => {
                // Connection trouble and broker errors are transient for a group member:
                // librdkafka reconnects and the group rebalances; keep polling.
                self.metrics.client_errors.inc();
                tracing::warn!(error = %e, topic = %self.name, "kafka consumer error");
                Ok(None)
            }
        }
    }

    fn commit(&mut self, delivery: &Delivery) -> Result<(), TransportError> {
        let offset = i64::try_from(delivery.offset).unwrap_or(i64::MAX);
        match self
            .consumer
            .store_offset(&self.name, delivery.partition, offset)
        {
            Ok(()) => {
                self.stored = true;
                Ok(())
            }
            Err(e) => {
                // The partition moved to another member meanwhile; it resumes from the last
                // committed offset and the duplicate check absorbs the overlap.
                tracing::debug!(error = %e, partition = delivery.partition, "offset not stored");
                Ok(())
            }
        }
    }

    fn close(&mut self) -> Result<(), TransportError> {
        if self.consumer.context().broker_down.load(Ordering::Acquire) {
            // A synchronous commit would wait for a coordinator that is not there (and a
            // stop signal with it). What was processed since the last commit is processed
            // again by whoever consumes next: at least once, as after a crash.
            tracing::warn!(
                "kafka: no broker reachable at exit; offsets since the last commit are not committed"
            );
            self.stored = false;
            return Ok(());
        }
        self.settle_lag();
        if self.stored {
            match self.consumer.commit_consumer_state(CommitMode::Sync) {
                // Nothing stored since the last automatic commit.
                Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
                Err(e) => {
                    return Err(TransportError::Broker(format!(
                        "cannot commit offsets: {e}"
                    )))
                }
                Ok(()) => {}
            }
            self.stored = false;
        }
        self.consumer.unsubscribe();
        Ok(())
    }

    fn assignments(&self) -> u64 {
        self.assignments.load(Ordering::Relaxed)
    }

    fn replayed(&self, delivery: &Delivery) -> bool {
        let resume = lock(&self.consumer.context().resume);
        resume
            .get(&delivery.partition)
            .is_some_and(|&c| i64::try_from(delivery.offset).is_ok_and(|o| o < c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use normwatch_config::{SaslConfig, SaslMechanism, Secret, TlsConfig};

    fn bus() -> BusConfig {
        BusConfig {
            brokers: vec!["127.0.0.1:9092".into(), "[::1]:9093".into()],
            ..BusConfig::default()
        }
    }

    #[test]
    fn tls_and_sasl_reach_librdkafka_which_accepts_them() {
        let kafka = KafkaConfig {
            tls: Some(TlsConfig {
                ca: Some("/etc/normwatch/ca.pem".into()),
                cert: Some("/etc/normwatch/client.pem".into()),
                key: Some("/etc/normwatch/client.key".into()),
                key_password_file: None,
            }),
            sasl: Some(SaslConfig {
                mechanism: SaslMechanism::ScramSha512,
                username: "sensor-1".into(),
                password: Secret::Inline("pw".into()),
            }),
            options: vec![("socket.keepalive.enable".into(), "true".into())],
            ..KafkaConfig::default()
        };
        let c = producer_config(&bus(), &kafka).unwrap();
        assert_eq!(
            c.get("bootstrap.servers"),
            Some("127.0.0.1:9092,[::1]:9093")
        );
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("ssl.ca.location"), Some("/etc/normwatch/ca.pem"));
        assert_eq!(
            c.get("ssl.certificate.location"),
            Some("/etc/normwatch/client.pem")
        );
        assert_eq!(c.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(c.get("sasl.password"), Some("pw"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("compression.type"), Some("lz4"));
        assert_eq!(c.get("socket.keepalive.enable"), Some("true"));
        // The bundled librdkafka was built with TLS, SCRAM and both codecs.
        c.create_native_config()
            .expect("librdkafka accepts TLS + SCRAM");
        let zstd = KafkaConfig {
            compression: Compression::Zstd,
            ..kafka.clone()
        };
        producer_config(&bus(), &zstd)
            .unwrap()
            .create_native_config()
            .expect("librdkafka has zstd");
        let c = consumer_config(&bus(), &kafka).unwrap();
        assert_eq!(c.get("group.id"), Some("normwatch-detect"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
    }

    #[test]
    fn missing_secret_is_a_clear_setup_error() {
        let kafka = KafkaConfig {
            sasl: Some(SaslConfig {
                mechanism: SaslMechanism::ScramSha256,
                username: "u".into(),
                password: Secret::Env("NORMWATCH_TEST_NO_SUCH_VARIABLE".into()),
            }),
            ..KafkaConfig::default()
        };
        let e = client_config(&bus(), &kafka).unwrap_err().to_string();
        assert!(e.contains("NORMWATCH_TEST_NO_SUCH_VARIABLE"), "{e}");
    }

    #[test]
    fn option_check_reports_what_librdkafka_refuses() {
        let mut kafka = KafkaConfig::default();
        assert!(check_client_options(&bus(), &kafka).is_ok());
        kafka.options = vec![("no.such.property".into(), "1".into())];
        let e = check_client_options(&bus(), &kafka).unwrap_err();
        assert!(e.contains("no.such.property"), "{e}");
    }

    #[test]
    fn a_tls_file_librdkafka_refuses_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("not-a-ca.pem");
        std::fs::write(&ca, "not a certificate\n").unwrap();
        let kafka = KafkaConfig {
            tls: Some(TlsConfig {
                ca: Some(ca.clone()),
                cert: None,
                key: None,
                key_password_file: None,
            }),
            ..KafkaConfig::default()
        };
        let c = client_config(&bus(), &kafka).unwrap();
        let Err(e) = c
            .create::<AdminClient<DefaultClientContext>>()
            .map_err(|e| refused(&c, &e))
        else {
            panic!("librdkafka took a CA file without a certificate");
        };
        let text = e.to_string();
        assert!(
            text.contains(&format!("kafka.tls.ca {}", ca.display())),
            "{text}"
        );
        assert_eq!(text.matches("ssl.ca.location").count(), 1, "{text}");
    }

    #[test]
    fn a_refused_secret_option_is_not_echoed() {
        // librdkafka quotes a value it refuses; a secret must not come back in the error.
        let kafka = KafkaConfig {
            options: vec![
                (
                    "sasl.oauthbearer.client.secret".into(),
                    "s3cr3t-Value-42".into(),
                ),
                ("ssl.key.password".into(), "hunter2-pass".into()),
                ("enable.ssl.certificate.verification".into(), "maybe".into()),
            ],
            ..KafkaConfig::default()
        };
        let e = check_client_options(&bus(), &kafka).unwrap_err();
        assert!(e.contains("librdkafka refuses"), "{e}");
        assert!(
            !e.contains("s3cr3t-Value-42") && !e.contains("hunter2-pass"),
            "{e}"
        );
        let mut c = ClientConfig::new();
        c.set("sasl.password", "s3cr3t-Value-42");
        assert_eq!(
            redact(&c, "Invalid value \"s3cr3t-Value-42\" for sasl.password"),
            "Invalid value \"[redacted]\" for sasl.password"
        );
    }
}
