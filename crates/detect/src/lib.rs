//! The detector core: flow records in, alert events out. Synchronous, no I/O, driven only by
//! the event time in the records, so a replay gives the same alerts every time.
//!
//! Per protected asset it keeps a ring of one-second buckets of the traffic towards the
//! asset, filled from each record's packets spread over the seconds the flow spans. Counts
//! only grow, so a second that crosses a threshold opens an alert at once, however late its
//! other records are; a second counts as quiet only once the event-time watermark (the latest
//! record time minus the allowed lateness) has passed it, and an alert closes after
//! `quiet_secs` quiet seconds.
//!
//! Rules in this module: volumetric flood (static thresholds, total and per protocol), SYN
//! flood (half-open TCP flows, new-flow threshold), ICS command abuse (write, control,
//! stop/restart or program commands from a source not on the asset's allow list).

use normwatch_config::norms::NormCatalogue;
use normwatch_model::{
    Alert, AlertKind, AlertState, Asset, AssetIndex, FlowRecord, Measured, Rates, Severity, Side,
    TcpFlags, TopSource,
};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

const NS: u64 = 1_000_000_000;
/// Seconds of history per asset.
const RING: usize = 64;
/// Sources remembered per asset and second window (more are counted, not named).
const MAX_SOURCES: usize = 4096;
/// Sources named in an alert.
const TOP_SOURCES: usize = 10;

/// Detector settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How late (event time) a record may arrive and still count for its seconds.
    pub lateness_secs: u64,
    /// Quiet seconds before an alert closes.
    pub quiet_secs: u64,
    /// An update is emitted at most this often (event seconds) while an alert is open.
    pub update_secs: u64,
    /// Share of new TCP flows left half-open above which a flood is a SYN flood.
    pub syn_half_open_share: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            lateness_secs: 10,
            quiet_secs: 30,
            update_secs: 10,
            syn_half_open_share: 0.8,
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    sec: u64,
    pkts: u64,
    bytes: u64,
    new_flows: u64,
    tcp_pkts: u64,
    tcp_bytes: u64,
    tcp_new: u64,
    tcp_half_open: u64,
    udp_pkts: u64,
    udp_bytes: u64,
    udp_new: u64,
    icmp_pkts: u64,
    icmp_bytes: u64,
    icmp_new: u64,
}

#[derive(Debug)]
struct Open {
    id: String,
    kind: AlertKind,
    start_ns: u64,
    /// Last second in which the condition held.
    last_hit_sec: u64,
    last_update_sec: u64,
    measured: Measured,
    severity: Severity,
    summary: String,
}

#[derive(Debug)]
struct AssetState {
    ring: Vec<Bucket>,
    sources: HashMap<IpAddr, (u64, u64)>,
    others: (u64, u64),
    open: Vec<Open>,
}

impl AssetState {
    fn new() -> Self {
        AssetState {
            ring: vec![Bucket::default(); RING],
            sources: HashMap::new(),
            others: (0, 0),
            open: Vec::new(),
        }
    }

    fn bucket(&mut self, sec: u64) -> &mut Bucket {
        let b = &mut self.ring[(sec % RING as u64) as usize];
        if b.sec != sec {
            *b = Bucket {
                sec,
                ..Bucket::default()
            };
        }
        b
    }

    fn get(&self, sec: u64) -> Option<&Bucket> {
        let b = &self.ring[(sec % RING as u64) as usize];
        (b.sec == sec).then_some(b)
    }
}

/// The detector.
#[derive(Debug)]
pub struct Detector {
    assets: Arc<AssetIndex>,
    norms: NormCatalogue,
    settings: Settings,
    state: HashMap<usize, AssetState>,
    /// Asset id → position in the index.
    ids: HashMap<Arc<str>, usize>,
    /// Latest event time seen (ns).
    now_ns: u64,
    /// Records processed.
    pub records: u64,
}

fn exceeds(v: u64, limit: Option<u64>) -> bool {
    limit.is_some_and(|l| v > l)
}

fn measured(b: &Bucket) -> Measured {
    Measured {
        pps: b.pkts as f64,
        bps: (b.bytes * 8) as f64,
        new_flows_per_s: b.new_flows as f64,
    }
}

/// Severity from how far the worst rate is over its threshold.
fn severity(ratio: f64) -> Severity {
    if ratio >= 10.0 {
        Severity::Critical
    } else if ratio >= 3.0 {
        Severity::High
    } else {
        Severity::Medium
    }
}

impl Detector {
    pub fn new(assets: Arc<AssetIndex>, norms: NormCatalogue, settings: Settings) -> Self {
        let ids = assets
            .assets()
            .iter()
            .enumerate()
            .map(|(i, a)| (a.id.0.clone(), i))
            .collect();
        Detector {
            assets,
            norms,
            settings,
            ids,
            state: HashMap::new(),
            now_ns: 0,
            records: 0,
        }
    }

    /// Processes a batch of records; alert events go to `out`.
    pub fn process(&mut self, records: &[FlowRecord], out: &mut Vec<Alert>) {
        for r in records {
            self.records += 1;
            self.now_ns = self.now_ns.max(r.last_ns);
            let Some(m) = &r.asset else { continue };
            let Some(&idx) = self.ids.get(m.id.as_str()) else {
                continue;
            };
            // A handle on the index, so the asset can be borrowed while state changes.
            let assets = self.assets.clone();
            self.account(idx, assets.get(idx as u32), r, m.side, out);
        }
        self.expire(out);
    }

    /// Closes every open alert (end of input).
    pub fn finish(&mut self, out: &mut Vec<Alert>) {
        let mut idxs: Vec<usize> = self.state.keys().copied().collect();
        idxs.sort_unstable();
        let assets = self.assets.clone();
        for idx in idxs {
            let st = self.state.get_mut(&idx).expect("listed");
            let open = std::mem::take(&mut st.open);
            for o in open {
                out.push(self.event(assets.get(idx as u32), &o, AlertState::Closed, idx));
            }
        }
    }

    fn account(
        &mut self,
        idx: usize,
        asset: &Asset,
        r: &FlowRecord,
        side: Side,
        out: &mut Vec<Alert>,
    ) {
        // Traffic towards the asset and the remote end.
        let (inbound, remote, remote_flags) = match side {
            Side::Resp => (r.orig, r.orig_addr, r.orig.tcp_flags),
            Side::Orig => (r.resp, r.resp_addr, r.resp.tcp_flags),
        };
        let first = r.first_ns / NS;
        let last = (r.last_ns / NS).max(first);
        let span = (last - first + 1).min(RING as u64);
        let from = last + 1 - span;
        let st = self.state.entry(idx).or_insert_with(AssetState::new);
        // Spread packets and bytes over the seconds the flow spans.
        for (i, sec) in (from..=last).enumerate() {
            let share = |v: u64| v / span + u64::from((i as u64) < v % span);
            let (p, b) = (share(inbound.pkts), share(inbound.ip_bytes));
            let bk = st.bucket(sec);
            bk.pkts += p;
            bk.bytes += b;
            match r.ip_proto {
                6 => {
                    bk.tcp_pkts += p;
                    bk.tcp_bytes += b;
                }
                17 => {
                    bk.udp_pkts += p;
                    bk.udp_bytes += b;
                }
                1 | 58 => {
                    bk.icmp_pkts += p;
                    bk.icmp_bytes += b;
                }
                _ => {}
            }
        }
        let new_sec = from.max(first);
        let half_open = r.ip_proto == 6
            && side == Side::Resp
            && remote_flags.has(TcpFlags::SYN)
            && !remote_flags.has(TcpFlags::ACK);
        {
            let bk = st.bucket(new_sec);
            bk.new_flows += 1;
            match r.ip_proto {
                6 => {
                    bk.tcp_new += 1;
                    bk.tcp_half_open += u64::from(half_open);
                }
                17 => bk.udp_new += 1,
                1 | 58 => bk.icmp_new += 1,
                _ => {}
            }
        }
        if inbound.pkts > 0 {
            if let Some(e) = st.sources.get_mut(&remote) {
                e.0 += inbound.pkts;
                e.1 += inbound.ip_bytes;
            } else if st.sources.len() < MAX_SOURCES {
                st.sources.insert(remote, (inbound.pkts, inbound.ip_bytes));
            } else {
                st.others.0 += inbound.pkts;
                st.others.1 += inbound.ip_bytes;
            }
        }
        // Seconds this record touched may now cross a threshold.
        for sec in from..=last {
            self.evaluate(idx, asset, sec, out);
        }
        if let Some(ics) = &r.ics {
            let cmds = if side == Side::Resp {
                &ics.orig
            } else {
                &ics.resp
            };
            let n = cmds.write + cmds.control + cmds.stop_restart + cmds.program_firmware;
            if n > 0 && !asset.allows(remote) {
                let severity = if cmds.stop_restart + cmds.program_firmware > 0 {
                    Severity::Critical
                } else {
                    Severity::High
                };
                let (w, c, sr, pf) = (
                    cmds.write,
                    cmds.control,
                    cmds.stop_restart,
                    cmds.program_firmware,
                );
                let summary = move || {
                    format!(
                        "{n} industrial commands ({w} write, {c} control, {sr} stop/restart, {pf} program/firmware) from {remote}, which is not on the allow list"
                    )
                };
                self.hit(
                    idx,
                    asset,
                    AlertKind::IcsCommandAbuse,
                    last,
                    r.first_ns,
                    Measured::default(),
                    severity,
                    summary,
                    out,
                );
            }
        }
    }

    /// Checks second `sec` of asset `idx` against the rate rules.
    fn evaluate(&mut self, idx: usize, asset: &Asset, sec: u64, out: &mut Vec<Alert>) {
        let Some(b) = self.state.get(&idx).and_then(|s| s.get(sec)).copied() else {
            return;
        };
        let t = &asset.thresholds;
        let over = |v: u64, l: Option<u64>| l.map_or(0.0, |l| v as f64 / l.max(1) as f64);
        let ratio = [
            over(b.pkts, t.total.pps),
            over(b.bytes * 8, t.total.bps),
            over(b.new_flows, t.total.new_flows_per_s),
            over(b.tcp_pkts, t.tcp.pps),
            over(b.tcp_bytes * 8, t.tcp.bps),
            over(b.tcp_new, t.tcp.new_flows_per_s),
            over(b.udp_pkts, t.udp.pps),
            over(b.udp_bytes * 8, t.udp.bps),
            over(b.udp_new, t.udp.new_flows_per_s),
            over(b.icmp_pkts, t.icmp.pps),
            over(b.icmp_bytes * 8, t.icmp.bps),
            over(b.icmp_new, t.icmp.new_flows_per_s),
        ]
        .into_iter()
        .fold(0.0, f64::max);
        if ratio <= 1.0 {
            return;
        }
        let syn_limit = t.tcp.new_flows_per_s.or(t.total.new_flows_per_s);
        let half_open_share = if b.tcp_new > 0 {
            b.tcp_half_open as f64 / b.tcp_new as f64
        } else {
            0.0
        };
        let kind = if exceeds(b.tcp_new, syn_limit)
            && half_open_share >= self.settings.syn_half_open_share
        {
            AlertKind::SynFlood
        } else {
            AlertKind::VolumetricFlood
        };
        let summary = move || match kind {
            AlertKind::SynFlood => format!(
                "{} new TCP flows in one second, {:.0}% never completed the handshake",
                b.tcp_new,
                half_open_share * 100.0
            ),
            _ => format!(
                "{} packets, {} bits and {} new flows in one second towards the asset",
                b.pkts,
                b.bytes * 8,
                b.new_flows
            ),
        };
        self.hit(
            idx,
            asset,
            kind,
            sec,
            sec * NS,
            measured(&b),
            severity(ratio),
            summary,
            out,
        );
    }

    /// The condition of `kind` held in second `sec`: open, or keep open and maybe update.
    #[allow(clippy::too_many_arguments)]
    fn hit(
        &mut self,
        idx: usize,
        asset: &Asset,
        kind: AlertKind,
        sec: u64,
        start_ns: u64,
        measured: Measured,
        severity: Severity,
        summary: impl FnOnce() -> String,
        out: &mut Vec<Alert>,
    ) {
        let update_secs = self.settings.update_secs;
        let st = self.state.entry(idx).or_insert_with(AssetState::new);
        if let Some(pos) = st.open.iter().position(|o| o.kind == kind) {
            let o = &mut st.open[pos];
            o.last_hit_sec = o.last_hit_sec.max(sec);
            o.start_ns = o.start_ns.min(start_ns);
            if measured.pps > o.measured.pps {
                o.measured = measured;
            }
            o.severity = o.severity.max(severity);
            if sec >= o.last_update_sec + update_secs {
                o.last_update_sec = sec;
                o.summary = summary();
                let snapshot = Open {
                    id: o.id.clone(),
                    kind: o.kind,
                    start_ns: o.start_ns,
                    last_hit_sec: o.last_hit_sec,
                    last_update_sec: o.last_update_sec,
                    measured: o.measured,
                    severity: o.severity,
                    summary: o.summary.clone(),
                };
                let ev = self.event(asset, &snapshot, AlertState::Update, idx);
                out.push(ev);
            }
            return;
        }
        let o = Open {
            id: format!("{}/{}/{}", asset.id.as_str(), kind.as_str(), start_ns / NS),
            kind,
            start_ns,
            last_hit_sec: sec,
            last_update_sec: sec,
            measured,
            severity,
            summary: summary(),
        };
        let ev = self.event(asset, &o, AlertState::Open, idx);
        out.push(ev);
        self.state
            .get_mut(&idx)
            .expect("inserted above")
            .open
            .push(o);
    }

    /// Closes alerts whose quiet period has passed the watermark.
    fn expire(&mut self, out: &mut Vec<Alert>) {
        let watermark = (self.now_ns / NS).saturating_sub(self.settings.lateness_secs);
        let quiet = self.settings.quiet_secs;
        let mut idxs: Vec<usize> = self.state.keys().copied().collect();
        idxs.sort_unstable();
        for idx in idxs {
            let st = self.state.get_mut(&idx).expect("listed");
            if st.open.is_empty() {
                // Sources are named for an attack: forget those seen while nothing was open.
                st.sources.clear();
                st.others = (0, 0);
                continue;
            }
            let (done, keep): (Vec<Open>, Vec<Open>) = std::mem::take(&mut st.open)
                .into_iter()
                .partition(|o| o.last_hit_sec + quiet < watermark);
            st.open = keep;
            if st.open.is_empty() {
                st.sources.clear();
                st.others = (0, 0);
            }
            let assets = self.assets.clone();
            for o in done {
                out.push(self.event(assets.get(idx as u32), &o, AlertState::Closed, idx));
            }
        }
    }

    fn event(&self, asset: &Asset, o: &Open, state: AlertState, idx: usize) -> Alert {
        let threshold: Rates = asset.thresholds.total;
        let top_sources = self
            .state
            .get(&idx)
            .map(|st| {
                let total: u64 = st.sources.values().map(|(p, _)| *p).sum::<u64>() + st.others.0;
                let mut v: Vec<(&IpAddr, &(u64, u64))> = st.sources.iter().collect();
                v.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
                v.into_iter()
                    .take(TOP_SOURCES)
                    .map(|(a, (p, b))| TopSource {
                        addr: *a,
                        share: *p as f64 / total.max(1) as f64,
                        pkts: *p,
                        bytes: *b,
                        reflector: false,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Alert {
            id: o.id.clone(),
            state,
            kind: o.kind,
            severity: o.severity,
            asset: asset.id.clone(),
            sector: asset.sector,
            service: asset.service.clone(),
            window_start_ns: o.start_ns,
            window_end_ns: (o.last_hit_sec + 1) * NS,
            measured: o.measured,
            threshold,
            baseline: None,
            impairment: None,
            top_sources,
            norms: self
                .norms
                .for_alert(o.kind.as_str(), &asset.roles)
                .unwrap_or_default(),
            summary: o.summary.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use normwatch_config::norms::parse_norms;
    use normwatch_model::{AssetId, AssetMatch, ConnState, DirStats, EndReason, Sector};
    use std::path::Path;

    fn catalogue() -> NormCatalogue {
        let text = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/norms.toml"),
        )
        .unwrap();
        parse_norms(&text, Path::new("norms.toml")).unwrap()
    }

    fn index() -> Arc<AssetIndex> {
        Arc::new(
            AssetIndex::new(vec![Asset {
                id: AssetId(Arc::from("dns")),
                name: "resolver".into(),
                operator: "op".into(),
                sector: Sector::Telecom,
                service: "name resolution".into(),
                cidrs: vec!["192.0.2.0/24".parse().unwrap()],
                roles: vec![],
                service_ports: vec![53],
                thresholds: normwatch_model::Thresholds {
                    udp: Rates {
                        pps: Some(1000),
                        ..Rates::default()
                    },
                    ..Default::default()
                },
                allow: vec![],
            }])
            .unwrap(),
        )
    }

    /// A one-packet UDP flow towards the asset at second `sec`.
    fn udp(src: u32, sec: u64) -> FlowRecord {
        FlowRecord {
            sensor_id: Arc::from("s"),
            flow_id: u64::from(src),
            orig_addr: IpAddr::from(src.to_be_bytes()),
            orig_port: 4444,
            resp_addr: "192.0.2.53".parse().unwrap(),
            resp_port: 53,
            ip_proto: 17,
            first_ns: sec * NS,
            last_ns: sec * NS,
            orig: DirStats {
                pkts: 1,
                ip_bytes: 1000,
                ..DirStats::default()
            },
            resp: DirStats::default(),
            conn_state: ConnState::S0,
            asset: Some(AssetMatch {
                id: AssetId(Arc::from("dns")),
                side: Side::Resp,
            }),
            ics: None,
            end_reason: EndReason::IdleTimeout,
        }
    }

    #[test]
    fn flood_opens_at_the_crossing_updates_and_closes_after_quiet() {
        let mut d = Detector::new(index(), catalogue(), Settings::default());
        let mut out = Vec::new();
        // 500 pps for 5 s: below the UDP threshold of 1000.
        let calm: Vec<FlowRecord> = (0..2500)
            .map(|i| udp(i, 100 + u64::from(i) / 500))
            .collect();
        d.process(&calm, &mut out);
        assert!(out.is_empty());
        // 3000 pps for 20 s: 3× the threshold.
        let flood: Vec<FlowRecord> = (0..60_000)
            .map(|i| udp(10_000 + i, 110 + u64::from(i) / 3000))
            .collect();
        d.process(&flood[..3001], &mut out);
        assert_eq!(out.len(), 1, "opens as soon as second 110 crosses 1000");
        assert_eq!(out[0].state, AlertState::Open);
        assert_eq!(out[0].kind, AlertKind::VolumetricFlood);
        assert_eq!(out[0].window_start_ns, 110 * NS);
        d.process(&flood[3001..], &mut out);
        assert!(out.iter().skip(1).all(|a| a.state == AlertState::Update));
        assert!(out.len() >= 2, "updates while it lasts");
        // Quiet traffic later: the alert closes once the quiet period passes the watermark.
        let later: Vec<FlowRecord> = (0..100)
            .map(|i| udp(900_000 + i, 200 + u64::from(i)))
            .collect();
        d.process(&later, &mut out);
        let last = out.last().unwrap();
        assert_eq!(last.state, AlertState::Closed);
        assert_eq!(last.window_end_ns, 130 * NS);
        assert!(out.iter().all(|a| a.id == out[0].id));
        // Opened when the first second just crossed; graded up as the full rate showed (3×).
        assert_eq!(out[0].severity, Severity::Medium);
        assert_eq!(last.severity, Severity::High);
    }
}
