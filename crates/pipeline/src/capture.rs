//! Packets in, flow records out: capture files or a live interface driven through the flow
//! table, handing finished records to the caller as they end.

use crate::sinks::RecordSink;
use normwatch_config::{ChecksumPolicy, Config};
use normwatch_model::FlowRecord;
use normwatch_sensor::capture::file::read_file;
use normwatch_sensor::capture::live::{BpfInstruction, LiveCapture, LiveConfig};
use normwatch_sensor::decode::ChecksumSettings;
use normwatch_sensor::decode::DropReason;
use normwatch_sensor::flow::DEFAULT_LIKELY_SERVER_PORTS;
use normwatch_sensor::{FlowConfig, FlowTable, SensorStats};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Where packets come from.
#[derive(Clone, Debug)]
pub enum Input {
    /// Capture files (pcap or pcapng), read in order as one stream.
    Files(Vec<PathBuf>),
    /// A live interface (AF_PACKET), until `duration` passes or the stop flag is raised.
    Live {
        interface: String,
        duration: Option<Duration>,
    },
    /// No packets: only the flow exports of `[exporters]`, until `duration` passes or the
    /// stop flag is raised.
    Exports { duration: Option<Duration> },
}

/// Why reading packets failed in a way the user must fix (exit code 2), as opposed to a
/// failure while reading (exit code 1).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// Builds the flow-table settings from the validated configuration; `checksums` overrides
/// the configured policy (true: verify).
pub fn flow_config(cfg: &Config, checksums: Option<bool>) -> FlowConfig {
    let t = &cfg.sensor.timeouts;
    let ns = |d: Duration| d.as_nanos().min(u128::from(u64::MAX)) as u64;
    let ignore_src = cfg
        .sensor
        .ignore_checksum_nets
        .iter()
        .map(|net| {
            let (bits, len) = match net {
                ipnet::IpNet::V4(n) => (
                    u128::from(n.network().to_ipv6_mapped()),
                    u32::from(n.prefix_len()) + 96,
                ),
                ipnet::IpNet::V6(n) => (u128::from(n.network()), u32::from(n.prefix_len())),
            };
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            (bits & mask, mask)
        })
        .collect();
    FlowConfig {
        sensor_id: cfg.sensor.id.clone(),
        max_flows: cfg.sensor.max_flows,
        tcp_idle_ns: ns(t.tcp_idle),
        udp_idle_ns: ns(t.udp_idle),
        icmp_idle_ns: ns(t.icmp_idle),
        other_idle_ns: ns(t.other_idle),
        active_ns: t.active.map(ns),
        report_ns: cfg.sensor.report_interval.map(ns),
        tcp_attempt_ns: ns(t.tcp_attempt),
        attempts_above: cfg.sensor.aggregate_attempts_above,
        tcp_linger_ns: ns(t.tcp_linger),
        checksums: ChecksumSettings {
            verify: checksums.unwrap_or(cfg.sensor.checksums == ChecksumPolicy::Verify),
            ignore_src,
        },
        likely_server_ports: cfg
            .sensor
            .likely_server_ports
            .clone()
            .unwrap_or_else(|| DEFAULT_LIKELY_SERVER_PORTS.to_vec()),
        assets: Arc::new(cfg.assets.clone()),
    }
}

/// Feeds the flow table's counters to the sensor metrics whenever the source checks the
/// clock (and once at the end).
#[derive(Debug, Default)]
pub struct Observer {
    metrics: Option<SensorMetrics>,
    seen: SensorStats,
    /// Counters of the flow tables of further capture threads (`capture.threads`), summed
    /// once they ended.
    others: SensorStats,
    capture_seen: (u64, u64, u64),
}

impl Observer {
    pub fn new(metrics: Option<SensorMetrics>) -> Self {
        Observer {
            metrics,
            ..Observer::default()
        }
    }

    /// The counters of `table` and of every further capture thread's table.
    pub fn totals(&self, table: &FlowTable) -> SensorStats {
        let mut t = table.stats().clone();
        t.add(&self.others);
        t
    }

    fn table(&mut self, table: &FlowTable) {
        if let Some(m) = &self.metrics {
            m.observe(&mut self.seen, table.stats());
        }
    }

    fn capture(&mut self, kernel: u64, channel: u64, freezes: u64) {
        if let Some(m) = &self.metrics {
            m.observe_capture(&mut self.capture_seen, kernel, channel, freezes);
        }
    }
}

/// How a source is read.
#[derive(Clone, Debug, Default)]
pub struct SourceOptions {
    /// Pace capture files to at most this many packets per second (replaying a capture as if
    /// live); `None` reads as fast as possible.
    pub pps: Option<u64>,
}

/// Reads `input` through `table` into `sink`, then ends every open flow (so no flow is left
/// behind). Stops early when `stop` is raised. Records already produced reach the sink even
/// when reading fails.
pub fn drive(
    cfg: &Config,
    input: &Input,
    opts: &SourceOptions,
    table: &mut FlowTable,
    sink: &mut dyn RecordSink,
    obs: &mut Observer,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut buf = Vec::new();
    let result = match input {
        Input::Files(paths) => files(paths, opts, table, sink, obs, &mut buf, stop),
        Input::Live {
            interface,
            duration,
        } => live(cfg, interface, *duration, table, sink, obs, &mut buf, stop),
        Input::Exports { .. } => Err(InputError(
            "this command reads packets (--pcap or --interface); flow exports alone are received by `normwatch sensor` and `normwatch run`".into(),
        )
        .into()),
    };
    table.flush_each(&mut buf, FLUSH_BATCH, |b| sink.records(b, Instant::now()));
    sink.records(&mut buf, Instant::now());
    obs.table(table);
    result
}

/// Records of the end-of-input flush handed on at a time (the open flows are not collected
/// into one list first).
const FLUSH_BATCH: usize = 4096;

/// Frames between wall-clock checks (pacing, batch deadlines, the stop flag).
const CHECK_EVERY: u64 = 1024;
/// Records a capture file's frames leave in the buffer before they are handed to the sink
/// between clock checks.
const RECORD_RUN: usize = 256;

fn files(
    paths: &[PathBuf],
    opts: &SourceOptions,
    table: &mut FlowTable,
    sink: &mut dyn RecordSink,
    obs: &mut Observer,
    buf: &mut Vec<FlowRecord>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut frames: u64 = 0;
    // Pacing checks the clock more often so the rate stays smooth.
    let check_every = match opts.pps {
        Some(pps) => (pps / 100).clamp(1, CHECK_EVERY),
        None => CHECK_EVERY,
    };
    // A countdown rather than `frames % check_every`: no division per packet.
    let mut until_check = check_every;
    for path in paths {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let mut stopped = false;
        read_file(
            path,
            // Into the reader's record loop: as a call of its own, each frame paid for the
            // call and for reaching every captured variable through the closure's pointer.
            #[inline(always)]
            |frame| {
                if stopped {
                    return;
                }
                table.prefetch(frame.link, frame.ahead);
                table.process_frame(frame.link, frame.data, frame.wire_len, frame.ts_ns, buf);
                frames += 1;
                // Handed on in runs: each hand-off is a call into the sink (and maybe
                // another thread's queue); the rest goes at every clock check.
                if buf.len() >= RECORD_RUN {
                    sink.records(buf, Instant::now());
                }
                until_check -= 1;
                if until_check == 0 {
                    until_check = check_every;
                    if let Some(pps) = opts.pps.filter(|p| *p > 0) {
                        let due = started + Duration::from_secs_f64(frames as f64 / pps as f64);
                        let now = Instant::now();
                        if due > now {
                            std::thread::sleep(due - now);
                        }
                    }
                    if !buf.is_empty() {
                        sink.records(buf, Instant::now());
                    }
                    sink.tick(Instant::now());
                    obs.table(table);
                    stopped = stop.load(Ordering::Relaxed);
                }
            },
        )?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn live(
    cfg: &Config,
    iface: &str,
    duration: Option<Duration>,
    table: &mut FlowTable,
    sink: &mut dyn RecordSink,
    obs: &mut Observer,
    buf: &mut Vec<FlowRecord>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let threads = cfg.capture.threads.max(1);
    let filter = cfg.capture.filter.as_ref().map(|prog| {
        prog.iter()
            .map(|i| BpfInstruction {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect()
    });
    let lc = LiveConfig {
        interface: iface.to_string(),
        snaplen: cfg.capture.snaplen as usize,
        promiscuous: cfg.capture.promiscuous,
        ring_bytes: usize::try_from(cfg.capture.ring_size).unwrap_or(usize::MAX),
        filter,
        // One group per process: another sensor on the same interface gets its own copy.
        fanout: (threads > 1).then(|| (std::process::id() & 0xffff) as u16),
    };
    // Every ring is opened before any thread starts, so a refused setting is reported once.
    let mut captures = (0..threads)
        .map(|_| LiveCapture::open(&lc))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| InputError(e.to_string()))?;
    tracing::info!(
        interface = iface,
        ring_bytes = cfg.capture.ring_size,
        threads,
        filter = cfg.capture.filter.is_some(),
        "capturing"
    );
    let deadline = duration.map(|d| Instant::now() + d);
    let mut mine = captures.pop().expect("at least one capture");
    if captures.is_empty() {
        return capture_loop(&mut mine, table, sink, obs, buf, stop, deadline);
    }
    // PACKET_FANOUT_HASH: the kernel spreads flows over the rings by a symmetric hash, so
    // both directions of a flow meet in one flow table. Each further ring has a thread and a
    // table of its own (the flow limit shared out); their records come over a channel in
    // whole batches and join this thread's in `sink`.
    let mut fc = table.config().clone();
    fc.max_flows = (fc.max_flows / threads).max(1);
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<FlowRecord>>(4 * threads);
    std::thread::scope(|scope| {
        let mut workers = Vec::new();
        for (n, mut cap) in captures.into_iter().enumerate() {
            let (fc, tx, metrics) = (fc.clone(), tx.clone(), obs.metrics.clone());
            let worker = std::thread::Builder::new()
                .name(format!("nw-capture-{}", n + 1))
                .spawn_scoped(scope, move || {
                    let mut table = FlowTable::new(fc);
                    let mut fwd = Forward(tx);
                    let mut obs = Observer::new(metrics);
                    let mut buf = Vec::new();
                    let r = capture_loop(
                        &mut cap, &mut table, &mut fwd, &mut obs, &mut buf, stop, deadline,
                    );
                    table.flush_each(&mut buf, FLUSH_BATCH, |b| fwd.records(b, Instant::now()));
                    fwd.records(&mut buf, Instant::now());
                    obs.table(&table);
                    (table.stats().clone(), r)
                })
                .map_err(|e| anyhow::anyhow!("cannot start a capture thread: {e}"))?;
            workers.push(worker);
        }
        drop(tx);
        let mut merged = Merge { sink, rx: &rx };
        let mut result = capture_loop(&mut mine, table, &mut merged, obs, buf, stop, deadline);
        // The other threads stop at the same flag; everything they send is taken in until
        // the last one has ended and closed the channel.
        while let Ok(mut batch) = rx.recv() {
            merged.sink.records(&mut batch, Instant::now());
            merged.sink.tick(Instant::now());
        }
        for w in workers {
            match w.join() {
                Ok((stats, r)) => {
                    obs.others.add(&stats);
                    result = result.and(r);
                }
                Err(_) => result = result.and(Err(anyhow::anyhow!("a capture thread panicked"))),
            }
        }
        result
    })
}

/// Hands a fan-out thread's records to the thread that owns the sink, one batch per block.
struct Forward(std::sync::mpsc::SyncSender<Vec<FlowRecord>>);

impl RecordSink for Forward {
    fn records(&mut self, buf: &mut Vec<FlowRecord>, _now: Instant) {
        if !buf.is_empty() {
            // Blocks while the owner is behind (the ring keeps filling meanwhile); fails only
            // once the owner is gone, and then there is nobody to hand records to.
            let _ = self.0.send(std::mem::take(buf));
        }
    }

    fn tick(&mut self, _now: Instant) {}
}

/// The owner's sink, which takes in the fan-out threads' batches whenever it is called.
struct Merge<'a, 'b> {
    sink: &'a mut dyn RecordSink,
    rx: &'b std::sync::mpsc::Receiver<Vec<FlowRecord>>,
}

impl Merge<'_, '_> {
    fn take_in(&mut self, now: Instant) {
        while let Ok(mut batch) = self.rx.try_recv() {
            self.sink.records(&mut batch, now);
        }
    }
}

impl RecordSink for Merge<'_, '_> {
    fn records(&mut self, buf: &mut Vec<FlowRecord>, now: Instant) {
        self.sink.records(buf, now);
        self.take_in(now);
    }

    fn tick(&mut self, now: Instant) {
        self.take_in(now);
        self.sink.tick(now);
    }
}

/// Reads blocks from `capture` through `table` into `sink` until `stop` or `deadline`, then
/// takes in every block the kernel already filled.
fn capture_loop(
    capture: &mut LiveCapture,
    table: &mut FlowTable,
    sink: &mut dyn RecordSink,
    obs: &mut Observer,
    buf: &mut Vec<FlowRecord>,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> anyhow::Result<()> {
    let observe = |capture: &LiveCapture, obs: &mut Observer| {
        let s = capture.stats();
        obs.capture(
            s.kernel_dropped.load(Ordering::Relaxed),
            0,
            s.ring_freezes.load(Ordering::Relaxed),
        );
    };
    let mut failed = None;
    loop {
        // The stop flag ends the wait for new blocks only: blocks the kernel already filled
        // are taken in below before the capture closes.
        if stop.load(Ordering::Relaxed) || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        match capture.next_block(Duration::from_millis(100)) {
            Ok(Some(block)) => {
                for f in block.frames() {
                    table.process_frame(f.link, f.data, f.wire_len, f.ts_ns, buf);
                }
                // The block goes back to the kernel only once every frame is in the table.
                drop(block);
                sink.records(buf, Instant::now());
            }
            Ok(None) => {
                // Quiet link: let time pass so idle flows still end.
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                table.advance_to(now, buf);
                sink.records(buf, Instant::now());
            }
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
        sink.tick(Instant::now());
        obs.table(table);
        observe(capture, obs);
    }
    // Every block the kernel handed over before the stop is taken in: those frames were
    // accepted, so they are counted into flows like any other.
    while let Ok(Some(block)) = capture.next_block(Duration::ZERO) {
        for f in block.frames() {
            table.process_frame(f.link, f.data, f.wire_len, f.ts_ns, buf);
        }
        drop(block);
        sink.records(buf, Instant::now());
    }
    capture.read_kernel_stats();
    observe(capture, obs);
    let s = capture.stats();
    tracing::info!(
        received = s.received.load(Ordering::Relaxed),
        kernel_dropped = s.kernel_dropped.load(Ordering::Relaxed),
        ring_freezes = s.ring_freezes.load(Ordering::Relaxed),
        "capture stopped"
    );
    match failed {
        Some(e) => Err(anyhow::Error::new(e)),
        None => Ok(()),
    }
}

/// The sensor's packet-level metrics (`normwatch_sensor_*`), fed from the flow table's
/// counters between batches. Labels: the fixed drop reasons and capture drop places.
#[derive(Clone, Debug)]
pub struct SensorMetrics {
    pub packets: IntCounter,
    pub bytes: IntCounter,
    /// Packets not counted into a flow, by decoder reason.
    pub dropped: IntCounterVec,
    /// Packets lost before decoding (`kernel`: the capture ring was full; `channel`: a queue
    /// to the flow table, none since the ring is read in place, kept at 0 for dashboards).
    pub capture_dropped: IntCounterVec,
    /// Times the kernel found the capture ring full (`tp_freeze_q_cnt`).
    pub capture_ring_freezes: IntCounter,
    pub active_flows: IntGauge,
    pub evicted_flows: IntCounter,
}

impl SensorMetrics {
    pub(crate) fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = SensorMetrics {
            packets: IntCounter::new(
                "normwatch_sensor_packets_total",
                "Packets (frames) read from captures or interfaces.",
            )?,
            bytes: IntCounter::new(
                "normwatch_sensor_bytes_total",
                "Captured bytes of those packets.",
            )?,
            dropped: IntCounterVec::new(
                Opts::new(
                    "normwatch_sensor_dropped_packets_total",
                    "Packets not counted into any flow, by reason.",
                ),
                &["reason"],
            )?,
            capture_dropped: IntCounterVec::new(
                Opts::new(
                    "normwatch_sensor_capture_dropped_packets_total",
                    "Packets lost before decoding: kernel (capture ring full) or channel (queue to the flow table).",
                ),
                &["where"],
            )?,
            capture_ring_freezes: IntCounter::new(
                "normwatch_sensor_capture_ring_freezes_total",
                "Times the kernel found the live-capture ring full (tp_freeze_q_cnt); its drops are in capture_dropped_packets_total{where=\"kernel\"}.",
            )?,
            active_flows: IntGauge::new(
                "normwatch_sensor_active_flows",
                "Flows currently tracked by the flow table.",
            )?,
            evicted_flows: IntCounter::new(
                "normwatch_sensor_evicted_flows_total",
                "Flows reported early because the flow table was full.",
            )?,
        };
        registry.register(Box::new(m.packets.clone()))?;
        registry.register(Box::new(m.bytes.clone()))?;
        registry.register(Box::new(m.dropped.clone()))?;
        registry.register(Box::new(m.capture_dropped.clone()))?;
        registry.register(Box::new(m.capture_ring_freezes.clone()))?;
        registry.register(Box::new(m.active_flows.clone()))?;
        registry.register(Box::new(m.evicted_flows.clone()))?;
        // Every label value exists from the start, so rates over them are defined at once.
        for r in DropReason::ALL {
            m.dropped.with_label_values(&[r.as_str()]);
        }
        for w in ["kernel", "channel"] {
            m.capture_dropped.with_label_values(&[w]);
        }
        Ok(m)
    }

    /// Adds what the flow table counted since `seen` (its counters as last observed), then
    /// remembers `now`.
    pub fn observe(&self, seen: &mut SensorStats, now: &SensorStats) {
        self.packets
            .inc_by(now.packets.saturating_sub(seen.packets));
        self.bytes.inc_by(now.bytes.saturating_sub(seen.bytes));
        for r in DropReason::ALL {
            let d = now.drops_for(r).saturating_sub(seen.drops_for(r));
            if d > 0 {
                self.dropped.with_label_values(&[r.as_str()]).inc_by(d);
            }
        }
        self.evicted_flows
            .inc_by(now.evictions().saturating_sub(seen.evictions()));
        // A difference, not a value: with several capture threads each table adds its own.
        self.active_flows
            .add(now.flows_active as i64 - seen.flows_active as i64);
        seen.clone_from(now);
    }

    /// Adds capture-level drops (totals since the capture started, `seen` as last observed).
    pub fn observe_capture(
        &self,
        seen: &mut (u64, u64, u64),
        kernel: u64,
        channel: u64,
        freezes: u64,
    ) {
        self.capture_dropped
            .with_label_values(&["kernel"])
            .inc_by(kernel.saturating_sub(seen.0));
        self.capture_dropped
            .with_label_values(&["channel"])
            .inc_by(channel.saturating_sub(seen.1));
        self.capture_ring_freezes
            .inc_by(freezes.saturating_sub(seen.2));
        *seen = (kernel, channel, freezes);
    }
}
