//! The ways to run: `sensor` (packets → Kafka), `detect` (Kafka → detector → alerts topic), `run`
//! (every stage in one process over the in-process bus).

use crate::batcher::{initial_seq, FlowBatcher};
use crate::capture::{drive, flow_config, Input, Observer, SourceOptions};
use crate::consume::{consume_flows, ConsumeOptions, ConsumeSummary};
use crate::detector::{DetectorSink, PublishAlerts};
use crate::metrics::Metrics;
use crate::publish::Publish;
use crate::sinks::{AlertSink, FlowSink, RecordSink, TeeAlerts};
use normwatch_config::Config;
use normwatch_model::FlowRecord;
use normwatch_sensor::flow::FlowConfig;
use normwatch_sensor::{FlowTable, SensorStats};
use normwatch_transport::bus::{memory_bus, Publisher, Topic};
use normwatch_transport::kafka::{KafkaPublisher, KafkaSubscriber, MAX_MESSAGE_BYTES};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How the sensor side runs.
#[derive(Clone, Debug)]
pub struct SensorOptions {
    pub source: SourceOptions,
    /// Overrides the configured checksum policy (true: verify).
    pub checksums: Option<bool>,
    /// How long to wait at the end for the broker to acknowledge everything.
    pub drain_timeout: Duration,
    /// How long to wait for the broker when creating topics at start.
    pub setup_timeout: Duration,
    /// Raised by a second stop signal: stop waiting for the broker at the end; whatever it
    /// has not acknowledged goes to the spool (nothing accepted is lost, the next run sends
    /// it).
    pub force: Arc<AtomicBool>,
}

impl Default for SensorOptions {
    fn default() -> Self {
        SensorOptions {
            source: SourceOptions::default(),
            checksums: None,
            drain_timeout: Duration::from_secs(60),
            setup_timeout: Duration::from_secs(5),
            force: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// What the sensor side did.
#[derive(Clone, Debug, Default)]
pub struct SensorSummary {
    /// Flow records and batches handed to the transport.
    pub records: u64,
    pub batches: u64,
    pub stats: SensorStats,
}

fn batcher(cfg: &Config) -> FlowBatcher {
    FlowBatcher::new(
        cfg.sensor.id.clone(),
        initial_seq(),
        cfg.bus.batch_records,
        MAX_MESSAGE_BYTES,
        cfg.bus.batch_linger,
    )
}

/// Reads `input` into flow records and publishes them through `publisher`; with
/// `publish_thread`, batching, encoding and publishing run on a thread of their own
/// ([`crate::publish::on_own_thread`]).
fn produce(
    cfg: &Config,
    input: &Input,
    opts: &SensorOptions,
    publisher: &mut (dyn Publisher + Send),
    metrics: &Metrics,
    stop: &AtomicBool,
    publish_thread: bool,
) -> anyhow::Result<SensorSummary> {
    let _span = tracing::info_span!("sensor", sensor = %cfg.sensor.id).entered();
    let mut table = FlowTable::new(flow_config(cfg, opts.checksums));
    // A capture read as fast as it goes is batched by event time, so every run over it
    // hands the consumer the same batches in the same order; live input (an interface,
    // paced replay, flow exports) is batched by the wall clock.
    let replay = matches!(input, Input::Files(_))
        && opts.source.pps.is_none()
        && cfg.exporters.listen.is_empty();
    let batcher = if replay {
        batcher(cfg).by_event_time()
    } else {
        batcher(cfg)
    };
    let publish = Publish::new(batcher, publisher, metrics.publish.clone());
    let mut obs = Observer::new(Some(metrics.sensor.clone()));
    // Flow exports from `[exporters]`, if any, join the packets' records in `publish`.
    let mut read = |sink: &mut dyn RecordSink| match input {
        Input::Exports { duration } => {
            crate::exporters::receive(cfg, sink, Some(&metrics.registry), *duration, stop)
                .map(|_| ())
        }
        _ => crate::exporters::alongside(cfg, sink, Some(&metrics.registry), |sink| {
            drive(cfg, input, &opts.source, &mut table, sink, &mut obs, stop)
        }),
    };
    let (read, published) = if publish_thread {
        crate::publish::on_own_thread(publish, read)
    } else {
        let mut publish = publish;
        let read = read(&mut publish);
        (read, publish.finish())
    };
    let stats = obs.totals(&table);
    // A read error is reported after every flow built so far was published.
    read?;
    let (records, batches) = published?;
    Ok(SensorSummary {
        records,
        batches,
        stats,
    })
}

/// `normwatch sensor`: packets to flow records, published to Kafka (spooled while the broker
/// is away). Returns once the input ends and the broker acknowledged everything, or the drain
/// timeout passed (an error naming what is left in the spool).
pub fn sensor(
    cfg: &Config,
    input: &Input,
    opts: &SensorOptions,
    metrics: &Metrics,
    stop: &AtomicBool,
) -> anyhow::Result<SensorSummary> {
    crate::consume::need_kafka(cfg, "sensor")?;
    let mut publisher = KafkaPublisher::new(
        &cfg.bus,
        &cfg.kafka,
        &cfg.spool,
        metrics.transport.clone(),
        opts.setup_timeout,
    )?;
    let summary = produce(cfg, input, opts, &mut publisher, metrics, stop, true);
    let drained = drain(&mut publisher, opts.drain_timeout, &opts.force);
    // Dropping the publisher moves whatever the broker has not acknowledged to the spool.
    drop(publisher);
    let summary = summary?;
    drained?;
    Ok(summary)
}

/// Waits up to `timeout` for the broker to acknowledge everything published, in short
/// steps so that `force` (a second stop signal) cuts the wait short. A forced stop is not an
/// error: what is left goes to the spool when the publisher is dropped.
fn drain(
    publisher: &mut KafkaPublisher,
    timeout: Duration,
    force: &AtomicBool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let step = left.min(Duration::from_millis(200));
        match publisher.drain(step) {
            Ok(()) => return Ok(()),
            Err(_) if force.load(Ordering::Relaxed) => {
                // Whatever librdkafka still holds goes to the spool now.
                let _ = publisher.flush(Duration::from_secs(1));
                tracing::warn!(
                    "stopped without waiting for the broker: unacknowledged batches go to the spool, the next run sends them"
                );
                return Ok(());
            }
            // The transport's message names the last step only; the context names the
            // whole wait.
            Err(e) if left <= step => {
                return Err(anyhow::Error::new(e).context(format!(
                "the broker did not acknowledge every batch within the drain timeout ({timeout:?})"
            )))
            }
            Err(_) => {}
        }
    }
}

/// What `detect` did.
#[derive(Clone, Copy, Debug, Default)]
pub struct DetectSummary {
    pub consumed: ConsumeSummary,
    /// Alerts opened and alert events published.
    pub opened: u64,
    pub events: u64,
    /// Alert events the rebuilt state gave again and the alerts topic already held.
    pub suppressed: u64,
}

/// `normwatch detect`: consumes flow batches from Kafka as a member of the consumer group,
/// runs the detector over them and publishes its alert events to the alerts topic (and to
/// `alerts` if given); consumed records also go to `flows` if given. A batch is committed
/// only after the alert events it caused were acknowledged by the broker or spooled to disk
/// (a spool the next member of the group takes over). At the end (stop
/// signal or idle limit) every alert still open is closed and published, before the member
/// leaves the group; after an error nothing is closed (the next member carries on).
///
/// A member's state is rebuilt from the flows topic whenever the group assigns it
/// partitions: it reads them from their start with a fresh detector and sends only the alert
/// events the alerts topic does not hold yet (see [`DetectorSink::rebuilding`]). So a member
/// that replaces a killed one, or takes partitions over in a rebalance, neither opens nor
/// closes again an alert already on the topic, and closes every alert its predecessor
/// opened. The price is a read of the flows topic's retained records (and of the alerts
/// topic) at every assignment; a checkpoint of each asset's state in a compacted topic
/// would bound it.
pub fn detect(
    cfg: &Config,
    flows: Option<&mut dyn FlowSink>,
    alerts: Option<&mut dyn AlertSink>,
    opts: &ConsumeOptions,
    metrics: &Metrics,
    stop: &AtomicBool,
) -> anyhow::Result<DetectSummary> {
    crate::consume::need_kafka(cfg, "detect")?;
    let _span = tracing::info_span!("detect", group = %cfg.kafka.group_id).entered();
    let detector = crate::detector::detector(cfg)?;
    // The alert publisher's own spool; spools earlier members left are taken over.
    let spool = crate::consume::member_spool(&cfg.spool, &cfg.kafka.group_id)?;
    let mut publisher = KafkaPublisher::new(
        &cfg.bus,
        &cfg.kafka,
        &spool,
        metrics.transport.clone(),
        Duration::from_secs(5),
    )?;
    let mut sub = KafkaSubscriber::rebuilding(
        &cfg.bus,
        &cfg.kafka,
        Topic::Flows,
        metrics.transport.clone(),
    )?;
    let read_timeout = cfg.kafka.delivery_timeout.max(Duration::from_secs(30));
    let published = move || {
        normwatch_transport::kafka::read_topic(&cfg.bus, &cfg.kafka, Topic::Alerts, read_timeout)
            .map_err(anyhow::Error::new)
    };
    let result = {
        let mut to_kafka = PublishAlerts::new(&mut publisher, cfg.kafka.delivery_timeout);
        let mut sinks: Vec<&mut dyn AlertSink> = vec![&mut to_kafka];
        if let Some(a) = alerts {
            sinks.push(&mut *a);
        }
        let mut tee = TeeAlerts(sinks);
        let flows = flows.map(|f| &mut *f as &mut dyn FlowSink);
        let mut sink = DetectorSink::new(detector, &mut tee, flows)
            .with_metrics(metrics.detect.clone(), &cfg.assets)
            .rebuilding(Box::new(published));
        // At a successful end the open alerts are closed before the member leaves its group.
        let opts = ConsumeOptions {
            exit_when_idle: opts.exit_when_idle,
            end_before_leaving: true,
        };
        let consumed = consume_flows(
            &mut sub,
            &mut sink,
            &metrics.transport,
            &metrics.consume,
            &opts,
            stop,
        );
        consumed.map(|c| DetectSummary {
            consumed: c,
            opened: sink.opened,
            events: sink.events,
            suppressed: sink.suppressed,
        })
    };
    let drained = publisher.flush(cfg.kafka.delivery_timeout);
    drop(publisher);
    crate::consume::release_member_spool(&spool.path, spool.max_bytes);
    let summary = result?;
    drained.map_err(|e| anyhow::Error::new(e).context("alert events were not acknowledged"))?;
    Ok(summary)
}

/// `normwatch run`: the sensor and the consumer in one process over the in-process bus
/// (whatever `bus.kind` says). The sensor runs on its own thread; a full bus makes it wait.
pub fn run(
    cfg: &Config,
    input: &Input,
    opts: &SensorOptions,
    sink: &mut dyn FlowSink,
    metrics: &Metrics,
    stop: &AtomicBool,
) -> anyhow::Result<(SensorSummary, ConsumeSummary)> {
    let (publisher, bus) = memory_bus(cfg.bus.capacity);
    let publisher = publisher.with_metrics(metrics.transport.clone());
    let bus = bus.with_metrics(metrics.transport.clone());
    let mut sub = bus.subscriber(Topic::Flows);
    drop(bus);
    std::thread::scope(|scope| {
        let sensor = std::thread::Builder::new()
            .name("nw-sensor".into())
            .spawn_scoped(scope, move || {
                let mut publisher = publisher;
                // The consumer has the other core: one sensor thread.
                produce(cfg, input, opts, &mut publisher, metrics, stop, false)
                // The publisher drops here: the consumer drains the bus and sees it closed.
            })?;
        let span = tracing::info_span!("detect");
        let _entered = span.enter();
        // The consumer does not watch the stop flag: the sensor stops at it, ends every
        // open flow and closes the bus, and the consumer takes in everything up to the
        // close, so a stopped run has every record and alert a finished one has.
        let consumed = consume_flows(
            &mut sub,
            sink,
            &metrics.transport,
            &metrics.consume,
            &ConsumeOptions::default(),
            &AtomicBool::new(false),
        );
        // If the consumer failed, the sensor must not wait on a bus nobody reads.
        drop(sub);
        let produced = sensor
            .join()
            .map_err(|_| anyhow::anyhow!("the sensor thread panicked"))?;
        Ok((produced?, consumed?))
    })
}

/// A [`RecordSink`] that hands records straight to a [`FlowSink`] (no bus), for `flows`.
#[derive(Debug)]
pub struct Direct<'a, S: FlowSink + ?Sized> {
    sink: &'a mut S,
    error: Option<anyhow::Error>,
}

impl<'a, S: FlowSink + ?Sized> Direct<'a, S> {
    pub fn new(sink: &'a mut S) -> Self {
        Direct { sink, error: None }
    }

    pub fn finish(self) -> anyhow::Result<()> {
        match self.error {
            Some(e) => Err(e),
            None => self.sink.flush(),
        }
    }
}

impl<S: FlowSink + ?Sized> RecordSink for Direct<'_, S> {
    fn records(&mut self, buf: &mut Vec<FlowRecord>, _now: Instant) {
        if self.error.is_none() && !buf.is_empty() {
            if let Err(e) = self.sink.accept(buf) {
                self.error = Some(e);
            }
        }
        buf.clear();
    }

    fn tick(&mut self, _now: Instant) {}
}

/// `normwatch flows`: packets to flow records handed to `sink`, with no transport. The
/// counters are returned even when reading failed part way.
pub fn flows(
    cfg: &Config,
    input: &Input,
    opts: &SensorOptions,
    sink: &mut dyn FlowSink,
    stop: &AtomicBool,
) -> (SensorStats, anyhow::Result<()>) {
    // One record per connection, as Zeek's conn.log: no interim reports.
    let mut table = FlowTable::new(FlowConfig {
        report_ns: None,
        ..flow_config(cfg, opts.checksums)
    });
    let mut direct = Direct::new(sink);
    let mut obs = Observer::default();
    let read = drive(
        cfg,
        input,
        &opts.source,
        &mut table,
        &mut direct,
        &mut obs,
        stop,
    );
    let written = direct.finish();
    (obs.totals(&table), read.and(written))
}
