//! Follow-up of delivered requests: whether the activity a request named stopped.
//!
//! Each delivered request (a package with sources a State was asked about) is watched: every
//! flow record from one of its sources towards a protected asset moves that source's last-seen
//! time. Time is event time (the flows' packet times), so a replayed capture gives the same
//! follow-ups. The activity counts as stopped once no listed source was seen for the quiet
//! period (`[evidence.follow_up] quiet`); it resumed if a source is seen again after that.
//!
//! Two follow-ups go to the recipient, each a signed package of its own (same format, same
//! outbox, same exactly-once delivery) whose id is the request's with `-FU-stopped` or
//! `-FU-deadline`: one when the activity stops, one at the deadline (`[evidence.follow_up]
//! deadline` after the request), saying either when it stopped or from how many of the hosts it
//! continues. Each carries a STIX sighting of the request's indicator and a report and note that
//! refer to the request's report, a MISP event, the request's attribution, the observations
//! (`evidence/follow-up.json`) and the letter (`follow-up.md`).
//!
//! The builder here reads no clock: the follow-up's time is the event time it was decided at.

use crate::canon::{rfc3339_ms, rfc3339_s, sha256_hex};
use crate::custody::{self, Action, Subject};
use crate::error::Result;
use crate::keys::SecretKey;
use crate::package::{self, compact, pretty, Operator, Package, RequestSettings, CUSTODY, FORMAT};
use crate::recipients::Recipient;
use crate::stix::{self, sdo_uuid, NORMWATCH_NAMESPACE};
use crate::{TOOL_NAME, TOOL_VERSION};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use uuid::Uuid;

/// Which follow-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FollowUpKind {
    /// The activity stopped (sent when it is seen to stop).
    Stopped,
    /// The deadline passed (sent then, whatever the activity does).
    Deadline,
}

impl FollowUpKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            FollowUpKind::Stopped => "stopped",
            FollowUpKind::Deadline => "deadline",
        }
    }
}

/// The id of a request's follow-up.
pub fn follow_up_id(request_id: &str, kind: FollowUpKind) -> String {
    format!("{request_id}-FU-{}", kind.as_str())
}

/// What is known of one watched request: its sources' last-seen times and what was decided.
/// Kept in the ledger (as JSON), so a restart continues where it stopped.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Watch {
    pub package_id: String,
    pub alert_id: String,
    /// The recipient's ISO code.
    pub recipient: String,
    /// The State the sources are registered in.
    pub about_state: Option<String>,
    /// Event time of the request (the flows' time when it was packaged).
    pub requested_ns: u64,
    /// Event time at which the deadline follow-up is due.
    pub deadline_ns: u64,
    /// Each listed source and the last event time traffic from it reached a protected asset.
    pub sources: BTreeMap<IpAddr, u64>,
    /// Event time the watch has reached.
    pub observed_ns: u64,
    /// When the activity stopped (the last source's last traffic), once it has been quiet for
    /// the quiet period.
    pub stopped_ns: Option<u64>,
    /// The event time the stop was seen at (traffic after it is a resumption).
    pub stop_seen_ns: Option<u64>,
    /// When the activity first resumed after being seen to stop.
    pub resumed_ns: Option<u64>,
    /// Sources still active at the deadline (`None` before it).
    pub active_at_deadline: Option<usize>,
    /// Follow-ups stored for the outbox.
    pub sent: Vec<FollowUpKind>,
    /// Nothing more to watch.
    pub closed: bool,
    /// The quiet period the watch runs with.
    #[serde(default)]
    pub quiet_ns: u64,
    /// The campaign the request is for, if campaigns are on.
    #[serde(default)]
    pub campaign: Option<String>,
    /// Campaign updates of this request, whose sources joined the watch.
    #[serde(default)]
    pub updates: Vec<String>,
    /// The services the request (with its updates) names: `service (asset)`.
    #[serde(default)]
    pub services: Vec<String>,
}

impl Watch {
    /// Sources seen within `quiet_ns` before `at`.
    pub fn active_at(&self, at: u64, quiet_ns: u64) -> usize {
        self.sources
            .values()
            .filter(|t| t.saturating_add(quiet_ns) > at)
            .count()
    }

    /// Listed hosts quiet (for the quiet period) at the latest observation.
    pub fn stopped_hosts(&self) -> usize {
        self.sources.len() - self.active_at(self.observed_ns, self.quiet_ns)
    }

    /// Event time from the request to the end of the activity, once it stopped (zero if it
    /// stopped before the request).
    pub fn time_to_stop_ns(&self) -> Option<u64> {
        self.stopped_ns.map(|t| t.saturating_sub(self.requested_ns))
    }

    /// The last traffic of any source.
    pub fn last_seen(&self) -> u64 {
        self.sources
            .values()
            .copied()
            .max()
            .unwrap_or(self.requested_ns)
    }

    /// Takes one record from `addr` at event time `last_ns`; whether anything changed.
    pub fn observe(&mut self, addr: IpAddr, last_ns: u64) -> bool {
        let Some(t) = self.sources.get_mut(&addr) else {
            return false;
        };
        let mut changed = false;
        if last_ns > *t {
            *t = last_ns;
            changed = true;
        }
        if let (Some(seen), None) = (self.stop_seen_ns, self.resumed_ns) {
            if last_ns > seen {
                self.resumed_ns = Some(last_ns);
                self.stopped_ns = None;
                changed = true;
            }
        }
        changed
    }

    /// Moves the watch to event time `now`: records a stop once every source was quiet for
    /// `quiet_ns` (and the request is that old), and returns the follow-ups due, in order.
    pub fn advance(&mut self, now: u64, quiet_ns: u64) -> Vec<FollowUpKind> {
        if now > self.observed_ns {
            self.observed_ns = now;
        }
        let now = self.observed_ns;
        let mut due = Vec::new();
        if self.closed {
            return due;
        }
        let last = self.last_seen();
        if self.stopped_ns.is_none()
            && now >= last.saturating_add(quiet_ns)
            && now >= self.requested_ns.saturating_add(quiet_ns)
        {
            self.stopped_ns = Some(last);
            self.stop_seen_ns.get_or_insert(now);
        }
        if self.stopped_ns.is_some() && !self.sent.contains(&FollowUpKind::Stopped) {
            due.push(FollowUpKind::Stopped);
        }
        if now >= self.deadline_ns && !self.sent.contains(&FollowUpKind::Deadline) {
            if self.active_at_deadline.is_none() {
                self.active_at_deadline = Some(self.active_at(self.deadline_ns, quiet_ns));
            }
            due.push(FollowUpKind::Deadline);
        }
        due
    }

    /// Marks a follow-up stored; closes the watch once both are and the activity stopped.
    pub fn mark(&mut self, kind: FollowUpKind) {
        if !self.sent.contains(&kind) {
            self.sent.push(kind);
            self.sent.sort();
        }
        if self.sent.len() == 2 && self.stopped_ns.is_some() {
            self.closed = true;
        }
    }

    /// The outcome in one word: `stopped`, `resumed`, `continues` (past the deadline) or
    /// `watching`.
    pub fn status(&self) -> &'static str {
        match (self.stopped_ns, self.resumed_ns, self.active_at_deadline) {
            (Some(_), _, _) => "stopped",
            (None, Some(_), _) => "resumed",
            (None, None, Some(_)) => "continues",
            (None, None, None) => "watching",
        }
    }
}

/// The figures of one recipient State, over its requests: what an authority reports.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StateFigures {
    /// ISO code of the recipient State.
    pub state: String,
    pub requests: usize,
    /// Requests with at least one follow-up stored.
    pub followed_up: usize,
    /// Requests whose activity stopped (and did not resume since).
    pub stopped: usize,
    pub stopped_before_deadline: usize,
    /// Requests whose activity still went on at the deadline and has not stopped.
    pub continuing: usize,
    pub resumed: usize,
    /// Median event time from request to the end of the activity, over stopped requests.
    pub median_seconds_to_stop: Option<f64>,
    pub replies: usize,
}

/// Figures per recipient State, in code order.
pub fn figures(requests: &[crate::store::RequestRecord]) -> Vec<StateFigures> {
    let mut by: BTreeMap<&str, (StateFigures, Vec<u64>)> = BTreeMap::new();
    for r in requests {
        let w = &r.watch;
        let (f, times) = by.entry(&w.recipient).or_insert_with(|| {
            (
                StateFigures {
                    state: w.recipient.clone(),
                    ..StateFigures::default()
                },
                Vec::new(),
            )
        });
        f.requests += 1;
        f.followed_up += usize::from(!r.follow_ups.is_empty());
        f.replies += r.replies.len();
        f.resumed += usize::from(w.resumed_ns.is_some());
        match w.stopped_ns {
            Some(t) => {
                f.stopped += 1;
                f.stopped_before_deadline += usize::from(t <= w.deadline_ns);
                times.push(t.saturating_sub(w.requested_ns));
            }
            None if w.active_at_deadline.is_some() => f.continuing += 1,
            None => {}
        }
    }
    by.into_values()
        .map(|(mut f, mut times)| {
            times.sort_unstable();
            f.median_seconds_to_stop = match times.len() {
                0 => None,
                n if n % 2 == 1 => Some(times[n / 2] as f64 / 1e9),
                n => Some((times[n / 2 - 1] + times[n / 2]) as f64 / 2e9),
            };
            f
        })
        .collect()
}

/// Everything a follow-up is built from.
#[derive(Clone, Copy, Debug)]
pub struct FollowUpInput<'a> {
    pub kind: FollowUpKind,
    pub watch: &'a Watch,
    pub quiet_ns: u64,
    /// When it is decided (event time): its creation time.
    pub at_ns: u64,
    pub recipient: &'a Recipient,
    pub requester: &'a Recipient,
    pub operator: &'a Operator,
    pub settings: &'a RequestSettings,
    /// The request's `evidence/attribution.json`, carried unchanged (the same sources).
    pub attribution: &'a [u8],
}

/// `3.5 hours`, `12 minutes`, `70 seconds`.
pub fn span_text(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    if s >= 7200 {
        format!("{:.1} hours", ns as f64 / 3.6e12)
    } else if s >= 120 {
        format!("{} minutes", s / 60)
    } else {
        format!("{s} seconds")
    }
}

/// The outcome sentence of a follow-up.
pub fn headline(w: &Watch, at_ns: u64, quiet_ns: u64) -> String {
    let n = w.sources.len();
    match w.stopped_ns {
        Some(t) if t <= w.requested_ns => format!(
            "The activity from the {n} listed hosts stopped at {}, before the request was sent.",
            rfc3339_s(t)
        ),
        Some(t) => format!(
            "The activity from the {n} listed hosts stopped at {}, {} after the request{}.",
            rfc3339_s(t),
            span_text(t - w.requested_ns),
            if t <= w.deadline_ns {
                ", before the deadline"
            } else {
                ", after the deadline"
            }
        ),
        None => {
            let m = w.active_at(at_ns.min(w.observed_ns), quiet_ns);
            format!(
                "The activity continues from {m} of the {n} listed hosts (traffic within the {} before {}).",
                span_text(quiet_ns),
                rfc3339_s(at_ns)
            )
        }
    }
}

fn letter(i: &FollowUpInput<'_>, id: &str) -> String {
    let w = i.watch;
    let mut s = String::new();
    let _ = writeln!(s, "# Follow-up of request {}\n", w.package_id);
    let _ = writeln!(
        s,
        "To: {} ({})  \nFrom: {}, national authority of {}, on behalf of {}  \nFollow-up: {id} ({})  \nRequest: {} of {}, deadline {}\n",
        i.recipient.name,
        i.recipient.code,
        i.requester.name,
        i.requester.code,
        i.operator.name,
        match i.kind {
            FollowUpKind::Stopped => "the activity stopped",
            FollowUpKind::Deadline => "the deadline passed",
        },
        w.package_id,
        rfc3339_s(w.requested_ns),
        rfc3339_s(w.deadline_ns),
    );
    let _ = writeln!(s, "{}\n", headline(w, i.at_ns, i.quiet_ns));
    if let (Some(r), None) = (w.resumed_ns, w.stopped_ns) {
        let _ = writeln!(s, "It had stopped, but resumed at {}.\n", rfc3339_s(r));
    }
    match w.stopped_ns {
        Some(_) => {
            let _ = writeln!(
                s,
                "Thank you for your assistance. We will tell you if it resumes.\n"
            );
        }
        None => {
            let _ = writeln!(
                s,
                "We would be grateful for your continued assistance, and for any information on the measures taken.\n"
            );
        }
    }
    let _ = writeln!(s, "| Host | Last traffic seen | Status |\n|---|---|---|");
    for (a, t) in &w.sources {
        let active = t.saturating_add(i.quiet_ns) > i.at_ns.min(w.observed_ns);
        let _ = writeln!(
            s,
            "| {a} | {} | {} |",
            rfc3339_s(*t),
            if active { "active" } else { "stopped" }
        );
    }
    let _ = writeln!(
        s,
        "\nTimes are those of the observed traffic (UTC). A host counts as stopped after {} without traffic to the protected networks. This follow-up reports only what our sensors observed; no State attribution is made.",
        span_text(i.quiet_ns)
    );
    s
}

/// Builds and signs a follow-up.
pub fn build(i: FollowUpInput<'_>, key: &SecretKey) -> Result<Package> {
    let w = i.watch;
    let id = follow_up_id(&w.package_id, i.kind);
    let created = rfc3339_ms(i.at_ns);
    let tlp = i.settings.tlp;
    let letter = letter(&i, &id);
    let headline = headline(w, i.at_ns, i.quiet_ns);
    let observed_at = i.at_ns.min(w.observed_ns);
    let active: Vec<IpAddr> = w
        .sources
        .iter()
        .filter(|(_, t)| t.saturating_add(i.quiet_ns) > observed_at)
        .map(|(a, _)| *a)
        .collect();
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();

    let observations = json!({
        "follow_up": id,
        "kind": i.kind,
        "request": w.package_id,
        "alert_id": w.alert_id,
        "recipient": w.recipient,
        "about_state": w.about_state,
        "requested": rfc3339_ms(w.requested_ns),
        "deadline": rfc3339_ms(w.deadline_ns),
        "observed_until": rfc3339_ms(observed_at),
        "quiet_seconds": i.quiet_ns / 1_000_000_000,
        "status": w.status(),
        "stopped": w.stopped_ns.map(rfc3339_ms),
        "stopped_before_deadline": w.stopped_ns.map(|t| t <= w.deadline_ns),
        "resumed": w.resumed_ns.map(rfc3339_ms),
        "hosts": w.sources.len(),
        "active_hosts": active.len(),
        "sources": w.sources.iter().map(|(a, t)| json!({
            "addr": a,
            "last_seen": rfc3339_ms(*t),
            "active": active.contains(a),
        })).collect::<Vec<_>>(),
    });
    files.insert("evidence/follow-up.json".into(), pretty(&observations)?);
    files.insert("evidence/attribution.json".into(), i.attribution.to_vec());
    files.insert("follow-up.md".into(), letter.clone().into_bytes());

    // STIX: a sighting of the request's indicator (the listed sources towards the victim)
    // over the time since the request, a note with the letter and a report; the note and the
    // report refer to the request's report, so a recipient's platform links them.
    let sdo_id = |ty: &str, role: &str| format!("{ty}--{}", sdo_uuid(&id, role));
    let request_report = format!("report--{}", sdo_uuid(&w.package_id, "report"));
    let request_indicator = format!("indicator--{}", sdo_uuid(&w.package_id, "sources"));
    let operator_id = stix::operator_id(&i.operator.name, i.operator.email.as_ref());
    let marking = json!([tlp.stix_id()]);
    let base = |ty: &str, id: &str| {
        json!({
            "type": ty,
            "spec_version": "2.1",
            "id": id,
            "created": created,
            "modified": created,
            "created_by_ref": operator_id,
            "object_marking_refs": marking,
        })
    };
    let mut op = json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": operator_id,
        "created": stix::IDENTITY_TIME,
        "modified": stix::IDENTITY_TIME,
        "object_marking_refs": marking,
        "name": i.operator.name,
        "identity_class": "organization",
    });
    if let Some(e) = &i.operator.email {
        op["contact_information"] = json!(e);
    }
    let mut objects = vec![op];
    objects.extend(stix::shared_objects(tlp));
    let seen_after: Vec<u64> = w
        .sources
        .values()
        .copied()
        .filter(|t| *t > w.requested_ns)
        .collect();
    let sighting_id = sdo_id("sighting", "sighting");
    let mut sighting = base("sighting", &sighting_id);
    sighting["sighting_of_ref"] = json!(request_indicator);
    sighting["where_sighted_refs"] = json!([operator_id]);
    sighting["first_seen"] = json!(rfc3339_ms(w.requested_ns));
    sighting["last_seen"] = json!(rfc3339_ms(
        seen_after.iter().copied().max().unwrap_or(w.requested_ns)
    ));
    sighting["count"] = json!(seen_after.len());
    sighting["description"] = json!(format!(
        "Listed hosts seen sending traffic to the protected networks after request {}: {} of {}. {headline}",
        w.package_id,
        seen_after.len(),
        w.sources.len()
    ));
    objects.push(sighting);
    let note_id = sdo_id("note", "follow-up");
    let mut note = base("note", &note_id);
    note["abstract"] = json!(format!("Follow-up of request {}", w.package_id));
    note["content"] = json!(letter);
    note["authors"] = json!([i.requester.name]);
    note["object_refs"] = json!([request_report, request_indicator, sighting_id]);
    objects.push(note);
    let mut report = base("report", &sdo_id("report", "report"));
    report["name"] = json!(format!("Follow-up {id}"));
    report["description"] = json!(format!(
        "Follow-up of the request for assistance {}: {headline} No State attribution is made.",
        w.package_id
    ));
    report["report_types"] = json!(["threat-report"]);
    report["published"] = json!(created);
    report["object_refs"] = json!([request_report, sighting_id, note_id, operator_id]);
    objects.insert(0, report);
    let bundle = json!({
        "type": "bundle",
        "id": format!("bundle--{}", sdo_uuid(&id, "bundle")),
        "objects": objects,
    });
    files.insert("stix/bundle.json".into(), compact(&bundle)?);

    // MISP: the same facts as an event with the request's markings.
    let ts = (i.at_ns / 1_000_000_000).to_string();
    let uuid =
        |what: &str| Uuid::new_v5(&NORMWATCH_NAMESPACE, format!("{id}/misp/{what}").as_bytes());
    let mut attrs: Vec<Value> = w
        .sources
        .iter()
        .map(|(a, t)| {
            json!({
                "uuid": uuid(&format!("ip-src/{a}")).to_string(),
                "type": "ip-src",
                "category": "Network activity",
                "value": a.to_string(),
                "to_ids": active.contains(a),
                "comment": if active.contains(a) { "still active" } else { "stopped" },
                "timestamp": ts,
                "last_seen": rfc3339_ms(*t),
            })
        })
        .collect();
    attrs.push(json!({
        "uuid": uuid("letter").to_string(),
        "type": "text",
        "category": "Other",
        "value": headline,
        "to_ids": false,
        "comment": "follow-up outcome",
        "timestamp": ts,
    }));
    let event = json!({"Event": {
        "uuid": uuid("event").to_string(),
        "info": format!("{id}: follow-up of request {} ({})", w.package_id, w.status()),
        "date": crate::canon::date(i.at_ns),
        "timestamp": ts,
        "publish_timestamp": ts,
        "threat_level_id": "2",
        "analysis": if w.stopped_ns.is_some() { "2" } else { "1" },
        "distribution": "0",
        "published": false,
        "Orgc": {
            "name": i.operator.name,
            "uuid": stix::org_uuid("operator", &i.operator.name).to_string(),
        },
        "Tag": [
            {"name": format!("tlp:{}", tlp.as_str())},
            {"name": i.settings.pap.misp_tag()},
        ],
        "Attribute": attrs,
    }});
    files.insert("misp/event.json".into(), compact(&event)?);

    let digest = |name: &str, files: &BTreeMap<String, Vec<u8>>| Subject {
        name: name.to_string(),
        sha256: files.get(name).map(|b| sha256_hex(b)).unwrap_or_default(),
    };
    let mut log = custody::Log::default();
    log.push(custody::Event {
        action: Action::Derived,
        actor: i.operator.name.clone(),
        at: created.clone(),
        tool: TOOL_NAME.into(),
        tool_version: TOOL_VERSION.into(),
        subjects: vec![digest("evidence/follow-up.json", &files)],
        note: format!(
            "traffic from the {} hosts of request {} observed until {} (event time: this entry's time is the traffic's, not the wall clock)",
            w.sources.len(),
            w.package_id,
            rfc3339_ms(observed_at)
        ),
    })?;
    log.push(custody::Event {
        action: Action::Packaged,
        actor: i.operator.name.clone(),
        at: created.clone(),
        tool: TOOL_NAME.into(),
        tool_version: TOOL_VERSION.into(),
        subjects: ["follow-up.md", "misp/event.json", "stix/bundle.json"]
            .into_iter()
            .map(|n| digest(n, &files))
            .collect(),
        note: format!(
            "follow-up {id} of request {} for {}",
            w.package_id, w.recipient
        ),
    })?;
    files.insert(CUSTODY.into(), log.to_bytes());

    let mut manifest = json!({
        "format": FORMAT,
        "package_id": id,
        "created": created,
        "producer": {"organisation": i.operator.name, "tool": TOOL_NAME, "tool_version": TOOL_VERSION},
        "alert_id": w.alert_id,
        "follow_up_of": w.package_id,
        "recipient": w.recipient,
        "about_state": w.about_state,
        "tlp": tlp.as_str(),
    });
    let predicate = json!({
        "package_id": id,
        "follow_up_of": w.package_id,
        "alert_id": w.alert_id,
        "recipient": w.recipient,
        "about_state": w.about_state,
        "status": w.status(),
        "outcome": headline,
    });
    package::seal(&mut files, &mut manifest, predicate, key)?;
    Ok(Package {
        id,
        files,
        packaged_at_ns: i.at_ns,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn watch() -> Watch {
        let a: IpAddr = "89.160.20.130".parse().unwrap();
        let b: IpAddr = "89.160.20.131".parse().unwrap();
        Watch {
            package_id: "EP-20260115-DE-abc".into(),
            alert_id: "a".into(),
            recipient: "DE".into(),
            about_state: Some("DE".into()),
            requested_ns: 100 * S,
            deadline_ns: 200 * S,
            sources: [(a, 90 * S), (b, 95 * S)].into(),
            observed_ns: 100 * S,
            stopped_ns: None,
            stop_seen_ns: None,
            resumed_ns: None,
            active_at_deadline: None,
            sent: Vec::new(),
            closed: false,
            quiet_ns: 30 * S,
            campaign: None,
            updates: Vec::new(),
            services: Vec::new(),
        }
    }

    #[test]
    fn activity_stops_after_the_quiet_period_and_the_deadline_follows() {
        let mut w = watch();
        let a: IpAddr = "89.160.20.130".parse().unwrap();
        assert!(w.observe(a, 120 * S));
        // Unlisted hosts change nothing.
        assert!(!w.observe("192.0.2.1".parse().unwrap(), 130 * S));
        assert_eq!(w.advance(140 * S, 30 * S), []);
        assert_eq!(w.status(), "watching");
        assert_eq!(w.advance(150 * S, 30 * S), [FollowUpKind::Stopped]);
        assert_eq!(w.stopped_ns, Some(120 * S));
        assert!(headline(&w, 150 * S, 30 * S).contains(
            "stopped at 1970-01-01T00:02:00Z, 20 seconds after the request, before the deadline"
        ));
        w.mark(FollowUpKind::Stopped);
        assert_eq!(w.advance(199 * S, 30 * S), []);
        assert_eq!(w.advance(200 * S, 30 * S), [FollowUpKind::Deadline]);
        w.mark(FollowUpKind::Deadline);
        assert!(w.closed);
        assert_eq!(w.advance(400 * S, 30 * S), []);
    }

    #[test]
    fn activity_that_goes_on_is_reported_as_continuing_and_a_resumption_is_kept() {
        let mut w = watch();
        let a: IpAddr = "89.160.20.130".parse().unwrap();
        for t in (100..=200).step_by(10) {
            w.observe(a, t * S);
            let due = w.advance(t * S, 30 * S);
            if t < 200 {
                assert_eq!(due, [], "at {t}");
            } else {
                assert_eq!(due, [FollowUpKind::Deadline]);
            }
        }
        assert_eq!(w.active_at_deadline, Some(1));
        assert_eq!(w.status(), "continues");
        assert!(headline(&w, 200 * S, 30 * S).contains("continues from 1 of the 2 listed hosts"));
        w.mark(FollowUpKind::Deadline);
        assert!(!w.closed, "watched until it stops");
        w.observe(a, 215 * S);
        assert_eq!(w.advance(244 * S, 30 * S), []);
        assert_eq!(w.advance(245 * S, 30 * S), [FollowUpKind::Stopped]);
        assert!(headline(&w, 245 * S, 30 * S).contains("after the deadline"));
        w.mark(FollowUpKind::Stopped);
        assert!(w.closed);

        // Seen to stop, then traffic again: resumed.
        let mut w = watch();
        assert_eq!(w.advance(130 * S, 30 * S), [FollowUpKind::Stopped]);
        w.mark(FollowUpKind::Stopped);
        assert!(w.observe(a, 140 * S));
        assert_eq!(w.status(), "resumed");
        assert_eq!(w.resumed_ns, Some(140 * S));
        assert_eq!(w.advance(150 * S, 30 * S), []);
    }
}
