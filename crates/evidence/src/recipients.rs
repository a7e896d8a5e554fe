//! Recipients: the operator-maintained directory of State points of contact, and the plan that
//! splits an alert's sources into one package per recipient State.
//!
//! Rules (reference §5.3): the recipient is the State where the source block is *registered*;
//! reflectors (victims of spoofing themselves), spoofed and anonymised sources go to the
//! provider-abuse section, never into a State's list of sources; the requesting State's own
//! sources are left out (they are a domestic matter); a State with no directory entry, or a
//! source with no registration, goes to the operator's own national authority for routing.

use crate::attribution::Attribution;
use crate::error::{Error, Result};
use crate::tlp::Tlp;
use normwatch_model::{Alert, TopSource};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

/// The ISO 3166-1 alpha-2 codes officially assigned, plus `XK` (Kosovo), a user-assigned
/// code MaxMind uses, so that a registration it reports can be matched.
const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG \
    BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW \
    CX CY CZ DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL \
    GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE \
    KG KH KI KM KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM \
    MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH \
    PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS \
    ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG \
    VI VN VU WF WS YE YT ZA ZM ZW XK";

/// An assigned ISO 3166-1 alpha-2 code, upper case (the codes MaxMind reports).
pub fn is_country_code(s: &str) -> bool {
    s.len() == 2 && ISO_3166_ALPHA2.split_whitespace().any(|c| c == s)
}

/// Why `s` is not an ISO 3166-1 alpha-2 code, with the likely intended code where one is
/// commonly confused with it (`UK` for `GB`, `EL` for `GR`).
pub fn country_code_problem(s: &str) -> Option<String> {
    if is_country_code(s) {
        return None;
    }
    let upper = s.to_ascii_uppercase();
    let hint = match upper.as_str() {
        "UK" => Some("GB (the ISO 3166-1 code of the United Kingdom, which MaxMind reports)"),
        "EL" => Some("GR (the ISO 3166-1 code of Greece, which MaxMind reports)"),
        _ if upper != s && is_country_code(&upper) => None,
        _ => None,
    };
    Some(match hint {
        Some(h) => format!("{s:?} is not an ISO 3166-1 alpha-2 code: use {h}"),
        None if upper != s && is_country_code(&upper) => {
            format!("{s:?} must be an ISO 3166-1 code in upper case: {upper}")
        }
        None => format!("{s:?} is not an assigned ISO 3166-1 alpha-2 code"),
    })
}

/// How a package reaches a recipient.
///
/// TAXII and webhook URLs must be `https://`; plain `http://` is accepted only for a loopback
/// host (a local relay or a test server), because evidence and credentials must not cross a
/// network in clear. `ca` names a PEM file whose certificates are the only trust roots for that
/// channel (a recipient behind a private CA); without it the Mozilla roots (webpki) are used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Channel {
    /// Push to a TAXII 2.1 collection (`POST {url}/collections/{collection}/objects/`, `url`
    /// being the API root). HTTP Basic authentication when `user` is set, with the password
    /// read from the environment variable `password_env` (never from the file).
    Taxii {
        url: String,
        collection: String,
        #[serde(default)]
        user: Option<String>,
        #[serde(default)]
        password_env: Option<String>,
        /// PEM file of the CA certificates trusted for this server (instead of webpki roots).
        // Outbox rows queued before this field existed have no `ca`, hence the default and
        // no serialisation of `None`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca: Option<String>,
    },
    /// POST the `.tar` to an HTTPS webhook, with a bearer token from the environment variable
    /// `token_env` if set.
    Webhook {
        url: String,
        #[serde(default)]
        token_env: Option<String>,
        /// PEM file of the CA certificates trusted for this server (instead of webpki roots).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ca: Option<String>,
    },
    /// Drop the `.tar` into a directory (a mounted exchange share, an outbox for couriers).
    Directory { path: String },
}

impl Channel {
    /// A short description for logs and custody entries (no secrets).
    pub fn describe(&self) -> String {
        match self {
            Channel::Taxii {
                url, collection, ..
            } => format!("taxii {url} collection {collection}"),
            Channel::Webhook { url, .. } => format!("webhook {url}"),
            Channel::Directory { path } => format!("directory {path}"),
        }
    }

    /// A description for the custody log, which travels with the package: no local path
    /// and no credential, only what the recipient can check.
    pub fn describe_for_custody(&self) -> String {
        match self {
            Channel::Taxii {
                url, collection, ..
            } => format!("TAXII 2.1 push to {url} collection {collection}"),
            Channel::Webhook { url, .. } => format!("HTTPS webhook {url}"),
            Channel::Directory { .. } => "drop into the recipient's exchange directory".into(),
        }
    }

    /// The channel's problems, each as a sentence (empty when it is usable).
    pub fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let (url, ca) = match self {
            Channel::Taxii {
                url,
                collection,
                ca,
                ..
            } => {
                if collection.is_empty() {
                    problems.push("collection is empty".to_string());
                }
                (url, ca)
            }
            Channel::Webhook { url, ca, .. } => (url, ca),
            Channel::Directory { path } => {
                if path.is_empty() {
                    problems.push("path is empty".to_string());
                }
                return problems;
            }
        };
        match check_transport(url) {
            Err(e) => problems.push(e),
            Ok(Transport::Clear) if ca.is_some() => problems.push(format!(
                "ca is set but {url} is not https:// (a CA only applies to TLS)"
            )),
            Ok(_) => {}
        }
        if ca.as_deref().is_some_and(|c| c.trim().is_empty()) {
            problems.push("ca is empty".to_string());
        }
        problems
    }
}

/// How a channel URL is carried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// `https://`.
    Tls,
    /// `http://` to a loopback host: never leaves the machine.
    Clear,
}

/// Checks that `url` is `https://`, or `http://` to a loopback host (127.0.0.0/8, `::1`,
/// `localhost`); anything else is refused with the reason.
pub fn check_transport(url: &str) -> std::result::Result<Transport, String> {
    let uri: ureq::http::Uri = url
        .parse()
        .map_err(|e| format!("url must be http(s): {url:?} is not a URL ({e})"))?;
    let host = uri.host().unwrap_or_default();
    if host.is_empty() {
        return Err(format!("url must be http(s): {url:?} has no host"));
    }
    match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("https") => Ok(Transport::Tls),
        Some("http") if is_loopback_host(host) => Ok(Transport::Clear),
        Some("http") => Err(format!(
            "url {url} is plain http:// to {host}, which is not loopback: use https:// \
             (evidence and credentials must not cross a network in clear)"
        )),
        _ => Err(format!("url must be http(s): {url:?}")),
    }
}

fn is_loopback_host(host: &str) -> bool {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// One State's point of contact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// ISO 3166-1 alpha-2.
    pub code: String,
    /// The POC's name, e.g. the national CSIRT.
    pub name: String,
    /// Language of the letter (BCP 47, e.g. `de`); the letter is in English plus a note.
    #[serde(default = "default_language")]
    pub language: String,
    /// The most restrictive TLP levels it accepts.
    #[serde(default = "default_tlp_accepted")]
    pub tlp_accepted: Vec<Tlp>,
    /// Its Ed25519 public key (hex), for encrypting or checking replies.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Contact for humans.
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default, rename = "channel")]
    pub channels: Vec<Channel>,
}

fn default_language() -> String {
    "en".into()
}

fn default_tlp_accepted() -> Vec<Tlp> {
    vec![Tlp::Clear, Tlp::Green, Tlp::Amber, Tlp::AmberStrict]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDirectory {
    #[serde(default, rename = "state")]
    states: Vec<Recipient>,
}

/// The POC directory, keyed by ISO code. The UN Global POC Directory is not public, so this is
/// always operator configuration, never shipped data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Directory {
    states: BTreeMap<String, Recipient>,
}

impl Directory {
    /// Checks entries: codes, duplicates, keys, channels. Every problem is reported at once.
    pub fn new(states: Vec<Recipient>) -> Result<Directory> {
        let mut problems = Vec::new();
        let mut map = BTreeMap::new();
        for (i, r) in states.into_iter().enumerate() {
            let at = format!("state[{i}] ({})", r.code);
            if let Some(p) = country_code_problem(&r.code) {
                problems.push(format!("{at}: code {p}"));
            }
            if r.name.trim().is_empty() {
                problems.push(format!("{at}: name is empty"));
            }
            if r.tlp_accepted.is_empty() {
                problems.push(format!("{at}: tlp_accepted is empty"));
            }
            if let Some(k) = &r.public_key {
                if crate::canon::unhex::<32>(k).is_none() {
                    problems.push(format!("{at}: public_key must be 64 hex digits (Ed25519)"));
                }
            }
            for (j, c) in r.channels.iter().enumerate() {
                let kind = match c {
                    Channel::Taxii { .. } => "taxii",
                    Channel::Webhook { .. } => "webhook",
                    Channel::Directory { .. } => "directory",
                };
                for p in c.problems() {
                    problems.push(format!("{at}: channel[{j}] ({kind}): {p}"));
                }
            }
            if map.contains_key(&r.code) {
                problems.push(format!("{at}: duplicate entry for {}", r.code));
            }
            map.insert(r.code.clone(), r);
        }
        if problems.is_empty() {
            Ok(Directory { states: map })
        } else {
            Err(Error::Recipients(problems.join("; ")))
        }
    }

    /// Parses a directory file (`[[state]]` tables).
    pub fn parse(text: &str) -> Result<Directory> {
        let raw: RawDirectory =
            toml::from_str(text).map_err(|e| Error::Recipients(e.to_string()))?;
        Directory::new(raw.states)
    }

    /// Loads a directory file.
    pub fn load(path: &Path) -> Result<Directory> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Directory::parse(&text).map_err(|e| Error::Recipients(format!("{}: {e}", path.display())))
    }

    /// Makes relative directory-drop paths and CA files relative to `base` (the directory
    /// file's folder).
    pub fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut String| {
            if Path::new(path.as_str()).is_relative() {
                *path = base.join(path.as_str()).display().to_string();
            }
        };
        for r in self.states.values_mut() {
            for c in &mut r.channels {
                match c {
                    Channel::Directory { path } => resolve(path),
                    Channel::Taxii { ca: Some(ca), .. } | Channel::Webhook { ca: Some(ca), .. } => {
                        resolve(ca)
                    }
                    _ => {}
                }
            }
        }
    }

    pub fn get(&self, code: &str) -> Option<&Recipient> {
        self.states.get(code)
    }

    /// CA files named by channels that cannot be read: `STATE: channel[N] (KIND): ca PATH: why`
    /// for each (after [`Directory::resolve_paths`]). Checked when a packager opens, so a typo
    /// shows at start rather than at the first delivery.
    pub fn unreadable_ca_files(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (code, r) in &self.states {
            for (i, c) in r.channels.iter().enumerate() {
                if let Channel::Taxii { ca: Some(ca), .. } | Channel::Webhook { ca: Some(ca), .. } =
                    c
                {
                    if let Err(e) = std::fs::File::open(ca) {
                        out.push(format!(
                            "{code}: channel[{i}] ({}): ca {ca}: {e}",
                            c.describe()
                        ));
                    }
                }
            }
        }
        out
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

/// Why a source is not part of a State request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Disposition {
    /// Activity emanating from the recipient State's territory: the request is about it.
    StateRequest,
    /// A reflector answering spoofed requests: its operator is asked to fix it.
    Reflector,
    /// The address cannot be a real origin (spoofed: reserved, private, documentation space,
    /// or named as spoofed by the caller).
    Spoofed,
    /// A VPN, Tor exit or proxy: its registration says where the anonymiser is.
    Anonymiser,
    /// A satellite provider's address: it serves users in many countries.
    SatelliteProvider,
}

/// One source with what is known about it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SourceEvidence {
    pub source: TopSource,
    pub attribution: Attribution,
    pub disposition: Disposition,
}

/// How the package reaches the State it is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "kebab-case")]
pub enum Routing {
    /// Straight to the State's POC.
    Direct,
    /// To the operator's own national authority, which routes it onward.
    ViaNationalAuthority { reason: String },
    /// To the operator's own national authority for its own action, never onward: the
    /// sources are forged (nothing to ask another State), or the marking (TLP:RED,
    /// TLP:AMBER+STRICT) forbids passing it on.
    ForNationalAuthority { reason: String },
}

/// What a package asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Purpose {
    /// Mitigation of activity from the State's territory (and provider-abuse notices).
    #[default]
    Mitigation,
    /// The sources are forged: traceback through the upstream networks and source-address
    /// validation where the traffic entered, asked of the own national authority.
    Traceback,
}

/// One package to build.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlannedPackage {
    /// Whose POC receives it.
    pub recipient: Recipient,
    /// The State whose territory the sources are registered in (`None`: unknown registration).
    pub about_state: Option<String>,
    pub routing: Routing,
    /// Which rule chose the recipient, in words (a reviewing authority asks).
    pub rule: String,
    /// Sources the request is about.
    pub sources: Vec<SourceEvidence>,
    /// Reflectors, spoofed and anonymised sources: for the providers' abuse desks.
    pub provider_abuse: Vec<SourceEvidence>,
    #[serde(default)]
    pub purpose: Purpose,
    /// Set when the package updates a campaign's request to the same State instead of making
    /// a new request (see `crate::campaign`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub campaign: Option<CampaignUpdate>,
}

/// What a campaign update package says about its campaign.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignUpdate {
    /// The campaign's stable id.
    pub id: String,
    /// The package of the campaign's request to this State, which this one updates.
    pub update_of: String,
    /// Every service the campaign impaired so far (this alert's included), in the order seen:
    /// `service (asset)`.
    pub services: Vec<String>,
}

impl PlannedPackage {
    /// Every source address in the package, request and provider-abuse alike.
    pub fn addrs(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.sources
            .iter()
            .chain(&self.provider_abuse)
            .map(|s| s.source.addr)
    }
}

/// The packages an alert needs.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Plan {
    pub packages: Vec<PlannedPackage>,
    /// Sources in the requesting State's own territory: handled domestically, not packaged.
    pub own_state_sources: Vec<IpAddr>,
}

/// Addresses that cannot originate Internet traffic: seen as a source, they were spoofed.
pub fn is_unroutable(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_multicast()
                || a.is_broadcast()
                || a.is_documentation()
                || a.is_unspecified()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64/10 shared address space
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // 198.18/15 benchmarking
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_unroutable(IpAddr::V4(v4));
            }
            let s = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        }
    }
}

/// Splits `alert`'s sources into packages. `attributions` holds one lookup per source (missing
/// ones count as unknown registration); `spoofed` names sources known to be spoofed by other
/// means (the alert's own spoofing assessment adds every non-reflector source); `own_state` is
/// the requesting State, which must have a directory entry (its national authority routes what
/// no other entry covers); `tlp` is the package's marking: a State that does not accept it is
/// routed through the national authority, unless the marking forbids onward routing.
pub fn plan(
    alert: &Alert,
    attributions: &BTreeMap<IpAddr, Attribution>,
    spoofed: &[IpAddr],
    directory: &Directory,
    own_state: &str,
    tlp: Tlp,
) -> Result<Plan> {
    let authority = directory.get(own_state).ok_or_else(|| {
        Error::Recipients(format!(
            "the requesting State {own_state} has no entry; its national authority routes every \
             package without another recipient"
        ))
    })?;
    let flood_spoofed = alert.spoofing.as_ref().is_some_and(|s| s.likely_spoofed);
    let mut plan = Plan::default();
    // about-State (None = unknown registration) → (request sources, provider-abuse sources)
    type Groups = BTreeMap<Option<String>, (Vec<SourceEvidence>, Vec<SourceEvidence>)>;
    let mut groups: Groups = BTreeMap::new();
    let mut forged: Vec<SourceEvidence> = Vec::new();
    for s in &alert.top_sources {
        let attribution = attributions.get(&s.addr).cloned().unwrap_or(Attribution {
            addr: Some(s.addr),
            ..Attribution::default()
        });
        let disposition = if s.reflector {
            // A reflector's address is real (it answers forged requests), even in a flood
            // whose request sources were forged.
            Disposition::Reflector
        } else if flood_spoofed || spoofed.contains(&s.addr) || is_unroutable(s.addr) {
            Disposition::Spoofed
        } else if attribution.anonymous_proxy
            || attribution
                .anonymous
                .as_ref()
                .is_some_and(|a| a.hides_origin())
        {
            Disposition::Anonymiser
        } else if attribution.satellite_provider {
            Disposition::SatelliteProvider
        } else {
            Disposition::StateRequest
        };
        let ev = SourceEvidence {
            source: s.clone(),
            attribution,
            disposition,
        };
        // A forged address says nothing about any territory: no State is asked about it,
        // the own national authority is asked for traceback instead.
        if disposition == Disposition::Spoofed {
            forged.push(ev);
            continue;
        }
        let state = ev.attribution.registered_country.clone();
        if state.as_deref() == Some(own_state) {
            plan.own_state_sources.push(s.addr);
            continue;
        }
        let g = groups.entry(state).or_default();
        if disposition == Disposition::StateRequest {
            g.0.push(ev);
        } else {
            g.1.push(ev);
        }
    }
    let onward = |reason: String| {
        if tlp.forbids_onward_routing() {
            Routing::ForNationalAuthority {
                reason: format!(
                    "{reason}; TLP:{} forbids routing it onward, so the national authority \
                     decides whether to make its own request",
                    tlp.as_str().to_uppercase()
                ),
            }
        } else {
            Routing::ViaNationalAuthority { reason }
        }
    };
    for (state, (sources, provider_abuse)) in groups {
        let (recipient, routing, rule) = match state.as_deref().and_then(|c| directory.get(c)) {
            Some(r) if r.tlp_accepted.contains(&tlp) => (
                r.clone(),
                Routing::Direct,
                format!(
                    "registered country of the source prefixes (MaxMind registered_country) = {}; \
                     POC from the operator's directory",
                    r.code
                ),
            ),
            Some(r) => (
                authority.clone(),
                onward(format!(
                    "{} does not accept TLP:{}",
                    r.code,
                    tlp.as_str().to_uppercase()
                )),
                format!(
                    "registered country = {}; routed through {own_state}'s national authority",
                    r.code
                ),
            ),
            None => {
                let reason = match &state {
                    Some(c) => format!("no point of contact for {c} in the directory"),
                    None => "no registration country known for these sources".to_string(),
                };
                (
                    authority.clone(),
                    onward(reason),
                    format!("routed through {own_state}'s national authority"),
                )
            }
        };
        plan.packages.push(PlannedPackage {
            recipient,
            about_state: state,
            routing,
            rule,
            sources,
            provider_abuse,
            purpose: Purpose::Mitigation,
            campaign: None,
        });
    }
    if !forged.is_empty() {
        let reason = if flood_spoofed {
            "the detector assessed the flood's source addresses as forged: no State is asked \
             about them"
        } else {
            "the source addresses cannot originate Internet traffic (reserved or named as \
             spoofed): no State is asked about them"
        };
        plan.packages.push(PlannedPackage {
            recipient: authority.clone(),
            about_state: None,
            routing: Routing::ForNationalAuthority {
                reason: reason.to_string(),
            },
            rule: format!(
                "forged source addresses go to {own_state}'s national authority for traceback"
            ),
            sources: Vec::new(),
            provider_abuse: forged,
            purpose: Purpose::Traceback,
            campaign: None,
        });
    }
    Ok(plan)
}
