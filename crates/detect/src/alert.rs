//! The alert lifecycle: a rule's hit opens an alert (one per asset and kind), later hits
//! keep it open and update it at most every `update_interval`, quiet seconds close it, and a
//! closed alert's window is remembered so late records of its attack open no second alert.
//! The event sent for each step (sources named, spoofing assessment, norms) is built here.

use crate::rules::flood::{flood_summary, Peak};
use crate::rules::ics::Tally;
use crate::rules::sources::{attack_pkts, Normal};
use crate::state::*;
use crate::{Settings, NS};
use normwatch_config::reflectors::Reflectors;
use normwatch_model::{
    Alert, AlertKind, AlertState, IcsCounts, Impairment, Measured, Rates, Severity, Span,
    SpoofingAssessment, TopSource,
};
use std::net::IpAddr;

/// Sources named in an alert. Evidence packages are addressed to the States these sources
/// are registered in, so a botnet spread over many States needs more than a handful named;
/// a hundred keep an alert event near 10 KB of JSON.
pub(crate) const TOP_SOURCES: usize = 100;

/// Event seconds a closed alert's window is remembered past its quiet period, so late
/// records of its attack do not open another alert. A flow table reports a flow at its idle
/// timeout (Zeek's is a minute for UDP and ICMP; a sensor may use five minutes for TCP), so
/// its records can be that much later than the detector's allowed lateness.
pub(crate) const CLOSED_KEEP_SECS: u64 = 300;

/// Closed alerts remembered per asset (the oldest is forgotten first).
pub(crate) const MAX_CLOSED: usize = 8;

#[derive(Debug)]
pub(crate) struct Open {
    pub(crate) id: String,
    pub(crate) kind: AlertKind,
    pub(crate) start_ns: u64,
    /// Last second in which the condition held.
    pub(crate) last_hit_sec: u64,
    /// The asset's own watermark (newest second minus the allowed lateness) when the latest
    /// hit was seen: hits that keep arriving late keep the alert open.
    pub(crate) heard_sec: u64,
    pub(crate) last_update_sec: u64,
    pub(crate) measured: Measured,
    pub(crate) severity: Severity,
    pub(crate) summary: String,
    pub(crate) baseline: Option<Measured>,
    pub(crate) impairment: Option<Impairment>,
    /// Parties named by the rule itself (scanner, exfiltration destination, commanding
    /// source); empty: the asset's busiest sources.
    pub(crate) named: Vec<TopSource>,
    /// The worst second of a flood.
    pub(crate) peak: Option<Peak>,
    /// The limits compared with, where they are not the asset's thresholds.
    pub(crate) threshold: Option<Rates>,
    /// An industrial-command alert's commands over all its flows.
    pub(crate) ics: Option<Box<Tally>>,
}

/// An empty alert, to hold a slot while the real one is borrowed elsewhere.
pub(crate) fn placeholder() -> Open {
    Open {
        id: String::new(),
        kind: AlertKind::Scan,
        start_ns: 0,
        last_hit_sec: 0,
        heard_sec: 0,
        last_update_sec: 0,
        measured: Measured::default(),
        severity: Severity::Low,
        summary: String::new(),
        baseline: None,
        impairment: None,
        named: Vec::new(),
        peak: None,
        threshold: None,
        ics: None,
    }
}

/// Quiet seconds before an alert of `kind` closes: a scan or an upload is one alert for as
/// long as its rule follows it (probes with no longer gap than `scan_idle`, bytes within the
/// exfiltration window: flow records of one transfer may be minutes apart, a sensor's active
/// timeout), however sparse its records.
pub(crate) fn quiet_secs(s: &Settings, kind: AlertKind) -> u64 {
    match kind {
        AlertKind::BulkExfiltration => s.quiet_period.as_secs().max(s.exfil_window.as_secs()),
        AlertKind::Scan => s.quiet_period.as_secs().max(s.scan_idle.as_secs()),
        _ => s.quiet_period.as_secs(),
    }
}

pub(crate) fn is_flood(kind: AlertKind) -> bool {
    matches!(
        kind,
        AlertKind::VolumetricFlood
            | AlertKind::SynFlood
            | AlertKind::UdpAmplification
            | AlertKind::CarpetBombing
    )
}

/// A closed alert: its kind, the seconds it covered and the parties it named.
#[derive(Debug)]
pub(crate) struct Closed {
    pub(crate) kind: AlertKind,
    pub(crate) first_sec: u64,
    pub(crate) last_sec: u64,
    pub(crate) named: Vec<IpAddr>,
}

/// A flood is judged spoofed only with at least this many distinct sources…
pub(crate) const SPOOF_MIN_SOURCES: u64 = 1_000;

/// …most of them seen with a single packet (the sources followed are the attack's first, where
/// a spoofing tool's own retries cluster; hosts that flood for real send many packets each).
pub(crate) const SPOOF_ONCE_SHARE: f64 = 0.75;

/// A TTL spread of at most this across the attack's packets says they leave from one place
/// (one host, or one network at one distance): one sender's TTL moves only by a hop or two
/// with route changes and load-balanced paths, while hosts scattered over the Internet arrive
/// at many distances with different systems' initial TTLs (64, 128, 255).
pub(crate) const NARROW_TTL_SPREAD: u8 = 4;

/// Client stacks pick their source ports from ephemeral ranges at or above this (Linux
/// 32768–60999, Windows 49152–65535, older systems from 1024); a flood tool drawing ports at
/// random also picks the ones below.
pub(crate) const LOWEST_CLIENT_PORT: u16 = 1024;

/// Addresses no host on the Internet sends from: unspecified, loopback, private, shared,
/// link-local, documentation, benchmarking, multicast and reserved ranges (RFC 6890).
pub(crate) fn is_bogon(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => {
            let o = v.octets();
            v.is_unspecified()
                || v.is_loopback()
                || v.is_private()
                || v.is_link_local()
                || v.is_documentation()
                || v.is_broadcast()
                || o[0] == 0
                || o[0] >= 224
                || (o[0] == 100 && o[1] & 0xc0 == 64)
                || (o[0] == 198 && o[1] & 0xfe == 18)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        }
        IpAddr::V6(v) => {
            let seg = v.segments();
            v.is_unspecified()
                || v.is_loopback()
                || v.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
        }
    }
}

/// What a rule adds to an alert besides its rates.
#[derive(Default)]
pub(crate) struct Extra {
    pub(crate) named: Option<TopSource>,
    /// A flood's second, kept when it is the worst so far: its summary is written from it.
    pub(crate) peak: Option<Peak>,
    pub(crate) baseline: Option<Measured>,
    pub(crate) impairment: Option<Impairment>,
    /// The limits the rule compared with, where they are not the asset's thresholds.
    pub(crate) threshold: Option<Rates>,
    /// Industrial commands a record added, and the asset's address they reached.
    pub(crate) ics: Option<(IcsCounts, IpAddr)>,
}

impl Extra {
    pub(crate) fn named(n: TopSource) -> Extra {
        Extra {
            named: Some(n),
            ..Extra::default()
        }
    }

    pub(crate) fn baseline(b: Option<Measured>) -> Extra {
        Extra {
            baseline: b,
            ..Extra::default()
        }
    }
}

/// Keeps the worst impairment seen while an alert is open: the lowest completion, else the
/// lowest response ratio.
pub(crate) fn worst(slot: &mut Option<Impairment>, new: Impairment) {
    let key = |i: &Impairment| {
        i.handshake_completion
            .unwrap_or(f64::INFINITY)
            .min(i.response_ratio.unwrap_or(f64::INFINITY))
    };
    if slot.as_ref().is_none_or(|old| key(&new) < key(old)) {
        *slot = Some(new);
    }
}

/// Adds or refreshes a named party, keeping the list bounded and ordered by traffic.
pub(crate) fn name(list: &mut Vec<TopSource>, n: TopSource) {
    if let Some(e) = list.iter_mut().find(|e| e.addr == n.addr) {
        e.pkts = e.pkts.max(n.pkts);
        e.bytes = e.bytes.max(n.bytes);
        return;
    }
    if list.len() < TOP_SOURCES {
        list.push(n);
        list.sort_by(|a, b| b.pkts.cmp(&a.pkts).then(a.addr.cmp(&b.addr)));
    }
}

impl<const N: usize> AssetState<N> {
    /// The condition of `kind` held in second `sec`: open, or keep open and maybe update.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn hit(
        &mut self,
        cx: &Ctx,
        kind: AlertKind,
        sec: u64,
        start_ns: u64,
        measured: Measured,
        severity: Severity,
        summary: impl FnOnce() -> String,
        extra: Extra,
        out: &mut Vec<Alert>,
    ) {
        let Extra {
            named,
            peak,
            baseline,
            impairment,
            threshold,
            ics,
        } = extra;
        let update_secs = cx.s.update_interval.as_secs();
        let heard = self.newest.saturating_sub(cx.s.lateness.as_secs());
        let open = self.open.iter().position(|o| o.kind == kind);
        if open.is_none() && self.covered(cx.s, kind, sec, named.as_ref()) {
            // A late record of an attack whose alert already closed.
            self.atk().late_hits += 1;
            return;
        }
        if let Some(pos) = open {
            let o = &mut self.open[pos];
            o.last_hit_sec = o.last_hit_sec.max(sec);
            o.heard_sec = o.heard_sec.max(heard);
            o.start_ns = o.start_ns.min(start_ns);
            // A carpet's worst second is one whose spread is known: a second of the same
            // attack judged without it (late, or no longer spread) keeps the alert open but
            // does not become its peak.
            let spread_known = kind != AlertKind::CarpetBombing
                || peak.is_some_and(|p| p.carpet.is_some())
                || o.peak.is_none_or(|p| p.carpet.is_none());
            if spread_known
                && (measured.pps > o.measured.pps
                    || (measured.pps == o.measured.pps && measured.bps > o.measured.bps))
            {
                o.measured = measured;
                if peak.is_some() {
                    o.peak = peak;
                }
            }
            o.severity = o.severity.max(severity);
            if baseline.is_some() {
                o.baseline = baseline;
            }
            if let Some(n) = named {
                name(&mut o.named, n);
            }
            if let Some(i) = impairment {
                worst(&mut o.impairment, i);
            }
            if let Some((cmds, target)) = ics {
                o.ics.get_or_insert_default().add(&cmds, target);
            }
            if sec >= o.last_update_sec + update_secs {
                o.last_update_sec = sec;
                o.summary = summary();
                let mut o = std::mem::replace(&mut self.open[pos], placeholder());
                self.final_summary(&mut o, &cx.s.reflectors);
                self.open[pos] = o;
                let o = &self.open[pos];
                out.push(self.event(cx, o, AlertState::Update));
            }
            return;
        }
        let mut o = Open {
            id: format!(
                "{}/{}/{}",
                cx.asset.id.as_str(),
                kind.as_str(),
                start_ns / NS
            ),
            kind,
            start_ns,
            last_hit_sec: sec,
            heard_sec: heard,
            last_update_sec: sec,
            measured,
            severity,
            summary: summary(),
            baseline,
            impairment,
            peak,
            threshold,
            named: named.into_iter().collect(),
            ics: ics.map(|(cmds, target)| {
                let mut t = Box::<Tally>::default();
                t.add(&cmds, target);
                t
            }),
        };
        if let Some(t) = &o.ics {
            o.summary = t.summary(&o.named);
        }
        out.push(self.event(cx, &o, AlertState::Open));
        self.open.push(o);
    }

    /// Whether a hit of `kind` in second `sec` belongs to an alert that already closed: the
    /// second lies within its window or a quiet period either side, where it would have joined
    /// the alert while open (every such second was final when it closed, so only a late record
    /// reaches it). A flood second matches a closed flood of any
    /// kind (late records alone may class it differently); a rule naming a party matches only
    /// an alert that named it.
    pub(crate) fn covered(
        &self,
        s: &Settings,
        kind: AlertKind,
        sec: u64,
        named: Option<&TopSource>,
    ) -> bool {
        let Some(a) = self.atk.as_deref() else {
            return false;
        };
        sec <= self.finalized
            && a.closed.iter().any(|c| {
                let same = c.kind == kind || (is_flood(c.kind) && is_flood(kind));
                same && sec + quiet_secs(s, c.kind) >= c.first_sec
                    && sec <= c.last_sec + quiet_secs(s, c.kind)
                    && named.is_none_or(|n| c.named.contains(&n.addr))
            })
    }

    /// Keeps a closed alert's window for late records of its attack.
    pub(crate) fn remember(&mut self, o: &Open) {
        let c = Closed {
            kind: o.kind,
            first_sec: o.start_ns / NS,
            last_sec: o.last_hit_sec,
            named: o.named.iter().map(|n| n.addr).collect(),
        };
        let a = self.atk();
        if a.closed.len() == MAX_CLOSED {
            a.closed.remove(0);
        }
        a.closed.push(c);
    }

    /// Hits folded into closed alerts (late records of their attacks).
    pub(crate) fn late_hits(&self) -> u64 {
        self.atk.as_ref().map_or(0, |a| a.late_hits)
    }

    /// Closes every open alert (end of input).
    pub(crate) fn close_all(&mut self, cx: &Ctx, out: &mut Vec<Alert>) {
        for mut o in std::mem::take(&mut self.open) {
            self.final_summary(&mut o, &cx.s.reflectors);
            out.push(self.event(cx, &o, AlertState::Closed));
        }
    }

    /// Rewrites a summary from what the alert has gathered so far: a flood from its worst
    /// second (an amplification also from every reflector protocol seen and the in/out ratio
    /// over the whole attack), a scan from every scanner named.
    pub(crate) fn final_summary(&self, o: &mut Open, cat: &Reflectors) {
        if let Some(p) = &o.peak {
            let (refl, refl_out) = self.reflected();
            o.summary = flood_summary(o.kind, p, &refl, refl_out, cat);
        } else if let Some(t) = &o.ics {
            o.summary = t.summary(&o.named);
        } else if o.kind == AlertKind::Scan {
            let who: Vec<String> = o
                .named
                .iter()
                .map(|n| format!("{} ({} probes)", n.addr, n.pkts))
                .collect();
            o.summary = format!(
                "unanswered connection attempts to many ports or addresses of the asset from {}",
                who.join(", ")
            );
        }
    }

    pub(crate) fn event(&self, cx: &Ctx, o: &Open, state: AlertState) -> Alert {
        let asset = cx.asset;
        let top_sources = if o.named.is_empty() {
            // The attack's sources, not the clients the asset served meanwhile
            // (`rules::sources`); shares are of the attack's packets: those of its sources,
            // and the unserved ones of sources beyond the table's room.
            let normal = self.normal(cx.s);
            let mut v: Vec<(&IpAddr, &Src, u64)> = self.attack_sources(o.kind, &normal).collect();
            let others = match (o.kind, self.atk.as_deref()) {
                (AlertKind::UdpAmplification, _) | (_, None) => 0,
                (_, Some(a)) => a.others_unserved,
            };
            let total: u64 = v.iter().map(|x| x.2).sum::<u64>() + others;
            v.sort_unstable_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(b.0)));
            v.into_iter()
                .take(TOP_SOURCES)
                .map(|(a, s, p)| TopSource {
                    addr: *a,
                    share: p as f64 / total.max(1) as f64,
                    pkts: s.pkts,
                    bytes: s.bytes,
                    reflector: s.reflector,
                })
                .collect()
        } else {
            let total: u64 = o.named.iter().map(|s| s.pkts).sum();
            o.named
                .iter()
                .map(|s| TopSource {
                    share: if total == 0 {
                        1.0 / o.named.len() as f64
                    } else {
                        s.pkts as f64 / total as f64
                    },
                    ..s.clone()
                })
                .collect()
        };
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
            threshold: o.threshold.unwrap_or(asset.thresholds.total),
            baseline: o.baseline,
            impairment: o.impairment,
            top_sources,
            norms: cx
                .norms
                .for_alert(o.kind.as_str(), &asset.roles)
                .unwrap_or_default(),
            summary: o.summary.clone(),
            sources_total: self.sources_total(cx.s, o),
            spoofing: self.spoofing(cx.s, o),
            raised_at_ns: None,
        }
    }

    /// The asset's normal, as the per-source verdict of `rules::sources` compares with it.
    pub(crate) fn normal(&self, s: &Settings) -> Normal {
        let warm = self.base.seconds >= s.baseline_warmup.as_secs();
        Normal {
            completion: if warm { self.base.completion() } else { None }.unwrap_or(1.0),
            response: if warm { self.base.response() } else { None }.unwrap_or(1.0),
            pps: self.lim.pkts as f64 / s.baseline_factor.max(1.0),
        }
    }

    /// The sources held that are the attack's for an alert of `kind`, with the packets each
    /// contributed.
    pub(crate) fn attack_sources<'a>(
        &'a self,
        kind: AlertKind,
        normal: &'a Normal,
    ) -> impl Iterator<Item = (&'a IpAddr, &'a Src, u64)> + 'a {
        self.atk
            .as_deref()
            .into_iter()
            .flat_map(|a| a.sources.iter())
            .filter_map(move |(addr, s)| {
                let p = attack_pkts(kind, s, normal);
                (p > 0).then_some((addr, s, p))
            })
    }

    /// How many distinct sources a flood had: those the table holds that are the attack's,
    /// exactly, while it had room for every source; once full, the distinct sources with
    /// traffic the asset did not serve (estimated), of which the attack's are part.
    pub(crate) fn sources_total(&self, s: &Settings, o: &Open) -> Option<u64> {
        if !is_flood(o.kind) || !o.named.is_empty() {
            return None;
        }
        let a = self.atk.as_deref()?;
        let held = self.attack_sources(o.kind, &self.normal(s)).count() as u64;
        let total = if a.held.is_some() {
            held.max(a.unserved.estimate().round() as u64)
        } else {
            held
        };
        Some(total).filter(|&n| n > 0)
    }

    /// Whether a flood's sources are likely forged: many sources, most seen with a single
    /// packet, and (for TCP) nearly every connection attempt left half-open — what
    /// random-source spoofing looks like and what real hosts, which retry and answer, do not.
    /// Reflection is not assessed: its sources are real reflectors.
    ///
    /// The attack packets' TTL spread and source-port spread (from the attack sources' flows
    /// and from the sensor's aggregated attempts alike) are reported beside the verdict as
    /// supporting evidence, never deciding it: a tool forging random sources from one host
    /// sends with one TTL ([`NARROW_TTL_SPREAD`]) or draws TTLs at random, but a wide spread
    /// is also what real hosts at many distances give, so only a narrow one across many
    /// sources is named as support; ports below [`LOWEST_CLIENT_PORT`] are named the same
    /// way.
    pub(crate) fn spoofing(&self, s: &Settings, o: &Open) -> Option<SpoofingAssessment> {
        if !is_flood(o.kind) || o.kind == AlertKind::UdpAmplification {
            return None;
        }
        let normal = self.normal(s);
        let attack: Vec<(&IpAddr, &Src, u64)> = self.attack_sources(o.kind, &normal).collect();
        let tracked = attack.len();
        if tracked == 0 {
            return None;
        }
        let distinct = self.sources_total(s, o).unwrap_or(0).max(tracked as u64);
        let once = attack.iter().filter(|x| x.1.pkts <= 1).count();
        let seen_once_share = once as f64 / tracked as f64;
        let bogons = attack.iter().filter(|x| is_bogon(*x.0)).count();
        let bogon_share = bogons as f64 / tracked as f64;
        let half_open = o.peak.as_ref().and_then(|p| {
            (p.b.tcp_new > 0).then(|| f64::from(p.b.tcp_half_open) / f64::from(p.b.tcp_new))
        });
        let likely = distinct >= SPOOF_MIN_SOURCES
            && seen_once_share >= SPOOF_ONCE_SHARE
            && half_open.is_none_or(|h| h >= s.syn_half_open_share);
        // TTLs and source ports: of the attack's sources held, and of what no held source
        // stands for (sources beyond the table's room, aggregated attempts).
        let (ttl, port) = {
            let (mut t, mut p) = self
                .atk
                .as_deref()
                .map_or_else(Default::default, |a| (a.others_ttl, a.others_port));
            for (_, src, _) in &attack {
                t.add(src.ttl.span());
                p.add(src.port.span());
            }
            (t.span(), p.span())
        };
        let marks = marks_text(ttl, port, distinct);
        let method = format!(
            "{distinct} distinct sources (at least {SPOOF_MIN_SOURCES} for a verdict of forged); of the {tracked} attack sources followed, {:.0} % sent one packet only (at least {:.0} %){}; {:.0} % in reserved or unallocated space",
            seen_once_share * 100.0,
            SPOOF_ONCE_SHARE * 100.0,
            half_open.map_or(String::new(), |h| format!(
                "; {:.0} % of the peak second's connection attempts left half-open (at least {:.0} %)",
                h * 100.0,
                s.syn_half_open_share * 100.0
            )),
            bogon_share * 100.0,
        ) + &marks;
        Some(SpoofingAssessment {
            likely_spoofed: likely,
            distinct_sources: distinct,
            one_packet_half_open_share: half_open,
            seen_once_share: Some(seen_once_share),
            bogon_share: Some(bogon_share),
            ttl_spread: ttl.map(Span::spread),
            source_port_spread: port.map(Span::spread),
            method,
        })
    }
}

/// The spoofing assessment's words on the attack packets' TTLs and source ports (empty
/// where the records carried neither): supporting evidence, not part of the verdict.
fn marks_text(ttl: Option<Span<u8>>, port: Option<Span<u16>>, distinct: u64) -> String {
    let mut t = String::new();
    if let Some(x) = ttl {
        let spread = x.spread();
        t += &format!(
            "; the attack packets' IP TTLs {}–{} (spread {spread}",
            x.min, x.max
        );
        t += if spread <= NARROW_TTL_SPREAD && distinct >= SPOOF_MIN_SOURCES {
            ": sent from one place, as by one host forging its sources: supports forged sources)"
        } else {
            ": sources at many distances or a tool varying its TTLs; neither for nor against)"
        };
    }
    if let Some(x) = port {
        t += &format!("; source ports {}–{}", x.min, x.max);
        if x.min < LOWEST_CLIENT_PORT {
            t += &format!(
                " (some below {LOWEST_CLIENT_PORT}, which client stacks do not pick: supports forged sources)"
            );
        }
    }
    if !t.is_empty() {
        t += "; TTLs and ports support a verdict, they do not decide it";
    }
    t
}
