//! Flow exports into the sensor: the `[exporters]` UDP listeners run beside the packet input
//! (or alone), and their decoded records go to the same [`RecordSink`] as the flow table's, so
//! they take the same batches, transport and detector.
//!
//! The listeners receive on their own named threads; decoding happens on the sensor thread
//! whenever the packet source checks the clock (each [`RecordSink::tick`]), so the records of
//! both inputs are handed on from one thread without a lock.

use crate::sinks::RecordSink;
use normwatch_config::Config;
use normwatch_flowexport::listen::{ListenConfig, Listener};
use normwatch_flowexport::{Decoder, DecoderConfig, DropReason, ExportStats, Exported, SOURCES};
use normwatch_model::FlowRecord;
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The decoder settings from the validated configuration; sFlow samples are aggregated with
/// the sensor's own flow-table settings.
pub fn decoder_config(cfg: &Config) -> DecoderConfig {
    let e = &cfg.exporters;
    DecoderConfig {
        sensor_id: cfg.sensor.id.clone(),
        assets: std::sync::Arc::new(cfg.assets.clone()),
        default_sampling: e.sampling_rate,
        sampling: e
            .devices
            .iter()
            .map(|d| (d.address, d.sampling_rate))
            .collect(),
        max_sessions: e.max_sessions,
        exporter_bytes: e.max_exporter_bytes,
        agent_bytes: e.max_agent_bytes,
        total_bytes: e.max_total_bytes,
        hold_ns: e.template_wait.as_nanos().min(u128::from(u64::MAX)) as u64,
        // Samples are scaled by their rate when a record is made, which an interim report's
        // prior counts are not: sFlow flows are reported when they end.
        sflow_table: normwatch_sensor::flow::FlowConfig {
            report_ns: None,
            ..crate::capture::flow_config(cfg, Some(false))
        },
        ..DecoderConfig::default()
    }
}

/// `normwatch_sensor_export_*`: what the listeners received and the decoder made of it.
/// Labels: the fixed export protocols and drop reasons.
#[derive(Clone, Debug)]
pub struct ExportMetrics {
    pub datagrams: IntCounterVec,
    pub records: IntCounterVec,
    pub dropped: IntCounterVec,
    pub lost: IntCounter,
    pub held: IntGauge,
}

impl ExportMetrics {
    pub fn register(registry: &Registry) -> prometheus::Result<Self> {
        let m = ExportMetrics {
            datagrams: IntCounterVec::new(
                Opts::new(
                    "normwatch_sensor_export_datagrams_total",
                    "Flow-export datagrams decoded, by protocol.",
                ),
                &["protocol"],
            )?,
            records: IntCounterVec::new(
                Opts::new(
                    "normwatch_sensor_export_records_total",
                    "Flow records decoded from exports, by protocol.",
                ),
                &["protocol"],
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "normwatch_sensor_export_dropped_total",
                    "Flow-export datagrams or parts of them not used, by reason (channel: the decoder fell behind).",
                ),
                &["reason"],
            )?,
            lost: IntCounter::new(
                "normwatch_sensor_export_lost_total",
                "What exporters' sequence numbers say never arrived (v5 flows, v9 datagrams).",
            )?,
            held: IntGauge::new(
                "normwatch_sensor_export_held_sets",
                "Data sets waiting for their template.",
            )?,
        };
        registry.register(Box::new(m.datagrams.clone()))?;
        registry.register(Box::new(m.records.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.lost.clone()))?;
        registry.register(Box::new(m.held.clone()))?;
        for s in SOURCES {
            m.datagrams.with_label_values(&[s.as_str()]);
            m.records.with_label_values(&[s.as_str()]);
        }
        for r in DropReason::ALL {
            m.dropped.with_label_values(&[r.as_str()]);
        }
        m.dropped.with_label_values(&["channel"]);
        Ok(m)
    }

    /// Adds what the counters grew by since `seen`.
    fn observe(&self, seen: &mut (ExportStats, u64), now: &ExportStats, channel: u64, held: usize) {
        let (old, old_channel) = seen;
        for (i, s) in SOURCES.iter().enumerate() {
            self.datagrams
                .with_label_values(&[s.as_str()])
                .inc_by(now.datagrams[i] - old.datagrams[i]);
            self.records
                .with_label_values(&[s.as_str()])
                .inc_by(now.records[i] - old.records[i]);
        }
        for (i, r) in DropReason::ALL.iter().enumerate() {
            self.dropped
                .with_label_values(&[r.as_str()])
                .inc_by(now.drops[i] - old.drops[i]);
        }
        self.dropped
            .with_label_values(&["channel"])
            .inc_by(channel - *old_channel);
        self.lost.inc_by(now.lost - old.lost);
        self.held.set(held as i64);
        *old = now.clone();
        *old_channel = channel;
    }
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64)
}

/// A [`RecordSink`] that passes the packet input's records on and, at each tick, decodes
/// whatever the listeners received into the same sink.
pub struct ExportTap<'a> {
    inner: &'a mut dyn RecordSink,
    listener: Listener,
    decoder: Decoder,
    out: Vec<Exported>,
    records: Vec<FlowRecord>,
    metrics: Option<ExportMetrics>,
    seen: (ExportStats, u64),
    /// When held data and sFlow flows were last aged and the metrics last fed.
    last_tick: Option<Instant>,
}

/// How often held data and sFlow flows are aged: the packet source may tick thousands of
/// times a second when reading files fast.
const TICK_EVERY: Duration = Duration::from_millis(100);

impl std::fmt::Debug for ExportTap<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportTap")
            .field("listener", &self.listener)
            .field("decoder", &self.decoder)
            .finish_non_exhaustive()
    }
}

impl<'a> ExportTap<'a> {
    /// Binds the configured addresses (all or none) and starts the listener threads.
    pub fn start(
        cfg: &Config,
        inner: &'a mut dyn RecordSink,
        metrics: Option<ExportMetrics>,
    ) -> std::io::Result<Self> {
        let listener = Listener::start(&ListenConfig {
            addrs: cfg.exporters.listen.clone(),
            recv_buffer: cfg.exporters.receive_buffer_bytes,
            ..ListenConfig::default()
        })?;
        for a in listener.local_addrs() {
            tracing::info!(address = %a, "receiving flow exports");
        }
        Ok(ExportTap {
            inner,
            listener,
            decoder: Decoder::new(decoder_config(cfg)),
            out: Vec::new(),
            records: Vec::new(),
            metrics,
            seen: Default::default(),
            last_tick: None,
        })
    }

    pub fn listener(&self) -> &Listener {
        &self.listener
    }

    pub fn stats(&self) -> &ExportStats {
        self.decoder.stats()
    }

    /// Decodes the batches already received (waiting at most `wait` for the first) and
    /// hands their records on; returns the number of datagrams decoded.
    pub fn poll(&mut self, wait: Duration, now: Instant) -> usize {
        let mut n = 0;
        let mut wait = wait;
        while let Some(b) = self.listener.next_batch(wait) {
            wait = Duration::ZERO;
            for (from, at, data) in b.datagrams() {
                if let Err(reason) = self.decoder.decode(from, data, at, &mut self.out) {
                    tracing::debug!(exporter = %from, %reason, "flow-export datagram dropped");
                }
                n += 1;
            }
            self.listener.recycle(b);
            self.hand_on(now);
        }
        if self
            .last_tick
            .is_none_or(|t| now.duration_since(t) >= TICK_EVERY)
        {
            self.last_tick = Some(now);
            self.decoder.tick(wall_ns(), &mut self.out);
            self.hand_on(now);
            self.observe();
        }
        n
    }

    fn hand_on(&mut self, now: Instant) {
        if self.out.is_empty() {
            return;
        }
        self.records.extend(self.out.drain(..).map(|e| e.record));
        self.inner.records(&mut self.records, now);
        self.records.clear();
    }

    fn observe(&mut self) {
        if let Some(m) = &self.metrics {
            let channel = self
                .listener
                .stats()
                .channel_dropped
                .load(Ordering::Relaxed);
            m.observe(
                &mut self.seen,
                self.decoder.stats(),
                channel,
                self.decoder.held(),
            );
        }
    }

    /// Stops the listeners, decodes what they still hold and ends every open sFlow flow.
    pub fn finish(mut self) -> ExportStats {
        self.listener.stop();
        let now = Instant::now();
        self.last_tick = None;
        self.poll(Duration::ZERO, now);
        self.decoder.flush(&mut self.out);
        self.hand_on(now);
        self.observe();
        self.inner.tick(now);
        self.decoder.stats().clone()
    }
}

impl RecordSink for ExportTap<'_> {
    fn records(&mut self, buf: &mut Vec<FlowRecord>, now: Instant) {
        self.inner.records(buf, now);
    }

    fn tick(&mut self, now: Instant) {
        self.poll(Duration::ZERO, now);
        self.inner.tick(now);
    }
}

/// Runs `packets` (the packet input, given the sink to feed) with the configured export
/// listeners beside it; without listeners it runs `packets` alone. The listeners stop when
/// the packet input ends.
pub fn alongside<T>(
    cfg: &Config,
    sink: &mut dyn RecordSink,
    registry: Option<&Registry>,
    packets: impl FnOnce(&mut dyn RecordSink) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    if cfg.exporters.listen.is_empty() {
        return packets(sink);
    }
    let metrics = registry.and_then(|r| {
        ExportMetrics::register(r)
            .map_err(|e| tracing::warn!(%e, "flow-export metrics not registered"))
            .ok()
    });
    let mut tap = ExportTap::start(cfg, sink, metrics)
        .map_err(|e| crate::capture::InputError(format!("cannot listen for flow exports: {e}")))?;
    let result = packets(&mut tap);
    let stats = tap.finish();
    tracing::info!(
        datagrams = stats.datagrams.iter().sum::<u64>(),
        records = stats.records.iter().sum::<u64>(),
        dropped = stats.drops.iter().sum::<u64>(),
        "flow exports stopped"
    );
    result
}

/// Receives flow exports alone (no packet input) until `stop` is raised or `duration`
/// passes, handing their records to `sink`.
pub fn receive(
    cfg: &Config,
    sink: &mut dyn RecordSink,
    registry: Option<&Registry>,
    duration: Option<Duration>,
    stop: &AtomicBool,
) -> anyhow::Result<ExportStats> {
    if cfg.exporters.listen.is_empty() {
        return Err(crate::capture::InputError(
            "no flow-export listener: set [exporters] listen = [\"ADDRESS:PORT\", ...] in the configuration, or read packets with --pcap or --interface".into(),
        )
        .into());
    }
    let metrics = registry.and_then(|r| ExportMetrics::register(r).ok());
    let mut tap = ExportTap::start(cfg, sink, metrics)
        .map_err(|e| crate::capture::InputError(format!("cannot listen for flow exports: {e}")))?;
    let deadline = duration.map(|d| Instant::now() + d);
    while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        let now = Instant::now();
        tap.poll(Duration::from_millis(100), now);
        tap.inner.tick(now);
    }
    Ok(tap.finish())
}
