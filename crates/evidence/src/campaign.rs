//! Campaigns: alerts whose sources or reflectors overlap, within a window, are one campaign.
//!
//! Rule (`[evidence.campaign]`): two closed alerts (on any assets, typically different
//! operators') are related when their windows lie within `window` of each other and their
//! non-reflector sources, or their reflectors, overlap (addresses that cannot originate
//! Internet traffic, and the sources of a flood assessed as forged, never count): the
//! addresses both name are at least `min_overlap` of the smaller set (and at least one).
//!
//! A campaign makes one request per recipient State. A closed alert that would make a request
//! and is not related to a campaign whose requests were already built is held (in the ledger,
//! with its flows) for `hold` of event time after its close; related held alerts, joined
//! transitively, are one campaign, held until `hold` after its newest alert's close. Then one
//! request per State is built for the whole campaign, naming every impaired service and
//! carrying each alert's evidence (see `package::build_campaign`). The campaign's id is
//! derived from its first alert by window start, then alert id (`CP-` and 12 hex digits), and
//! its alerts are taken in that order, so the grouping, the id and the packages do not depend
//! on the order the alerts arrived in. At the end of input, or when the stage stops, every
//! held alert is packaged at once; a restart takes the holds from the ledger.
//!
//! An alert related to a campaign whose requests were built joins that campaign (the one
//! recorded first, if several): for a State with a request it gives an update of that request
//! (`<request id>-UP-…`), which carries the new alert's evidence and names every service the
//! campaign impaired, and whose sources join the request's follow-up; for a State without one
//! it makes the campaign's request to that State. With `hold = "0s"` nothing is held: each
//! alert is packaged when it closes, and the first alert's package to a State is the request.

use crate::canon::sha256_hex;
use crate::recipients::is_unroutable;
use normwatch_model::{Alert, FlowRecord};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// How alerts are grouped into campaigns.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CampaignSettings {
    pub enabled: bool,
    /// Alerts whose windows are further apart than this are never one campaign.
    pub window_ns: u64,
    /// Share of the smaller address set both alerts must name (0 < share ≤ 1).
    pub min_overlap: f64,
    /// How long (event time) a campaign's first requests wait after its newest alert closed,
    /// so later alerts of the campaign go into the same request (0: no wait).
    pub hold_ns: u64,
}

impl Default for CampaignSettings {
    fn default() -> Self {
        CampaignSettings {
            enabled: true,
            window_ns: 3_600_000_000_000,
            min_overlap: 0.5,
            hold_ns: 300_000_000_000,
        }
    }
}

/// One alert of a campaign, as the ledger keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub alert_id: String,
    pub campaign_id: String,
    pub asset: String,
    pub service: String,
    pub window_start_ns: u64,
    pub window_end_ns: u64,
    /// Sources (not reflectors; none when the flood's sources were forged; never an address
    /// that cannot originate Internet traffic, which identifies nobody).
    pub sources: BTreeSet<IpAddr>,
    pub reflectors: BTreeSet<IpAddr>,
    /// Packaged in its campaign's request when a hold ended (its packages are stored).
    #[serde(default)]
    pub in_request: bool,
}

impl Member {
    /// The alert as a member of a campaign still to be chosen.
    pub fn of(alert: &Alert) -> Member {
        let forged = alert.spoofing.as_ref().is_some_and(|s| s.likely_spoofed);
        Member {
            alert_id: alert.id.clone(),
            campaign_id: String::new(),
            asset: alert.asset.as_str().to_string(),
            service: alert.service.clone(),
            window_start_ns: alert.window_start_ns,
            window_end_ns: alert.window_end_ns,
            sources: alert
                .top_sources
                .iter()
                .filter(|s| !s.reflector && !forged && !is_unroutable(s.addr))
                .map(|s| s.addr)
                .collect(),
            reflectors: alert
                .top_sources
                .iter()
                .filter(|s| s.reflector && !is_unroutable(s.addr))
                .map(|s| s.addr)
                .collect(),
            in_request: false,
        }
    }

    /// `service (asset)`, as update letters list it.
    pub fn label(&self) -> String {
        format!("{} ({})", self.service, self.asset)
    }
}

/// A closed alert waiting, with its flows, for its campaign's request (see
/// `[evidence.campaign] hold`); kept in the ledger so a restart loses nothing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub alert: Alert,
    /// The alert's flows with its listed sources (what its packages can hold); kept in the
    /// ledger apart from the rest, in the flows' compact wire encoding (postcard).
    #[serde(skip)]
    pub flows: Vec<FlowRecord>,
    /// When the packaging stage received the first of them (wall clock), for custody.
    pub flows_received_ns: Option<u64>,
    /// Event time after which the hold may end (the alert's close plus the hold).
    pub until_ns: u64,
}

/// Groups of held alerts that are one campaign: `related` pairs joined transitively, each
/// group in (window start, alert id) order and the groups by their first member, so the
/// grouping does not depend on the order the alerts arrived in.
pub fn groups(members: &[Member], s: &CampaignSettings) -> Vec<Vec<usize>> {
    let n = members.len();
    let mut parent: Vec<usize> = (0..n).collect();
    fn root(p: &mut [usize], mut i: usize) -> usize {
        while p[i] != i {
            p[i] = p[p[i]];
            i = p[i];
        }
        i
    }
    for i in 0..n {
        for j in i + 1..n {
            if related(&members[i], &members[j], s) {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                if a != b {
                    parent[a.max(b)] = a.min(b);
                }
            }
        }
    }
    let mut by_root: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for i in 0..n {
        let r = root(&mut parent, i);
        by_root.entry(r).or_default().push(i);
    }
    let key = |i: &usize| (members[*i].window_start_ns, members[*i].alert_id.clone());
    let mut out: Vec<Vec<usize>> = by_root
        .into_values()
        .map(|mut g| {
            g.sort_by_key(key);
            g
        })
        .collect();
    out.sort_by_key(|g| key(&g[0]));
    out
}

/// The id of a campaign that starts with `alert_id`.
pub fn campaign_id(alert_id: &str) -> String {
    format!("CP-{}", &sha256_hex(alert_id.as_bytes())[..12])
}

fn overlaps(a: &BTreeSet<IpAddr>, b: &BTreeSet<IpAddr>, min_overlap: f64) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    let shared = a.intersection(b).count();
    let need = ((a.len().min(b.len()) as f64) * min_overlap)
        .ceil()
        .max(1.0) as usize;
    shared >= need
}

/// Whether `a` and `b` belong to one campaign under `s`.
pub fn related(a: &Member, b: &Member, s: &CampaignSettings) -> bool {
    a.window_start_ns <= b.window_end_ns.saturating_add(s.window_ns)
        && b.window_start_ns <= a.window_end_ns.saturating_add(s.window_ns)
        && (overlaps(&a.sources, &b.sources, s.min_overlap)
            || overlaps(&a.reflectors, &b.reflectors, s.min_overlap))
}

/// The campaign `new` joins among `members` (recorded order), or a new one.
pub fn assign(members: &[Member], new: &Member, s: &CampaignSettings) -> String {
    members
        .iter()
        .find(|m| m.alert_id != new.alert_id && related(m, new, s))
        .map_or_else(|| campaign_id(&new.alert_id), |m| m.campaign_id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn member(id: &str, asset: &str, start: u64, sources: &[&str], reflectors: &[&str]) -> Member {
        let set = |v: &[&str]| v.iter().map(|a| a.parse().unwrap()).collect();
        Member {
            alert_id: id.into(),
            campaign_id: String::new(),
            asset: asset.into(),
            service: format!("{asset} service"),
            window_start_ns: start,
            window_end_ns: start + 60 * S,
            sources: set(sources),
            reflectors: set(reflectors),
            in_request: false,
        }
    }

    #[test]
    fn overlapping_sources_or_reflectors_within_the_window_make_one_campaign() {
        let s = CampaignSettings {
            window_ns: 600 * S,
            ..CampaignSettings::default()
        };
        let mut first = member("a", "hospital", 0, &["1.1.1.1", "1.1.1.2", "1.1.1.3"], &[]);
        first.campaign_id = campaign_id("a");
        let members = vec![first];
        // Two of three shared: the same campaign.
        let b = member(
            "b",
            "water",
            30 * S,
            &["1.1.1.1", "1.1.1.2", "9.9.9.9"],
            &[],
        );
        assert_eq!(assign(&members, &b, &s), campaign_id("a"));
        // One of three: not enough.
        let c = member(
            "c",
            "water",
            30 * S,
            &["1.1.1.1", "8.8.8.8", "9.9.9.9"],
            &[],
        );
        assert_eq!(assign(&members, &c, &s), campaign_id("c"));
        // The same hosts, but too long after.
        let d = member(
            "d",
            "grid",
            2_000 * S,
            &["1.1.1.1", "1.1.1.2", "1.1.1.3"],
            &[],
        );
        assert_eq!(assign(&members, &d, &s), campaign_id("d"));
        // Reflector sets count alike; a forged flood names no sources.
        let mut e = member("e", "grid", 0, &[], &["5.5.5.5", "6.6.6.6"]);
        e.campaign_id = campaign_id("e");
        let f = member("f", "dns", 10 * S, &[], &["5.5.5.5", "6.6.6.6", "7.7.7.7"]);
        assert_eq!(assign(&[e], &f, &s), campaign_id("e"));
    }

    #[test]
    fn held_alerts_group_transitively_and_in_the_same_way_whatever_their_order() {
        let s = CampaignSettings::default();
        // b shares hosts with a and with c, a and c share none: one campaign of three; d is
        // on its own.
        let a = member("a", "hospital", 10 * S, &["1.1.1.1", "1.1.1.2"], &[]);
        let b = member("b", "water", 20 * S, &["1.1.1.2", "2.2.2.2"], &[]);
        let c = member("c", "grid", 0, &["2.2.2.2", "2.2.2.3"], &[]);
        let d = member("d", "grid", 5 * S, &["9.9.9.9"], &[]);
        let ids = |ms: &[&Member]| {
            let owned: Vec<Member> = ms.iter().map(|m| (*m).clone()).collect();
            groups(&owned, &s)
                .into_iter()
                .map(|g| {
                    g.into_iter()
                        .map(|i| owned[i].alert_id.clone())
                        .collect::<Vec<_>>()
                })
                .collect::<Vec<_>>()
        };
        let want = vec![vec!["c", "a", "b"], vec!["d"]];
        assert_eq!(ids(&[&a, &b, &c, &d]), want);
        assert_eq!(ids(&[&d, &c, &b, &a]), want);
        assert_eq!(ids(&[&b, &d, &a, &c]), want);
    }
}
