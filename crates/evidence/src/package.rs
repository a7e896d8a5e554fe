//! The package builder: one directory per alert per recipient State, and its `.tar`.
//!
//! Layout: `manifest.json` (RFC 8785, every other file with SHA-256 and size),
//! `manifest.intoto.dsse.json` (DSSE envelope, in-toto Statement v1 whose subject is the
//! manifest), `stix/bundle.json`, `misp/event.json`, `evidence/flows.jsonl`,
//! `evidence/alert.json`, `evidence/attribution.json`, `request.md`, `custody.jsonl`.
//!
//! The builder reads no clock and no file: the packaging time is an input, so the same inputs
//! give the same bytes (and the same signature: Ed25519 is deterministic).

use crate::attribution::DbProvenance;
use crate::canon::{date, jcs, rfc3339_ms, rfc3339_s, sha256_hex};
use crate::custody::{self, Action, Subject};
use crate::dsse;
use crate::error::{Error, Result};
use crate::keys::SecretKey;
use crate::recipients::{Disposition, PlannedPackage, Purpose, Recipient, Routing, SourceEvidence};
use crate::tlp::{Pap, Tlp};
use crate::{TOOL_NAME, TOOL_VERSION};
use normwatch_config::norms::NormCatalogue;
use normwatch_model::ip_proto;
use normwatch_model::{Alert, AlertKind, FlowRecord, IcsCounts, IcsProto};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The manifest's file name.
pub const MANIFEST: &str = "manifest.json";
/// The signature envelope's file name.
pub const ENVELOPE: &str = "manifest.intoto.dsse.json";
/// The custody log's file name.
pub const CUSTODY: &str = "custody.jsonl";
/// The manifest's `format`.
pub const FORMAT: &str = "normwatch-evidence/1";

/// The reporting organisation (the infrastructure operator).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operator {
    pub name: String,
    pub email: Option<String>,
}

/// What the request asks and how the package is marked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestSettings {
    pub tlp: Tlp,
    pub pap: Pap,
    /// The recipient is asked to act within this many hours of packaging.
    pub deadline_hours: u32,
    /// Overrides the action text chosen from the alert kind.
    pub action: Option<String>,
}

impl Default for RequestSettings {
    fn default() -> Self {
        RequestSettings {
            tlp: Tlp::Amber,
            // The request asks for filtering: an active measure PAP:GREEN permits.
            pap: Pap::Green,
            deadline_hours: 24,
            action: None,
        }
    }
}

/// Everything one package is built from.
#[derive(Clone, Copy, Debug)]
pub struct BuildInput<'a> {
    pub alert: &'a Alert,
    /// The alert's flows; only those of this package's sources with the victim are kept.
    pub flows: &'a [FlowRecord],
    pub planned: &'a PlannedPackage,
    /// The requesting State's national authority (the sender of the request).
    pub requester: &'a Recipient,
    /// The organisation that runs this system and sends (or hands over) the package.
    pub operator: &'a Operator,
    /// The operator of the attacked asset (its `[[asset]] operator`), when known and other
    /// than `operator`.
    pub asset_operator: Option<&'a str>,
    pub settings: &'a RequestSettings,
    pub norms: &'a NormCatalogue,
    /// The attribution databases the sources were looked up in.
    pub geo: &'a [DbProvenance],
    /// When the package is built (ns since the epoch), from the caller's clock.
    pub packaged_at_ns: u64,
    /// When the packaging stage received the first of these flow records from the sensors
    /// (wall clock, recorded on arrival); `None` when nobody recorded it.
    pub flows_received_ns: Option<u64>,
}

/// What the flows say about one source.
#[derive(Clone, Debug, Default)]
pub(crate) struct SourceFlows {
    pub first_ns: u64,
    pub last_ns: u64,
    pub pkts: u64,
    pub bytes: u64,
    pub flows: u64,
    pub victims: BTreeSet<IpAddr>,
    pub dst_ports: BTreeSet<u16>,
    pub protos: BTreeSet<u8>,
    /// Industrial commands the source sent, by protocol.
    pub ics: BTreeMap<&'static str, IcsCounts>,
}

/// What the package's own sources did, summed over its flows: the figures every text of the
/// package is written from (never the detector's summary, which may name any source).
#[derive(Debug, Default)]
pub(crate) struct Facts {
    /// Distinct sources of the whole attack (the detector's count, else the listed ones).
    pub total_sources: u64,
    /// Whether the detector counted all sources (else `total_sources` is the listed ones,
    /// and the attack may have had more).
    pub total_known: bool,
    /// Sources the detector listed (its top sources); fewer than `total_sources` when the
    /// list is a sample.
    pub listed_sources: usize,
    /// Sources this package is about (request sources, else provider-abuse ones).
    pub own_sources: usize,
    /// Share of the attack's packets those sources carried, 0 to 1 (detector's shares).
    pub own_share: f64,
    pub pkts: u64,
    pub bytes: u64,
    pub victim_ports: BTreeSet<u16>,
    pub protos: BTreeSet<u8>,
    /// Industrial commands from the package's sources, by protocol.
    pub ics: BTreeMap<&'static str, IcsCounts>,
}

/// A protocol number's name, for texts.
pub(crate) fn proto_label(p: u8) -> String {
    match p {
        ip_proto::TCP => "TCP".into(),
        ip_proto::UDP => "UDP".into(),
        ip_proto::ICMP => "ICMP".into(),
        ip_proto::ICMPV6 => "ICMPv6".into(),
        132 => "SCTP".into(),
        other => format!("IP protocol {other}"),
    }
}

fn add_ics(acc: &mut IcsCounts, c: &IcsCounts) {
    acc.read += c.read;
    acc.write += c.write;
    acc.control += c.control;
    acc.stop_restart += c.stop_restart;
    acc.program_firmware += c.program_firmware;
    acc.other += c.other;
    acc.malformed += c.malformed;
    acc.codes.union(&c.codes);
}

fn ics_name(p: IcsProto) -> &'static str {
    match p {
        IcsProto::Modbus => "Modbus/TCP",
        IcsProto::Dnp3 => "DNP3",
        IcsProto::S7comm => "S7comm",
        IcsProto::Iec104 => "IEC 60870-5-104",
        IcsProto::Enip => "EtherNet/IP",
    }
}

/// The facts every file of the package is written from, computed once.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub input: BuildInput<'a>,
    pub package_id: String,
    pub created: String,
    pub deadline: String,
    pub action: String,
    /// Request sources then provider-abuse sources, each in address order.
    pub sources: Vec<&'a SourceEvidence>,
    pub per_source: BTreeMap<IpAddr, SourceFlows>,
    pub flows: Vec<&'a FlowRecord>,
    pub victims: BTreeSet<IpAddr>,
    pub first_ns: u64,
    pub last_ns: u64,
    pub facts: Facts,
    /// A description of the attack from this package's own facts, for the STIX incident,
    /// the MISP event and `evidence/alert.json`.
    pub summary: String,
    /// `request.md`, also carried by the STIX note.
    pub letter: String,
}

impl Ctx<'_> {
    pub fn alert(&self) -> &Alert {
        self.input.alert
    }

    pub fn planned(&self) -> &PlannedPackage {
        self.input.planned
    }

    /// The State the sources are in, or `unknown`.
    pub fn about(&self) -> &str {
        about_label(self.planned())
    }

    pub fn traceback(&self) -> bool {
        self.planned().purpose == Purpose::Traceback
    }

    pub fn request_sources(&self) -> impl Iterator<Item = &&SourceEvidence> {
        self.sources
            .iter()
            .filter(|s| s.disposition == Disposition::StateRequest)
    }

    pub fn abuse_sources(&self) -> impl Iterator<Item = &&SourceEvidence> {
        self.sources
            .iter()
            .filter(|s| s.disposition != Disposition::StateRequest)
    }

    /// First and last event time of one source (its flows, else the alert window).
    pub fn source_window(&self, addr: IpAddr) -> (u64, u64) {
        match self.per_source.get(&addr) {
            Some(f) if f.flows > 0 => (f.first_ns, f.last_ns),
            _ => (self.alert().window_start_ns, self.alert().window_end_ns),
        }
    }
}

/// The action asked for, by alert kind and what the package holds.
fn default_action(
    kind: AlertKind,
    purpose: Purpose,
    has_requests: bool,
    has_abuse: bool,
) -> String {
    if purpose == Purpose::Traceback {
        return "Trace the attack traffic back through the upstream networks that carried it to \
                the victim (the victim's transit providers and their peers), identify where it \
                entered them, and ask those networks to apply source-address validation (BCP 38 \
                / BCP 84) there; the listed source addresses are forged, so please do not ask \
                their registrants or their States to act against them."
            .into();
    }
    let mut parts = Vec::new();
    if has_requests {
        parts.push(match kind {
            AlertKind::IcsCommandAbuse => {
                "identify the hosts at the listed addresses that sent industrial control commands \
                 and stop them from reaching the victim (filtering at the hosting networks or \
                 taking the hosts offline)"
            }
            AlertKind::Scan => {
                "ask the networks hosting the listed addresses to stop the scanning of the victim"
            }
            AlertKind::BulkExfiltration => {
                "identify the hosts at the listed addresses receiving the transferred data, \
                 preserve their logs and stop further transfers"
            }
            _ => {
                "identify the hosts at the listed addresses and stop the traffic they send to the \
                 victim (filtering at the hosting networks or taking the hosts offline)"
            }
        });
        parts.push("preserve the relevant logs for at least 90 days");
    }
    if has_abuse {
        parts.push(
            "pass the listed reflectors, anonymisers and satellite-provider addresses to the \
             abuse contacts of the networks operating them, so they close or rate-limit the \
             misused services; these addresses are not the origin of the attack",
        );
    }
    let mut s = parts.join("; ");
    if let Some(c) = s.get(..1) {
        s.replace_range(..1, &c.to_uppercase());
    }
    s.push('.');
    s
}

/// The `about` part of a package id and texts: the State, `unknown`, or `spoofed` for the
/// traceback package (so it never shares an id with the unknown-registration package).
fn about_label(p: &PlannedPackage) -> &str {
    match (p.purpose, p.about_state.as_deref()) {
        (Purpose::Traceback, _) => "spoofed",
        (_, Some(s)) => s,
        (_, None) => "unknown",
    }
}

/// A short stable package id: which alert, which State, which recipient. A campaign update
/// is named after the request it updates: `<request id>-UP-<hash>`.
pub fn package_id(alert: &Alert, planned: &PlannedPackage) -> String {
    let about = about_label(planned);
    let h = sha256_hex(format!("{}\n{about}\n{}", alert.id, planned.recipient.code).as_bytes());
    if let Some(c) = &planned.campaign {
        return format!("{}-UP-{}", c.update_of, &h[..8]);
    }
    format!(
        "EP-{}-{}-{}",
        date(alert.window_start_ns).replace('-', ""),
        about,
        &h[..12]
    )
}

/// The id of a campaign's request to one recipient (several alerts in one package): which
/// campaign, which State, which recipient, dated by the campaign's first alert.
pub fn campaign_package_id(
    campaign: &str,
    first_start_ns: u64,
    planned: &PlannedPackage,
) -> String {
    let about = about_label(planned);
    let h = sha256_hex(format!("{campaign}\n{about}\n{}", planned.recipient.code).as_bytes());
    format!(
        "EP-{}-{}-{}",
        date(first_start_ns).replace('-', ""),
        about,
        &h[..12]
    )
}

fn ctx<'a>(input: BuildInput<'a>) -> Result<Ctx<'a>> {
    let planned = input.planned;
    if planned.sources.is_empty() && planned.provider_abuse.is_empty() {
        return Err(Error::Build("the planned package has no sources".into()));
    }
    let mut sources: Vec<&SourceEvidence> = planned.sources.iter().collect();
    sources.sort_by_key(|s| s.source.addr);
    let mut abuse: Vec<&SourceEvidence> = planned.provider_abuse.iter().collect();
    abuse.sort_by_key(|s| s.source.addr);
    sources.extend(abuse);
    let wanted: BTreeSet<IpAddr> = sources.iter().map(|s| s.source.addr).collect();
    let alert = input.alert;
    // Data minimisation (13(e)): only flows between this package's sources and the victim.
    let mut flows: Vec<&FlowRecord> = input
        .flows
        .iter()
        .filter(|f| f.asset.as_ref().is_none_or(|m| m.id == alert.asset))
        .filter(|f| wanted.contains(&f.orig_addr) || wanted.contains(&f.resp_addr))
        .collect();
    flows.sort_by(|a, b| {
        (a.first_ns, &*a.sensor_id, a.flow_id, a.last_ns).cmp(&(
            b.first_ns,
            &*b.sensor_id,
            b.flow_id,
            b.last_ns,
        ))
    });
    let mut per_source: BTreeMap<IpAddr, SourceFlows> = BTreeMap::new();
    let mut victims = BTreeSet::new();
    for f in &flows {
        let (src, victim, dport, sent) = if wanted.contains(&f.orig_addr) {
            (f.orig_addr, f.resp_addr, f.resp_port, f.orig)
        } else {
            (f.resp_addr, f.orig_addr, f.orig_port, f.resp)
        };
        victims.insert(victim);
        let s = per_source.entry(src).or_default();
        if s.flows == 0 || f.first_ns < s.first_ns {
            s.first_ns = f.first_ns;
        }
        s.last_ns = s.last_ns.max(f.last_ns);
        s.pkts += sent.pkts;
        s.bytes += sent.ip_bytes;
        s.flows += 1;
        s.victims.insert(victim);
        s.dst_ports.insert(dport);
        s.protos.insert(f.ip_proto);
        if let Some(ics) = &f.ics {
            let sent = if src == f.orig_addr {
                &ics.orig
            } else {
                &ics.resp
            };
            add_ics(s.ics.entry(ics_name(ics.proto)).or_default(), sent);
        }
    }
    let first_ns = flows
        .iter()
        .map(|f| f.first_ns)
        .min()
        .unwrap_or(alert.window_start_ns)
        .min(alert.window_start_ns);
    let last_ns = flows
        .iter()
        .map(|f| f.last_ns)
        .max()
        .unwrap_or(alert.window_end_ns)
        .max(alert.window_end_ns);
    let deadline_ns = input
        .packaged_at_ns
        .saturating_add(u64::from(input.settings.deadline_hours) * 3_600_000_000_000);
    let action = input.settings.action.clone().unwrap_or_else(|| {
        default_action(
            alert.kind,
            planned.purpose,
            !planned.sources.is_empty(),
            !planned.provider_abuse.is_empty(),
        )
    });
    let facts = facts(alert, planned, &per_source);
    let mut c = Ctx {
        package_id: package_id(alert, planned),
        created: rfc3339_ms(input.packaged_at_ns),
        deadline: rfc3339_s(deadline_ns),
        action,
        sources,
        per_source,
        flows,
        victims,
        first_ns,
        last_ns,
        input,
        facts,
        summary: String::new(),
        letter: String::new(),
    };
    c.summary = crate::letter::summary(&c);
    c.letter = crate::letter::letter(&c);
    Ok(c)
}

fn facts(
    alert: &Alert,
    planned: &PlannedPackage,
    per_source: &BTreeMap<IpAddr, SourceFlows>,
) -> Facts {
    let listed = alert.top_sources.len();
    let counted = alert
        .sources_total
        .or(alert.spoofing.as_ref().map(|s| s.distinct_sources));
    let total = counted.unwrap_or(listed as u64).max(listed as u64);
    // The sources the package is about: its request sources, or (a traceback or abuse-only
    // package) the provider-abuse ones.
    let own: Vec<&SourceEvidence> = if planned.sources.is_empty() {
        planned.provider_abuse.iter().collect()
    } else {
        planned.sources.iter().collect()
    };
    let mut f = Facts {
        total_sources: total,
        total_known: counted.is_some(),
        listed_sources: listed,
        own_sources: own.len(),
        own_share: own
            .iter()
            .map(|s| s.source.share.clamp(0.0, 1.0))
            .sum::<f64>()
            .min(1.0),
        ..Facts::default()
    };
    for s in &own {
        match per_source.get(&s.source.addr) {
            Some(p) if p.flows > 0 => {
                f.pkts += p.pkts;
                f.bytes += p.bytes;
                f.victim_ports.extend(p.dst_ports.iter().copied());
                f.protos.extend(p.protos.iter().copied());
                for (proto, c) in &p.ics {
                    add_ics(f.ics.entry(proto).or_default(), c);
                }
            }
            _ => {
                f.pkts += s.source.pkts;
                f.bytes += s.source.bytes;
            }
        }
    }
    f
}

/// A built package: its files, by path inside the package directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub id: String,
    pub files: BTreeMap<String, Vec<u8>>,
    /// The packaging time, for tar headers.
    pub packaged_at_ns: u64,
}

fn media_type(path: &str) -> &'static str {
    if path.ends_with(".jsonl") {
        "application/jsonl"
    } else if path == "stix/bundle.json" {
        "application/stix+json;version=2.1"
    } else if path.ends_with(".json") {
        "application/json"
    } else if path.ends_with(".md") {
        "text/markdown; charset=utf-8"
    } else {
        "application/octet-stream"
    }
}

/// One line: the STIX bundle and the MISP event run to tens of megabytes for a large flood,
/// and machines read them (`jq .` shows them to a person).
pub(crate) fn compact(v: &serde_json::Value) -> Result<Vec<u8>> {
    let mut b = serde_json::to_vec(v)?;
    b.push(b'\n');
    Ok(b)
}

pub(crate) fn pretty(v: &serde_json::Value) -> Result<Vec<u8>> {
    let mut b = serde_json::to_vec_pretty(v)?;
    b.push(b'\n');
    Ok(b)
}

/// Builds and signs the package.
pub fn build(input: BuildInput<'_>, key: &SecretKey) -> Result<Package> {
    let c = ctx(input)?;
    let alert = c.alert();
    let one = std::slice::from_ref(&c);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert("evidence/flows.jsonl".into(), flows_jsonl(one)?);
    files.insert("evidence/alert.json".into(), pretty(&alert_view(&c)?)?);
    files.insert(
        "evidence/attribution.json".into(),
        attribution(&c, c.sources.iter().copied())?,
    );
    files.insert(
        "stix/bundle.json".into(),
        compact(&crate::stix::bundle(&c)?)?,
    );
    files.insert("misp/event.json".into(), compact(&crate::misp::event(&c))?);
    files.insert("request.md".into(), c.letter.clone().into_bytes());
    let log = custody_log(
        &files,
        one,
        &CustodyNotes {
            flows: format!(
                "{} flow records between the sources and the victim",
                c.flows.len()
            ),
            received: "received from the sensors",
            alerts_file: "evidence/alert.json",
            with_service: false,
            packaged: format!(
                "package {} for {}",
                c.package_id,
                c.planned().recipient.code
            ),
        },
    )?;
    files.insert(CUSTODY.into(), log);

    let norms = [
        alert.norms.violated.iter().collect(),
        alert.norms.request_basis.iter().collect(),
        alert.norms.caveats.iter().collect(),
    ];
    let (mut manifest, mut predicate) = statements(&c, &c.package_id, &c.action, norms);
    if let Some(cu) = &c.planned().campaign {
        for v in [&mut manifest, &mut predicate] {
            v["campaign"] = json!(cu.id);
            v["update_of"] = json!(cu.update_of);
        }
    }
    seal(&mut files, &mut manifest, predicate, key)?;
    Ok(Package {
        id: c.package_id,
        files,
        packaged_at_ns: input.packaged_at_ns,
    })
}

/// Builds and signs a campaign's request to one recipient: one package for several alerts
/// whose sources overlap (see [`crate::campaign`]). `members` holds one input per alert (its
/// planned package for this recipient, same recipient and State in each); they are taken in
/// order of window start, then alert id, whatever order they come in, so the same alerts give
/// the same bytes. The package names every impaired service and carries each alert's evidence:
/// `evidence/alerts.json` (every alert, cut down to this package's sources),
/// `evidence/flows.jsonl` (each alert's flows in turn), one `evidence/attribution.json` over
/// all sources; the STIX bundle holds each alert's incident, indicator, observed data and
/// sighting under one report, with one indicator over every listed source (the one a
/// follow-up's sighting names); the MISP event each alert's attributes; the letter every
/// service.
pub fn build_campaign(
    campaign: &str,
    members: &[BuildInput<'_>],
    key: &SecretKey,
) -> Result<Package> {
    let mut members: Vec<BuildInput<'_>> = members.to_vec();
    members.sort_by(|a, b| {
        (a.alert.window_start_ns, &a.alert.id).cmp(&(b.alert.window_start_ns, &b.alert.id))
    });
    let Some(first) = members.first().copied() else {
        return Err(Error::Build(
            "a campaign package needs at least one alert".into(),
        ));
    };
    let id = campaign_package_id(campaign, first.alert.window_start_ns, first.planned);
    let mut ctxs = Vec::with_capacity(members.len());
    for m in &members {
        if m.planned.recipient.code != first.planned.recipient.code
            || m.planned.about_state != first.planned.about_state
        {
            return Err(Error::Build(
                "a campaign package's alerts must be planned for one recipient and State".into(),
            ));
        }
        let mut c = ctx(*m)?;
        // Each alert's objects get ids of their own within the package.
        c.package_id = format!("{id}/{}", m.alert.id);
        ctxs.push(c);
    }
    let lead = &ctxs[0];
    let letter = crate::letter::campaign_letter(&ctxs, &id, campaign);
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    files.insert("evidence/flows.jsonl".into(), flows_jsonl(&ctxs)?);
    let views = ctxs.iter().map(alert_view).collect::<Result<Vec<_>>>()?;
    files.insert(
        "evidence/alerts.json".into(),
        pretty(&serde_json::Value::Array(views))?,
    );
    // One attribution over every source, in address order (a source named by several alerts
    // is looked up once: the same databases give the same answer).
    let mut sources: BTreeMap<IpAddr, &SourceEvidence> = BTreeMap::new();
    for c in &ctxs {
        for s in &c.sources {
            sources.entry(s.source.addr).or_insert(s);
        }
    }
    files.insert(
        "evidence/attribution.json".into(),
        attribution(lead, sources.into_values())?,
    );
    files.insert(
        "stix/bundle.json".into(),
        compact(&crate::stix::campaign_bundle(
            &ctxs, &id, campaign, &letter,
        )?)?,
    );
    files.insert(
        "misp/event.json".into(),
        compact(&crate::misp::campaign_event(&ctxs, &id, campaign))?,
    );
    files.insert("request.md".into(), letter.into_bytes());
    let n_flows: usize = ctxs.iter().map(|c| c.flows.len()).sum();
    let log = custody_log(
        &files,
        &ctxs,
        &CustodyNotes {
            flows: format!(
                "{n_flows} flow records of {} alerts between the sources and the victims",
                ctxs.len()
            ),
            received: "the first received from the sensors",
            alerts_file: "evidence/alerts.json",
            with_service: true,
            packaged: format!(
                "package {id} of campaign {campaign} ({} alerts) for {}",
                ctxs.len(),
                first.planned.recipient.code
            ),
        },
    )?;
    files.insert(CUSTODY.into(), log);

    let alert_ids: Vec<&str> = ctxs.iter().map(|c| c.alert().id.as_str()).collect();
    let services: Vec<String> = campaign_services(&ctxs);
    let norms = [
        norm_union(&ctxs, |a| &a.norms.violated),
        norm_union(&ctxs, |a| &a.norms.request_basis),
        norm_union(&ctxs, |a| &a.norms.caveats),
    ];
    let action = crate::letter::campaign_action(&ctxs);
    let (mut manifest, mut predicate) = statements(lead, &id, &action, norms);
    for v in [&mut manifest, &mut predicate] {
        v["alert_ids"] = json!(alert_ids);
        v["campaign"] = json!(campaign);
        v["services"] = json!(services);
    }
    seal(&mut files, &mut manifest, predicate, key)?;
    Ok(Package {
        id,
        files,
        packaged_at_ns: first.packaged_at_ns,
    })
}

/// Every flow record of the packages' alerts, one JSON object a line, alert by alert.
fn flows_jsonl(ctxs: &[Ctx<'_>]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for f in ctxs.iter().flat_map(|c| &c.flows) {
        serde_json::to_writer(&mut out, f)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// The alert as the detector raised it, cut down to this package's sources; its summary
/// (written for the operator, it may name any source) is replaced by this package's own.
fn alert_view(c: &Ctx<'_>) -> Result<serde_json::Value> {
    let wanted: BTreeSet<IpAddr> = c.sources.iter().map(|s| s.source.addr).collect();
    let mut v = c.alert().clone();
    v.top_sources.retain(|s| wanted.contains(&s.addr));
    v.summary = c.summary.clone();
    Ok(serde_json::to_value(&v)?)
}

/// `evidence/attribution.json`: the rule, routing and databases of `lead`'s plan, and each of
/// `sources` with its disposition and attribution.
fn attribution<'s>(
    lead: &Ctx<'_>,
    sources: impl Iterator<Item = &'s SourceEvidence>,
) -> Result<Vec<u8>> {
    pretty(&json!({
        "rule": lead.planned().rule,
        "routing": lead.planned().routing,
        "about_state": lead.planned().about_state,
        "databases": lead.input.geo,
        "sources": sources.map(|s| json!({
            "addr": s.source.addr,
            "disposition": s.disposition,
            "attribution": s.attribution,
        })).collect::<Vec<_>>(),
    }))
}

/// What a package's custody log says of its flows, its alerts and itself.
struct CustodyNotes<'a> {
    /// The flow records, counted (`N flow records between …`).
    flows: String,
    /// How the records' arrival was recorded (`received from the sensors`).
    received: &'a str,
    /// The file holding the alerts.
    alerts_file: &'a str,
    /// Whether each alert's entry names its service (a package of several alerts).
    with_service: bool,
    /// The packaging entry's note.
    packaged: String,
}

/// The custody log of a package of `ctxs`' alerts (files as built so far): capture by the
/// sensors, derivation of each alert and of the attribution, packaging. Each entry is the
/// moment the step was recorded by the stage that saw it: the flows' arrival from the
/// sensors (the first, for several alerts), the detector stage raising the alert. Where
/// nobody recorded it, the entry says so and carries the packaging time, never a back-dated
/// one.
fn custody_log(
    files: &BTreeMap<String, Vec<u8>>,
    ctxs: &[Ctx<'_>],
    notes: &CustodyNotes<'_>,
) -> Result<Vec<u8>> {
    let Some(lead) = ctxs.first() else {
        return Err(Error::Build("a package needs at least one alert".into()));
    };
    let created = &lead.created;
    let operator = &lead.input.operator.name;
    let digests: BTreeMap<&str, String> = files
        .iter()
        .map(|(p, b)| (p.as_str(), sha256_hex(b)))
        .collect();
    let subject = |name: &str| Subject {
        name: name.to_string(),
        sha256: digests.get(name).cloned().unwrap_or_default(),
    };
    let mut log = custody::Log::default();
    let sensors: BTreeSet<&str> = ctxs
        .iter()
        .flat_map(|c| c.flows.iter().map(|f| &*f.sensor_id))
        .collect();
    let sensors = if sensors.is_empty() {
        "unknown sensor".to_string()
    } else {
        sensors.into_iter().collect::<Vec<_>>().join(",")
    };
    let first_ns = ctxs.iter().map(|c| c.first_ns).min().unwrap_or_default();
    let last_ns = ctxs.iter().map(|c| c.last_ns).max().unwrap_or_default();
    let packet_times = format!(
        "packet times {} .. {}",
        rfc3339_ms(first_ns),
        rfc3339_ms(last_ns)
    );
    let flows = &notes.flows;
    let (at, note) = match ctxs.iter().filter_map(|c| c.input.flows_received_ns).min() {
        Some(t) => (
            rfc3339_ms(t),
            format!(
                "{flows}, {} by the packaging stage at this time; {packet_times}",
                notes.received
            ),
        ),
        None => (
            created.clone(),
            format!(
                "{flows}; their arrival was not recorded, this entry is the packaging time; \
                 {packet_times}"
            ),
        ),
    };
    log.push(custody::Event {
        action: Action::Captured,
        actor: format!("sensor {sensors}"),
        at,
        tool: "normwatch-sensor".into(),
        tool_version: TOOL_VERSION.into(),
        subjects: vec![subject("evidence/flows.jsonl")],
        note,
    })?;
    for c in ctxs {
        let alert = c.alert();
        let window = format!(
            "attack window {} .. {} (event time)",
            rfc3339_ms(alert.window_start_ns),
            rfc3339_ms(alert.window_end_ns)
        );
        let what = if notes.with_service {
            format!(
                "alert {} ({}, {})",
                alert.id,
                alert.kind.as_str(),
                alert.service
            )
        } else {
            format!("alert {} ({})", alert.id, alert.kind.as_str())
        };
        let (at, note) = match alert.raised_at_ns {
            Some(t) => (
                rfc3339_ms(t),
                format!(
                    "{what} raised by the detector stage, recorded on its arrival at the \
                     packaging stage at this time; {window}"
                ),
            ),
            None => (
                created.clone(),
                format!(
                    "{what}; the raise time was not recorded, this entry is the packaging \
                     time; {window}"
                ),
            ),
        };
        log.push(custody::Event {
            action: Action::Derived,
            actor: "normwatch detector stage".into(),
            at,
            tool: "normwatch-detect".into(),
            tool_version: TOOL_VERSION.into(),
            subjects: vec![subject(notes.alerts_file)],
            note,
        })?;
    }
    log.push(custody::Event {
        action: Action::Derived,
        actor: operator.clone(),
        at: created.clone(),
        tool: TOOL_NAME.into(),
        tool_version: TOOL_VERSION.into(),
        subjects: vec![subject("evidence/attribution.json")],
        note: format!(
            "source attribution from {}",
            lead.input
                .geo
                .iter()
                .map(|d| format!("{} (build {})", d.database_type, d.build_epoch))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    })?;
    log.push(custody::Event {
        action: Action::Packaged,
        actor: operator.clone(),
        at: created.clone(),
        tool: TOOL_NAME.into(),
        tool_version: TOOL_VERSION.into(),
        subjects: ["misp/event.json", "request.md", "stix/bundle.json"]
            .into_iter()
            .map(subject)
            .collect(),
        note: notes.packaged.clone(),
    })?;
    Ok(log.to_bytes())
}

/// The manifest (without its file list) and the signed predicate of package `id`, named
/// after `lead`'s alert, recipient and State, asking for `action` on the basis of `norms`
/// (violated if State-conducted, request basis, caveats).
fn statements(
    lead: &Ctx<'_>,
    id: &str,
    action: &str,
    norms: [Vec<&String>; 3],
) -> (serde_json::Value, serde_json::Value) {
    let p = lead.planned();
    let [violated, basis, caveats] = norms;
    let manifest = json!({
        "format": FORMAT,
        "package_id": id,
        "created": lead.created,
        "producer": {"organisation": lead.input.operator.name, "tool": TOOL_NAME, "tool_version": TOOL_VERSION},
        "alert_id": lead.alert().id,
        "recipient": p.recipient.code,
        "about_state": p.about_state,
        "routing": p.routing,
        "tlp": lead.input.settings.tlp.as_str(),
    });
    let predicate = json!({
        "package_id": id,
        "alert_id": lead.alert().id,
        "recipient": p.recipient.code,
        "about_state": p.about_state,
        "requested_action": action,
        "deadline": lead.deadline,
        "norms": {
            "violated_if_state_conducted": violated,
            "request_basis": basis,
            "caveats": caveats,
        },
    });
    (manifest, predicate)
}

/// The norms `f` picks of each alert of `ctxs`, in order, once each.
pub(crate) fn norm_union<'a>(
    ctxs: &'a [Ctx<'_>],
    f: fn(&Alert) -> &Vec<String>,
) -> Vec<&'a String> {
    let mut out: Vec<&String> = Vec::new();
    for c in ctxs {
        for n in f(c.alert()) {
            if !out.contains(&n) {
                out.push(n);
            }
        }
    }
    out
}

/// `service (asset)` of each alert of a campaign package, in order, once each.
pub(crate) fn campaign_services(ctxs: &[Ctx<'_>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in ctxs {
        let l = format!("{} ({})", c.alert().service, c.alert().asset);
        if !out.contains(&l) {
            out.push(l);
        }
    }
    out
}

/// Lists every file of `files` in `manifest` (with SHA-256, size and media type; the custody
/// log appendable), then adds the canonical manifest and its DSSE envelope: an in-toto
/// Statement whose subject is the manifest and whose predicate is `predicate`.
pub(crate) fn seal(
    files: &mut BTreeMap<String, Vec<u8>>,
    manifest: &mut serde_json::Value,
    predicate: serde_json::Value,
    key: &SecretKey,
) -> Result<()> {
    manifest["files"] = json!(files
        .iter()
        .map(|(p, b)| json!({
            "path": p, "sha256": sha256_hex(b), "size": b.len(), "media_type": media_type(p),
            // The custody log may grow after packaging, by signed `sent` entries only.
            "appendable": p == CUSTODY,
        }))
        .collect::<Vec<_>>());
    let manifest_bytes = jcs(&*manifest)?;
    let statement = json!({
        "_type": dsse::STATEMENT_TYPE,
        "subject": [{"name": MANIFEST, "digest": {"sha256": sha256_hex(&manifest_bytes)}}],
        "predicateType": dsse::PREDICATE_TYPE,
        "predicate": predicate,
    });
    let envelope = dsse::sign(&jcs(&statement)?, key);
    files.insert(ENVELOPE.into(), pretty(&serde_json::to_value(&envelope)?)?);
    files.insert(MANIFEST.into(), manifest_bytes);
    Ok(())
}

impl Package {
    /// Writes the package as `parent/<id>/…`; refuses to overwrite an existing directory.
    pub fn write_dir(&self, parent: &Path) -> Result<PathBuf> {
        let dir = parent.join(&self.id);
        std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        for (p, bytes) in &self.files {
            let path = dir.join(p);
            if let Some(d) = path.parent() {
                std::fs::create_dir_all(d).map_err(|e| Error::io(d, e))?;
            }
            std::fs::write(&path, bytes).map_err(|e| Error::io(&path, e))?;
        }
        Ok(dir)
    }

    /// The `.tar` of the package directory: entries under `<id>/`, sorted, with fixed owner,
    /// mode and the packaging time, so the archive is as reproducible as its files.
    pub fn tar_bytes(&self) -> Result<Vec<u8>> {
        let mut b = tar::Builder::new(Vec::new());
        let mtime = self.packaged_at_ns / 1_000_000_000;
        let dirs: BTreeSet<String> = self
            .files
            .keys()
            .flat_map(|p| parent_dirs(p))
            .map(str::to_string)
            .collect();
        let tar_err = |e: std::io::Error| Error::Build(format!("tar: {e}"));
        let mut entries: Vec<(String, Option<&Vec<u8>>)> = vec![(String::new(), None)];
        entries.extend(dirs.into_iter().map(|d| (d, None)));
        entries.extend(self.files.iter().map(|(p, b)| (p.clone(), Some(b))));
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (p, data) in entries {
            let mut h = tar::Header::new_ustar();
            h.set_mtime(mtime);
            h.set_uid(0);
            h.set_gid(0);
            let name = if p.is_empty() {
                format!("{}/", self.id)
            } else {
                format!("{}/{p}", self.id)
            };
            match data {
                Some(bytes) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(bytes.len() as u64);
                    b.append_data(&mut h, &name, bytes.as_slice())
                        .map_err(tar_err)?;
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, &name, std::io::empty())
                        .map_err(tar_err)?;
                }
            }
        }
        b.into_inner().map_err(tar_err)
    }

    /// Writes `parent/<id>.tar`.
    pub fn write_tar(&self, parent: &Path) -> Result<PathBuf> {
        let path = parent.join(format!("{}.tar", self.id));
        std::fs::write(&path, self.tar_bytes()?).map_err(|e| Error::io(&path, e))?;
        Ok(path)
    }
}

/// Records a delivery in the custody log of the package directory `dir`: a `sent` entry,
/// chained and signed with `key`, naming the signed manifest and the channel. The log is
/// replaced atomically (written beside the package directory, then renamed into it).
pub fn record_sent(
    dir: &Path,
    key: &SecretKey,
    actor: &str,
    channel: &str,
    at_ns: u64,
) -> Result<()> {
    let path = dir.join(CUSTODY);
    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
    let manifest = dir.join(MANIFEST);
    let m = std::fs::read(&manifest).map_err(|e| Error::io(&manifest, e))?;
    let out = custody::append_signed(
        &bytes,
        custody::Event {
            action: Action::Sent,
            actor: actor.to_string(),
            at: rfc3339_ms(at_ns),
            tool: TOOL_NAME.into(),
            tool_version: TOOL_VERSION.into(),
            subjects: vec![Subject {
                name: MANIFEST.into(),
                sha256: sha256_hex(&m),
            }],
            note: format!("sent via {channel}"),
        },
        key,
    )
    .map_err(|e| Error::Build(format!("{}: {e}", path.display())))?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir
        .parent()
        .unwrap_or(Path::new("."))
        .join(format!(".{name}.custody.tmp"));
    std::fs::write(&tmp, &out).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(())
}

/// Whether a routing goes through the national authority (for the letter and the STIX note):
/// the reason, and whether it may route the package onward.
pub(crate) fn via_authority(r: &Routing) -> Option<(&str, bool)> {
    match r {
        Routing::Direct => None,
        Routing::ViaNationalAuthority { reason } => Some((reason, true)),
        Routing::ForNationalAuthority { reason } => Some((reason, false)),
    }
}

/// The directories a relative path `a/b/c` lies in, outermost first: `a`, `a/b`.
pub(crate) fn parent_dirs(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

#[cfg(test)]
mod tests {
    #[test]
    fn parent_dirs_are_every_prefix_up_to_a_slash() {
        let dirs: Vec<&str> = super::parent_dirs("stix/x/bundle.json").collect();
        assert_eq!(dirs, ["stix", "stix/x"]);
        assert_eq!(super::parent_dirs("manifest.json").count(), 0);
    }
}
