//! The evidence stage: when an alert closes, the flows of its sources are attributed, the
//! packages it needs are planned (one per recipient State), built, signed, stored with a
//! durable outbox, and delivered. Used embedded by `normwatch run --evidence-dir` and
//! `normwatch demo`.

use crate::consume::ConsumeOptions;
use crate::sinks::{AlertSink, FlowSink};
use anyhow::Context;
use normwatch_config::norms::NormCatalogue;
use normwatch_config::Config;
use normwatch_evidence::config::{EvidenceConfig, RawEvidence};
use normwatch_evidence::packager::{Built, Packager};
use normwatch_model::{Alert, AlertState, FlowRecord};
use normwatch_transport::bus::Topic;
use normwatch_transport::kafka::KafkaSubscriber;
use normwatch_transport::metrics::TransportMetrics;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};
use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Flow records kept per asset for the packages of its alerts (the most recent ones).
const FLOWS_PER_ASSET: usize = 200_000;
/// How often the outbox is passed over for due retries while the stage runs.
pub const DELIVERY_INTERVAL: Duration = Duration::from_secs(5);

/// `normwatch_evidence_*`. Labels: the recipient's ISO code (from the directory) and the
/// delivery outcome.
#[derive(Clone, Debug)]
pub struct EvidenceMetrics {
    pub built: IntCounterVec,
    /// Sources named in packages, by the State they are registered in.
    pub sources: IntCounterVec,
    pub delivered: IntCounter,
    pub failed: IntCounter,
    pub outbox: IntGauge,
    pub delivery_seconds: Histogram,
    /// Requests for assistance followed up, by recipient State.
    pub requests: IntCounterVec,
    /// Follow-ups stored for delivery, by recipient State and kind (stopped, deadline).
    pub follow_ups: IntCounterVec,
    /// Requests whose activity stopped, by recipient State and whether before the deadline.
    pub stopped: IntCounterVec,
    /// Event time from a request to the end of the activity it named, by recipient State.
    pub time_to_stop: HistogramVec,
    /// Replies recorded from recipients, by recipient State.
    pub replies: IntCounterVec,
}

impl EvidenceMetrics {
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = EvidenceMetrics {
            built: IntCounterVec::new(
                Opts::new(
                    "normwatch_evidence_packages_built_total",
                    "Evidence packages built and stored, by recipient (ISO code).",
                ),
                &["recipient"],
            )?,
            sources: IntCounterVec::new(
                Opts::new(
                    "normwatch_evidence_sources_total",
                    "Attack sources named in evidence packages, by registered country (ISO code, or unknown) and role (request or provider_abuse).",
                ),
                &["country", "role"],
            )?,
            delivered: IntCounter::new(
                "normwatch_evidence_deliveries_total",
                "Package deliveries completed (one per recipient channel).",
            )?,
            failed: IntCounter::new(
                "normwatch_evidence_delivery_failures_total",
                "Delivery attempts that failed and will be retried from the outbox.",
            )?,
            outbox: IntGauge::new(
                "normwatch_evidence_outbox_pending",
                "Deliveries waiting in the outbox.",
            )?,
            delivery_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "normwatch_evidence_delivery_seconds",
                    "Wall time of one delivery pass over the outbox.",
                )
                .buckets(prometheus::exponential_buckets(0.001, 4.0, 9)?),
            )?,
            requests: IntCounterVec::new(
                Opts::new(
                    "normwatch_evidence_requests_total",
                    "Requests for assistance delivered and followed up, by recipient State (ISO code).",
                ),
                &["state"],
            )?,
            follow_ups: IntCounterVec::new(
                Opts::new(
                    "normwatch_evidence_follow_ups_total",
                    "Follow-ups of requests stored for delivery, by recipient State and kind (stopped: the activity stopped; deadline: the deadline passed).",
                ),
                &["state", "kind"],
            )?,
            stopped: IntCounterVec::new(
                Opts::new(
                    "normwatch_evidence_requests_stopped_total",
                    "Requests whose named activity stopped, by recipient State and whether it stopped before the deadline (true/false).",
                ),
                &["state", "before_deadline"],
            )?,
            time_to_stop: HistogramVec::new(
                HistogramOpts::new(
                    "normwatch_evidence_time_to_stop_seconds",
                    "Event time from a request to the last traffic of the activity it named, by recipient State.",
                )
                .buckets(vec![
                    10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 43_200.0, 86_400.0,
                    172_800.0, 604_800.0,
                ]),
                &["state"],
            )?,
            replies: IntCounterVec::new(
                Opts::new(
                    "normwatch_evidence_replies_total",
                    "Replies recorded from recipients (directory channel reply files, TAXII notes), by recipient State and whether the State's key verified them (a TAXII note is never verified).",
                ),
                &["state", "verified"],
            )?,
        };
        registry.register(Box::new(m.requests.clone()))?;
        registry.register(Box::new(m.follow_ups.clone()))?;
        registry.register(Box::new(m.stopped.clone()))?;
        registry.register(Box::new(m.time_to_stop.clone()))?;
        registry.register(Box::new(m.replies.clone()))?;
        registry.register(Box::new(m.built.clone()))?;
        registry.register(Box::new(m.sources.clone()))?;
        registry.register(Box::new(m.delivered.clone()))?;
        registry.register(Box::new(m.failed.clone()))?;
        registry.register(Box::new(m.outbox.clone()))?;
        registry.register(Box::new(m.delivery_seconds.clone()))?;
        Ok(m)
    }
}

/// A problem in the `[evidence]` settings (a configuration error: exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EvidenceSettingsError(pub String);

/// The validated `[evidence]` section, if the configuration has one.
pub fn evidence_config(cfg: &Config) -> anyhow::Result<Option<EvidenceConfig>> {
    let Some(table) = &cfg.evidence else {
        return Ok(None);
    };
    let origin = cfg
        .source
        .as_ref()
        .map_or_else(|| "the configuration".into(), |p| p.display().to_string());
    let raw: RawEvidence =
        toml::Value::Table(table.clone())
            .try_into()
            .map_err(|e: toml::de::Error| {
                EvidenceSettingsError(format!("{origin}: evidence: {}", e.message().trim()))
            })?;
    EvidenceConfig::from_raw(raw, &cfg.base_dir())
        .map(Some)
        .map_err(|errs| {
            EvidenceSettingsError(
                errs.iter()
                    .map(|e| format!("{origin}: {e}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
            .into()
        })
}

/// The stage's state.
pub struct EvidenceStage {
    packager: Packager,
    root: PathBuf,
    metrics: EvidenceMetrics,
    /// Recent flows per asset, each with the wall-clock time it arrived here.
    flows: HashMap<String, VecDeque<(u64, FlowRecord)>>,
    /// Every package built so far, with the alert it is for.
    pub built: Vec<(String, Built)>,
    /// Raised by a second stop signal: packages are still built and stored, but delivery
    /// is left to the outbox (the next run or `normwatch package` sends them).
    defer_delivery: Option<Arc<AtomicBool>>,
    last_delivery: Instant,
    /// When each alert's first event reached this stage (wall clock), for the custody log.
    first_seen: HashMap<String, u64>,
}

impl std::fmt::Debug for EvidenceStage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EvidenceStage")
            .field("root", &self.root)
            .field("built", &self.built.len())
            .finish_non_exhaustive()
    }
}

/// The wall clock: packaging and delivery times are when they happen, not event time.
fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl EvidenceStage {
    /// Opens everything the stage needs; `out_dir` overrides `evidence.out_dir`.
    pub fn open(
        mut cfg: EvidenceConfig,
        norms: NormCatalogue,
        out_dir: Option<&Path>,
        metrics: EvidenceMetrics,
    ) -> anyhow::Result<Self> {
        if let Some(d) = out_dir {
            cfg.out_dir = d.to_path_buf();
        }
        let root = cfg.out_dir.clone();
        let packager = Packager::open(cfg, norms).context("cannot open the evidence stage")?;
        // A previous run may have left deliveries in the outbox.
        metrics
            .outbox
            .set(i64::try_from(packager.store().pending()?).unwrap_or(i64::MAX));
        Ok(EvidenceStage {
            packager,
            root,
            metrics,
            flows: HashMap::new(),
            built: Vec::new(),
            defer_delivery: None,
            last_delivery: Instant::now(),
            first_seen: HashMap::new(),
        })
    }

    /// Once `flag` is raised, packages are stored in the outbox without a delivery attempt,
    /// so a forced stop does not wait on recipients.
    pub fn defer_delivery_when(&mut self, flag: Arc<AtomicBool>) {
        self.defer_delivery = Some(flag);
    }

    /// Names the operator of each protected asset in the packages of its alerts.
    pub fn with_assets(mut self, assets: &normwatch_model::AssetIndex) -> Self {
        self.packager.set_asset_operators(
            assets
                .assets()
                .iter()
                .map(|a| (a.id.as_str().to_string(), a.operator.clone()))
                .collect(),
        );
        self
    }

    /// Where packages are stored.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The requests followed up, with their outcomes, from the ledger.
    pub fn requests(&self) -> anyhow::Result<Vec<normwatch_evidence::store::RequestRecord>> {
        Ok(self.packager.store().requests()?)
    }

    /// The directory of package `id`.
    pub fn package_dir(&self, id: &str) -> PathBuf {
        self.packager.store().package_dir(id)
    }

    /// Forgets the flows kept so far (they are about to be read again from the start).
    pub fn forget_flows(&mut self) {
        self.flows.clear();
    }

    /// Keeps the most recent flows of each asset for the packages of its alerts.
    pub fn keep(&mut self, records: &[FlowRecord]) {
        // The follow-up of delivered requests sees every record (event time, sources).
        self.packager.observe(records);
        let arrived = now_ns();
        for r in records {
            let Some(a) = &r.asset else { continue };
            let q = self.flows.entry(a.id.as_str().to_string()).or_default();
            if q.len() == FLOWS_PER_ASSET {
                q.pop_front();
            }
            q.push_back((arrived, r.clone()));
        }
    }

    /// Records when an alert's first event reached the stage (in `run` and `demo` the detector
    /// stage hands it over as it raises it).
    pub fn seen(&mut self, alert: &Alert) {
        self.first_seen
            .entry(alert.id.clone())
            .or_insert_with(now_ns);
    }

    /// Builds and stores the packages of a closed alert, then delivers what is due. An alert
    /// whose packages are already stored (its close delivered again, or sent twice) is not
    /// packaged again: one package per alert and recipient, whatever the redeliveries.
    pub fn package(&mut self, alert: &Alert) -> anyhow::Result<()> {
        if self
            .packager
            .store()
            .has_alert(&alert.id)
            .context("cannot read the evidence store")?
        {
            self.first_seen.remove(&alert.id);
            tracing::info!(alert = %alert.id, "alert already packaged; its close is not packaged again");
            return Ok(());
        }
        self.seen(alert);
        let mut stamped;
        let alert = match (alert.raised_at_ns, self.first_seen.remove(&alert.id)) {
            (None, Some(t)) => {
                stamped = alert.clone();
                stamped.raised_at_ns = Some(t);
                &stamped
            }
            _ => alert,
        };
        // The alert's window, with a margin for flows that began before it or ended after.
        const MARGIN_NS: u64 = 60_000_000_000;
        let kept: Vec<&(u64, FlowRecord)> = self
            .flows
            .get(alert.asset.as_str())
            .map(|q| {
                let within: Vec<&(u64, FlowRecord)> = q
                    .iter()
                    .filter(|(_, r)| {
                        r.last_ns >= alert.window_start_ns.saturating_sub(MARGIN_NS)
                            && r.first_ns <= alert.window_end_ns.saturating_add(MARGIN_NS)
                    })
                    .collect();
                latest_reports(&within, |(_, r)| r)
            })
            .unwrap_or_default();
        let received = kept.iter().map(|(t, _)| *t).min();
        let flows: Vec<FlowRecord> = kept.into_iter().map(|(_, r)| r.clone()).collect();
        let out = self
            .packager
            .package_recorded(alert, &flows, received, now_ns())?;
        if out.held {
            tracing::info!(
                alert = %alert.id,
                held = self.packager.held(),
                "alert held for its campaign's request (evidence.campaign.hold)"
            );
            for e in &out.lookup_errors {
                tracing::warn!(alert = %alert.id, error = %e, "attribution failed; packaged without it");
            }
            return Ok(());
        }
        self.record(alert, out);
        if self
            .defer_delivery
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            tracing::warn!(alert = %alert.id, "stopping: packages stay in the outbox, undelivered");
            return Ok(());
        }
        self.deliver()
    }

    /// Packages the alerts held for their campaigns' requests whose hold ended at the flows'
    /// event time (`all`: every one, when the stage stops or its input ends); whether any was.
    pub fn release_held(&mut self, all: bool) -> anyhow::Result<bool> {
        let released = self
            .packager
            .release_held(now_ns(), all)
            .context("cannot package the alerts held for their campaigns")?;
        let any = !released.is_empty();
        for (alert, out) in released {
            self.record(&alert, out);
        }
        Ok(any)
    }

    /// Metrics, log lines and the list of built packages for what packaging `alert` did.
    fn record(&mut self, alert: &Alert, out: normwatch_evidence::packager::PackageOutcome) {
        for (_, state) in &out.requests {
            self.metrics.requests.with_label_values(&[state]).inc();
        }
        for e in &out.lookup_errors {
            tracing::warn!(alert = %alert.id, error = %e, "attribution failed; packaged without it");
        }
        if out.own_state_sources > 0 {
            tracing::info!(
                alert = %alert.id,
                sources = out.own_state_sources,
                "sources in the requesting State's own territory are handled domestically"
            );
        }
        for b in out.packages {
            if !b.new {
                continue;
            }
            let about = b.about_state.as_deref().unwrap_or("unknown");
            self.metrics.built.with_label_values(&[&b.recipient]).inc();
            self.metrics
                .sources
                .with_label_values(&[about, "request"])
                .inc_by(b.sources as u64);
            self.metrics
                .sources
                .with_label_values(&[about, "provider_abuse"])
                .inc_by(b.provider_abuse as u64);
            tracing::info!(
                package = %b.id,
                alert = %alert.id,
                recipient = %b.recipient,
                about,
                sources = b.sources,
                provider_abuse = b.provider_abuse,
                "evidence package built"
            );
            self.built.push((alert.id.clone(), b));
        }
    }

    /// A delivery pass if [`DELIVERY_INTERVAL`] has passed since the last one: failed
    /// deliveries are retried on their backoff schedule whatever else happens. Called for
    /// every batch of flows and every alert event the stage sees.
    pub fn deliver_if_due(&mut self) -> anyhow::Result<()> {
        if self.follow_up()? {
            return self.deliver();
        }
        if self.last_delivery.elapsed() >= DELIVERY_INTERVAL {
            self.deliver()?;
        }
        Ok(())
    }

    /// Moves the follow-up of delivered requests to the flows' event time and stores the
    /// follow-ups due; whether any was stored.
    pub fn follow_up(&mut self) -> anyhow::Result<bool> {
        // Campaign requests whose hold ended go out before the follow-ups are decided.
        let released = self.release_held(false)?;
        let sent = self
            .packager
            .follow_up(now_ns())
            .context("cannot follow up requests")?;
        for f in &sent {
            let w = &f.watch;
            tracing::info!(
                follow_up = %f.id,
                request = %w.package_id,
                recipient = %w.recipient,
                status = w.status(),
                active = f.active,
                hosts = w.sources.len(),
                "follow-up of a request stored"
            );
            if !f.new {
                continue;
            }
            self.metrics
                .follow_ups
                .with_label_values(&[&w.recipient, f.kind.as_str()])
                .inc();
            if f.kind == normwatch_evidence::followup::FollowUpKind::Stopped {
                if let Some(t) = w.stopped_ns {
                    let before = if t <= w.deadline_ns { "true" } else { "false" };
                    self.metrics
                        .stopped
                        .with_label_values(&[&w.recipient, before])
                        .inc();
                    self.metrics
                        .time_to_stop
                        .with_label_values(&[&w.recipient])
                        .observe(t.saturating_sub(w.requested_ns) as f64 / 1e9);
                }
            }
        }
        Ok(released || !sent.is_empty())
    }

    /// The follow-up's last observations into the ledger, and every alert still held for
    /// its campaign packaged (when the stage stops or its input ends: nothing held waits for
    /// traffic that will not come).
    pub fn save_follow_up(&mut self) -> anyhow::Result<()> {
        if self.release_held(true)? {
            // The requests just built go out now (unless the stop was forced).
            let deferred = self
                .defer_delivery
                .as_ref()
                .is_some_and(|f| f.load(Ordering::Relaxed));
            if !deferred {
                self.deliver()?;
            }
        }
        self.follow_up()?;
        self.packager.save_watches()?;
        Ok(())
    }

    /// One delivery pass over the outbox.
    pub fn deliver(&mut self) -> anyhow::Result<()> {
        // Follow-ups due at the flows' event time go out in the same pass.
        self.follow_up()?;
        self.last_delivery = Instant::now();
        if self
            .defer_delivery
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
        {
            // A forced stop: what is due stays in the outbox for the next run.
            return Ok(());
        }
        let timer = self.metrics.delivery_seconds.start_timer();
        let report = self.packager.deliver_due(now_ns())?;
        timer.observe_duration();
        self.metrics.delivered.inc_by(report.sent as u64);
        self.metrics.failed.inc_by(report.failed.len() as u64);
        for (id, e) in &report.failed {
            tracing::warn!(package = %id, error = %e.0, "delivery failed; retried from the outbox");
        }
        self.metrics
            .outbox
            .set(i64::try_from(self.packager.store().pending()?).unwrap_or(i64::MAX));
        let (replies, unread) = self.packager.poll_replies_reporting(now_ns())?;
        for e in &unread {
            tracing::warn!(error = %e, "cannot read replies from a TAXII collection; tried again on the next pass");
        }
        for r in replies {
            let state = self
                .packager
                .store()
                .recipient_of(&r.package_id)?
                .unwrap_or_default();
            tracing::info!(package = %r.package_id, verified = r.verified, file = %r.file, "reply recorded");
            self.metrics
                .replies
                .with_label_values(&[state.as_str(), if r.verified { "true" } else { "false" }])
                .inc();
        }
        Ok(())
    }
}

/// The evidence stage takes the consumed flows (kept per asset for the packages) and the
/// alert events (a closed alert is packaged); deliveries due are retried on every flush.
impl FlowSink for EvidenceStage {
    fn accept(&mut self, records: &[FlowRecord]) -> anyhow::Result<()> {
        self.keep(records);
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        // A failed delivery must not wait for the next alert to close.
        self.deliver_if_due()
    }

    fn idle(&mut self) -> anyhow::Result<()> {
        // Nor for the next batch of flows.
        self.deliver_if_due()
    }
}

impl AlertSink for EvidenceStage {
    fn alert(&mut self, a: &Alert) -> anyhow::Result<()> {
        self.seen(a);
        if a.state == AlertState::Closed {
            self.package(a)
                .with_context(|| format!("cannot package alert {}", a.id))?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        self.deliver_if_due()
    }
}

/// One record per flow: a flow reported while it went on (interim reports) has several
/// records of the same span, each with the totals so far; the latest holds them all. Records
/// of different spans of one flow (active-timeout continuations) are kept apart. Order: the
/// latest record's.
fn latest_reports<'a, T>(records: &[&'a T], record: impl Fn(&T) -> &FlowRecord) -> Vec<&'a T> {
    // Exported records are each their own (a router's flow ids are not the sensor's).
    let key = |r: &FlowRecord| (r.sensor_id.clone(), r.flow_id, r.first_ns);
    let mut last: HashMap<_, usize> = HashMap::with_capacity(records.len());
    for (i, r) in records.iter().enumerate() {
        let r = record(r);
        if r.export.is_none() {
            last.insert(key(r), i);
        }
    }
    records
        .iter()
        .enumerate()
        .filter(|(i, r)| {
            let r = record(r);
            r.export.is_some() || last.get(&key(r)) == Some(i)
        })
        .map(|(_, r)| *r)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::latest_reports;
    use normwatch_model::{ConnState, DirStats, EndReason, FlowRecord};

    fn rec(flow_id: u64, first_ns: u64, pkts: u64, end_reason: EndReason) -> FlowRecord {
        FlowRecord {
            sensor_id: "s".into(),
            flow_id,
            orig_addr: "192.0.2.1".parse().unwrap(),
            orig_port: 40000,
            resp_addr: "198.51.100.2".parse().unwrap(),
            resp_port: 80,
            ip_proto: 6,
            first_ns,
            last_ns: first_ns + pkts,
            orig: DirStats {
                pkts,
                ..DirStats::default()
            },
            resp: DirStats::default(),
            conn_state: ConnState::S1,
            asset: None,
            ics: None,
            end_reason,
            export: None,
            prior: None,
            attempts: None,
            orig_ttl: None,
            resp_ttl: None,
        }
    }

    #[test]
    fn a_flow_reported_while_it_went_on_is_packaged_once_with_its_totals() {
        let records = [
            rec(1, 10, 2, EndReason::Interim),
            rec(2, 10, 1, EndReason::TcpClosed),
            rec(1, 10, 5, EndReason::Interim),
            rec(1, 10, 9, EndReason::ActiveTimeout),
            // The continuation after the active timeout is a span of its own.
            rec(1, 50, 3, EndReason::TcpClosed),
        ];
        let refs: Vec<&FlowRecord> = records.iter().collect();
        let kept = latest_reports(&refs, |r| r);
        let got: Vec<(u64, u64, u64)> = kept
            .iter()
            .map(|r| (r.flow_id, r.first_ns, r.orig.pkts))
            .collect();
        assert_eq!(got, [(2, 10, 1), (1, 10, 9), (1, 50, 3)]);
    }
}

/// What `package` did.
#[derive(Clone, Copy, Debug, Default)]
pub struct PackageSummary {
    /// Flow batches and alert events consumed; closed alerts packaged; packages built.
    pub flow_batches: u64,
    pub alert_events: u64,
    pub alerts_packaged: u64,
    pub packages: u64,
    /// Messages that were not alerts or flow batches (counted by reason, skipped).
    pub rejected: u64,
}

/// `normwatch package`: consumes the alerts topic and, for the flows behind each alert, the
/// flows topic, each in the packagers' own consumer group (`{kafka.group_id}.package`);
/// packages every closed alert for its recipient States into the evidence store and delivers
/// from its outbox. An alert event is committed only once its packages are in the store
/// (whose outbox survives a crash); a malformed alert event is counted and skipped.
///
/// (The flows are read in the group `{kafka.group_id}.package.flows`.) The flows an alert's
/// packages hold are on the flows topic before the alert is on the
/// alerts topic (a detector publishes an alert after consuming its flows). So the flows
/// topic is read from the start of each assigned partition whenever the packager is
/// assigned it (the recent flows of each asset are kept in memory, and nothing kept only
/// there is lost when the packager stops), and a closed alert waits, with the alerts behind
/// it, until the flows read have reached where the flows topic ended when the alert
/// arrived: whatever the backlog of either topic, and across restarts, a package holds the
/// flows behind its alert. One packager per group: the flows of an alert's asset must all
/// reach the member that packages it.
pub fn package(
    cfg: &Config,
    stage: &mut EvidenceStage,
    opts: &ConsumeOptions,
    transport: &TransportMetrics,
    stop: &AtomicBool,
) -> anyhow::Result<PackageSummary> {
    use normwatch_model::{Alert, AlertState};
    use normwatch_transport::bus::{Delivery, Subscriber};
    use normwatch_transport::wire::decode_batch;
    use std::collections::BTreeMap;
    crate::consume::need_kafka(cfg, "package")?;
    let _span = tracing::info_span!("package").entered();
    let mut kafka = cfg.kafka.clone();
    kafka.group_id = format!("{}.package", cfg.kafka.group_id);
    // The flows consumer in a group of its own: while an alert waits for its flows, the alerts
    // consumer is not polled, and a rebalance of a group holding both would wait for it.
    let mut flows_kafka = cfg.kafka.clone();
    flows_kafka.group_id = format!("{}.package.flows", cfg.kafka.group_id);
    let mut flows =
        KafkaSubscriber::rebuilding(&cfg.bus, &flows_kafka, Topic::Flows, transport.clone())?;
    let mut alerts = KafkaSubscriber::new(&cfg.bus, &kafka, Topic::Alerts, transport.clone())?;
    let mut summary = PackageSummary::default();
    let mut last = Instant::now();
    let mut assignments = flows.assignments() + alerts.assignments();
    let mut flow_assignments = flows.assignments();
    let mut last_delivery = Instant::now();
    // Per flows partition: the next offset to read.
    let mut read: BTreeMap<i32, i64> = BTreeMap::new();
    // A closed alert waiting for the flows topic to be read up to these offsets (not known
    // until the flows consumer has partitions).
    type Ends = Option<BTreeMap<i32, i64>>;
    let mut waiting: Option<(Alert, Delivery, Ends)> = None;
    let result: anyhow::Result<()> = loop {
        if stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        let mut idle = true;
        // A bounded number of flow batches per round, so a busy flows topic cannot starve
        // the alerts.
        let mut taken = 0;
        while taken < 1000 {
            let polled = flows.poll(Duration::from_millis(10))?;
            if flows.assignments() != flow_assignments {
                // Read again from the start of each partition.
                flow_assignments = flows.assignments();
                stage.forget_flows();
                read.clear();
            }
            let Some(d) = polled else {
                break;
            };
            taken += 1;
            idle = false;
            let at = i64::try_from(d.offset).unwrap_or(i64::MAX);
            let next = read.entry(d.partition).or_insert(0);
            *next = (*next).max(at.saturating_add(1));
            match decode_batch::<FlowRecord>(&d.payload) {
                Ok(batch) => {
                    summary.flow_batches += 1;
                    stage.keep(&batch.records);
                }
                Err(e) => {
                    summary.rejected += 1;
                    transport
                        .rejected_batches
                        .with_label_values(&[e.reason()])
                        .inc();
                }
            }
            // Read again from the start, whatever was committed: only new deliveries move
            // the committed offset (which must not go back).
            if !flows.replayed(&d) {
                flows.commit(&d)?;
            }
        }
        if let Some((_, _, ends)) = waiting.as_mut() {
            if ends.is_none() && flow_assignments > 0 {
                // Where the flows topic ends now: the alert's flows lie before.
                match flows.assigned_ends(Duration::from_secs(5)) {
                    Ok(e) => {
                        *ends = Some(
                            e.into_iter()
                                .filter(|(_, (low, high))| high > low)
                                .map(|(p, (_, high))| (p, high))
                                .collect(),
                        )
                    }
                    Err(e) => tracing::debug!(error = %e, "flows topic ends not known yet"),
                }
            }
        }
        let ready = match &waiting {
            Some((_, _, Some(ends))) => ends
                .iter()
                .all(|(p, high)| read.get(p).is_some_and(|r| r >= high)),
            _ => false,
        };
        if ready {
            let (a, d, _) = waiting.take().expect("an alert waits");
            idle = false;
            let before = stage.built.len();
            if let Err(e) = stage.package(&a) {
                // Not committed: a restart packages this alert again (the store keeps
                // the first build of a package, so nothing is sent twice).
                break Err(e.context(format!("cannot package alert {}", a.id)));
            }
            summary.alerts_packaged += 1;
            summary.packages += (stage.built.len() - before) as u64;
            alerts.commit(&d)?;
        }
        if waiting.is_none() {
            if let Some(d) = alerts.poll(Duration::from_millis(50))? {
                idle = false;
                summary.alert_events += 1;
                match serde_json::from_slice::<Alert>(&d.payload) {
                    Ok(a) if a.state == AlertState::Closed => {
                        // Committed once packaged; later alerts wait behind it.
                        waiting = Some((a, d, None));
                        continue;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        summary.rejected += 1;
                        tracing::warn!(
                            partition = d.partition,
                            offset = d.offset,
                            "skipped a message on the alerts topic that is not an alert event: {e}"
                        );
                    }
                }
                alerts.commit(&d)?;
            }
        }
        if last_delivery.elapsed() >= Duration::from_secs(5) {
            // Retries of earlier failed deliveries, on their backoff schedule.
            stage.deliver()?;
            last_delivery = Instant::now();
        }
        let now_assigned = flows.assignments() + alerts.assignments();
        if !idle || now_assigned != assignments {
            assignments = now_assigned;
            last = Instant::now();
        } else if waiting.is_none() && opts.exit_when_idle.is_some_and(|i| last.elapsed() >= i) {
            break Ok(());
        }
    };
    let closed = flows.close().and(alerts.close());
    result?;
    closed.map_err(|e| anyhow::Error::new(e).context("cannot commit consumed messages"))?;
    Ok(summary)
}
