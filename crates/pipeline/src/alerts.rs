//! The detector stage: consumed flow records through the detector core, alert events to an
//! [`AlertSink`].

use crate::detect::FlowSink;
use crate::metrics::{DetectMetrics, OpenAlerts};
use anyhow::Context;
use normwatch_config::norms::{parse_norms, NormCatalogue};
use normwatch_config::Config;
use normwatch_detect::{Detector, Settings};
use normwatch_model::{Alert, AlertState, AssetIndex, FlowRecord};
use normwatch_transport::bus::{Publisher, Topic};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

/// The catalogue built into the binary (`config/norms.toml`), used when the configuration
/// names none.
const BUILT_IN_NORMS: &str = include_str!("../../../config/norms.toml");

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

/// Logs each alert event as one line.
#[derive(Debug, Default)]
pub struct LogAlerts;

impl AlertSink for LogAlerts {
    fn alert(&mut self, a: &Alert) -> anyhow::Result<()> {
        let state = match a.state {
            AlertState::Open => "opened",
            AlertState::Update => "updated",
            AlertState::Closed => "closed",
        };
        tracing::info!(
            id = %a.id,
            asset = %a.asset.as_str(),
            kind = a.kind.as_str(),
            severity = ?a.severity,
            violated = ?a.norms.violated,
            "alert {state}: {}",
            a.summary
        );
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Publishes each alert event as JSON to the alerts topic, keyed by the alert id (so all the
/// events of one attack stay in order on one partition). `flush` returns once the transport
/// acknowledged every event, which is what lets the consumer commit the flows behind them.
pub struct PublishAlerts<'a> {
    publisher: &'a mut dyn Publisher,
    timeout: Duration,
}

impl std::fmt::Debug for PublishAlerts<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishAlerts").finish_non_exhaustive()
    }
}

impl<'a> PublishAlerts<'a> {
    /// `timeout`: how long `flush` waits for the acknowledgements.
    pub fn new(publisher: &'a mut dyn Publisher, timeout: Duration) -> Self {
        PublishAlerts { publisher, timeout }
    }
}

impl AlertSink for PublishAlerts<'_> {
    fn alert(&mut self, a: &Alert) -> anyhow::Result<()> {
        let payload = serde_json::to_vec(a).context("cannot encode an alert")?;
        self.publisher
            .publish(Topic::Alerts, a.id.as_bytes(), payload)
            .context("cannot publish an alert")
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.publisher
            .flush(self.timeout)
            .context("alert events were not acknowledged")
    }

    fn drain(&mut self) -> anyhow::Result<()> {
        self.publisher
            .drain(self.timeout)
            .context("alert events are not all on the alerts topic")
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

/// The norm catalogue the configuration names, or the built-in one.
pub fn norms(cfg: &Config) -> anyhow::Result<NormCatalogue> {
    Ok(match &cfg.detect.norms {
        Some(path) => normwatch_config::norms::load_norms(path)?,
        None => parse_norms(BUILT_IN_NORMS, Path::new("built-in norms.toml"))?,
    })
}

/// A detector set up from the configuration.
pub fn detector(cfg: &Config) -> anyhow::Result<Detector> {
    let d = &cfg.detect;
    let settings = Settings {
        lateness_secs: d.lateness.as_secs(),
        quiet_secs: d.quiet_period.as_secs(),
        update_secs: d.update_interval.as_secs(),
        syn_half_open_share: d.syn_half_open_share,
        baseline_factor: d.baseline_factor,
        baseline_warmup_secs: d.baseline_warmup.as_secs(),
        baseline_window_secs: d.baseline_window.as_secs(),
        baseline_min_pps: d.baseline_min_pps,
        baseline_min_bps: d.baseline_min_bps,
        baseline_min_new_flows: d.baseline_min_new_flows,
        amp_pps: d.amplification_pps,
        amp_bps: d.amplification_bps,
        amp_ratio: d.amplification_ratio,
        amp_share: d.amplification_share,
        impair_window_secs: d.impairment_window.as_secs(),
        impair_min_attempts: d.impairment_min_attempts,
        impair_drop: d.impairment_drop,
        impair_load_factor: d.impairment_load_factor,
        scan_ports: d.scan_ports,
        scan_addrs: d.scan_addresses,
        scan_idle_secs: d.scan_idle.as_secs(),
        exfil_bytes: d.exfil_bytes,
        exfil_window_secs: d.exfil_window.as_secs(),
        carpet_min_addrs: d.carpet_min_addresses,
    };
    Ok(Detector::new(
        Arc::new(cfg.assets.clone()),
        norms(cfg).context("cannot load the norm catalogue")?,
        settings,
    ))
}

/// A [`FlowSink`] that runs the detector over every batch, hands alert events to `alerts`,
/// and the records on to `flows` if given.
pub struct DetectorSink<'a> {
    detector: Detector,
    alerts: &'a mut dyn AlertSink,
    flows: Option<&'a mut dyn FlowSink>,
    buf: Vec<Alert>,
    metrics: Option<Observed>,
    rebuild: Option<Rebuild<'a>>,
    finished: bool,
    /// Alert events emitted, and alerts opened.
    pub events: u64,
    pub opened: u64,
    /// Alert events not emitted again: already on the alerts topic (see
    /// [`DetectorSink::rebuilding`]).
    pub suppressed: u64,
}

/// Reads every alert event on the alerts topic (JSON payloads).
pub type PublishedAlerts<'a> = Box<dyn FnMut() -> anyhow::Result<Vec<Vec<u8>>> + 'a>;

/// A member that rebuilds its state from the topics (see [`DetectorSink::rebuilding`]).
struct Rebuild<'a> {
    published: PublishedAlerts<'a>,
    /// Events on the alerts topic not yet met again, by payload, with their count.
    pending: std::collections::HashMap<Vec<u8>, u32>,
}

/// What the sink keeps to feed the detector metrics.
#[derive(Debug)]
struct Observed {
    m: DetectMetrics,
    open: OpenAlerts,
}

impl std::fmt::Debug for DetectorSink<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetectorSink")
            .field("events", &self.events)
            .field("opened", &self.opened)
            .finish_non_exhaustive()
    }
}

impl<'a> DetectorSink<'a> {
    pub fn new(
        detector: Detector,
        alerts: &'a mut dyn AlertSink,
        flows: Option<&'a mut dyn FlowSink>,
    ) -> Self {
        DetectorSink {
            detector,
            alerts,
            flows,
            buf: Vec::new(),
            metrics: None,
            rebuild: None,
            finished: false,
            events: 0,
            opened: 0,
            suppressed: 0,
        }
    }

    /// A member of a detector group that rebuilds its state from the topics: whenever the
    /// group assigns it partitions it starts a fresh detector, reads them from their start
    /// (the consumer marks what was processed before as replayed: see
    /// `normwatch_transport::bus::Subscriber::replayed`), and emits only the alert events
    /// `published` (the alerts topic, read after this member's own events are all on it)
    /// does not hold yet. The detector is deterministic, so the rebuilt state is the one its
    /// predecessor had, an event already on the topic comes out byte for byte the same and
    /// is held back, and whatever the predecessor had not sent (the close of an alert it
    /// opened) is sent now.
    pub fn rebuilding(mut self, published: PublishedAlerts<'a>) -> Self {
        self.rebuild = Some(Rebuild {
            published,
            pending: std::collections::HashMap::new(),
        });
        self
    }

    /// Keeps the detector metrics; the assets' thresholds are published at once.
    pub fn with_metrics(mut self, m: DetectMetrics, assets: &AssetIndex) -> Self {
        for a in assets.assets() {
            let t = a.thresholds.total;
            for (rate, v) in [
                ("pps", t.pps),
                ("bps", t.bps),
                ("new_flows_per_s", t.new_flows_per_s),
            ] {
                if let Some(v) = v {
                    m.asset_threshold
                        .with_label_values(&[a.id.as_str(), rate])
                        .set(v as f64);
                }
            }
        }
        self.metrics = Some(Observed {
            m,
            open: OpenAlerts::default(),
        });
        self
    }

    fn emit(&mut self) -> anyhow::Result<()> {
        for a in self.buf.drain(..) {
            if let Some(o) = self.metrics.as_mut() {
                o.open.event(&o.m, &a, self.detector.event_time_ns());
            }
            if let Some(r) = self.rebuild.as_mut().filter(|r| !r.pending.is_empty()) {
                let bytes = serde_json::to_vec(&a).context("cannot encode an alert")?;
                if let Some(n) = r.pending.get_mut(&bytes) {
                    *n -= 1;
                    if *n == 0 {
                        r.pending.remove(&bytes);
                    }
                    self.suppressed += 1;
                    continue;
                }
            }
            self.events += 1;
            self.opened += u64::from(a.state == AlertState::Open);
            self.alerts.alert(&a)?;
        }
        Ok(())
    }

    /// Closes every open alert (end of input) and flushes; once.
    pub fn finish(&mut self) -> anyhow::Result<()> {
        if !self.finished {
            self.finished = true;
            self.detector.finish(&mut self.buf);
            self.emit()?;
        }
        self.flush()
    }
}

impl DetectorSink<'_> {
    /// Runs the detector over one batch; `clock_ns`: see [`Detector::process_at`] (`None`:
    /// the latest event time this detector saw).
    fn batch(
        &mut self,
        records: &[FlowRecord],
        key: &[u8],
        clock_ns: Option<u64>,
        replayed: bool,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        match clock_ns {
            None => self.detector.process(records, &mut self.buf),
            Some(c) if records.is_empty() => {
                if let Ok(id) = std::str::from_utf8(key) {
                    self.detector.tick(id, c, &mut self.buf);
                }
            }
            Some(c) => self.detector.process_at(records, c, &mut self.buf),
        }
        self.emit()?;
        if let Some(o) = &self.metrics {
            o.m.batch_seconds.observe(started.elapsed().as_secs_f64());
            crate::metrics::observe_normals(&o.m, &self.detector);
        }
        if let Some(f) = self.flows.as_mut() {
            f.accept_batch(records, key, clock_ns.unwrap_or(0), replayed)?;
        }
        Ok(())
    }
}

impl FlowSink for DetectorSink<'_> {
    fn accept(&mut self, records: &[FlowRecord]) -> anyhow::Result<()> {
        self.batch(records, &[], None, false)
    }

    fn accept_batch(
        &mut self,
        records: &[FlowRecord],
        key: &[u8],
        clock_ns: u64,
        replayed: bool,
    ) -> anyhow::Result<()> {
        self.batch(records, key, Some(clock_ns), replayed)
    }

    fn reassigned(&mut self) -> anyhow::Result<()> {
        let Some(r) = self.rebuild.as_mut() else {
            return Ok(());
        };
        // This member's own events first, so the topic read below holds them.
        self.alerts.drain()?;
        let published = (r.published)().context("cannot read the alerts topic")?;
        r.pending.clear();
        for p in published {
            *r.pending.entry(p).or_default() += 1;
        }
        self.detector.reset();
        if let Some(o) = self.metrics.as_mut() {
            o.open.clear(&o.m);
        }
        tracing::info!(
            published = r.pending.values().map(|&n| u64::from(n)).sum::<u64>(),
            "rebuilding detector state from the start of the assigned partitions"
        );
        if let Some(f) = self.flows.as_mut() {
            f.reassigned()?;
        }
        Ok(())
    }

    fn end(&mut self) -> anyhow::Result<()> {
        self.finish()?;
        match self.flows.as_mut() {
            Some(f) => f.end(),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.alerts.flush()?;
        if let Some(f) = self.flows.as_mut() {
            f.flush()?;
        }
        Ok(())
    }

    fn idle(&mut self) -> anyhow::Result<()> {
        match self.flows.as_mut() {
            Some(f) => f.idle(),
            None => Ok(()),
        }
    }
}
