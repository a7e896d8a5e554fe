//! The request letter (`request.md`) and the package's attack summary: what a duty officer at
//! the recipient reads first. Both are written from the package's own sources and flows (counts,
//! commands, victim, time window, N of M sources and their share), never from the detector's
//! summary, which is written for the operator and may name any source.

use crate::canon::rfc3339_s;
use crate::package::{norm_union, proto_label, via_authority, Ctx};
use crate::recipients::{Disposition, SourceEvidence};
use normwatch_model::{AlertKind, AlertState, IcsCounts};
use std::fmt::Write;

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

/// `1 234 567` (thin grouping a reader in any language parses).
fn num(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(ch);
    }
    out
}

fn kind_text(k: AlertKind) -> &'static str {
    match k {
        AlertKind::VolumetricFlood => "a volumetric flood",
        AlertKind::SynFlood => "a SYN flood",
        AlertKind::UdpAmplification => "a reflection/amplification flood",
        AlertKind::ServiceImpairment => "traffic that impaired the service",
        AlertKind::IcsCommandAbuse => "unauthorised industrial control commands",
        AlertKind::Scan => "a scan",
        AlertKind::BulkExfiltration => "a bulk transfer of data out of the asset",
        AlertKind::CarpetBombing => "a flood spread over many addresses (carpet bombing)",
    }
}

fn list<T: ToString>(items: impl IntoIterator<Item = T>) -> String {
    items
        .into_iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// `12 industrial commands over Modbus/TCP (10 write, 2 control; function codes 6, 16)`.
fn ics_text(proto: &str, c: &IcsCounts) -> Option<String> {
    let classes = [
        (c.read, "read"),
        (c.write, "write"),
        (c.control, "control"),
        (c.stop_restart, "stop/restart"),
        (c.program_firmware, "program/firmware"),
    ];
    let total: u64 = classes.iter().map(|(n, _)| u64::from(*n)).sum();
    if total == 0 {
        return None;
    }
    let parts = list(
        classes
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, name)| format!("{} {name}", num(u64::from(*n)))),
    );
    let codes = list(c.codes.iter());
    Some(format!(
        "{} industrial command{} over {proto} ({parts}; function code{} {codes})",
        num(total),
        if total == 1 { "" } else { "s" },
        if c.codes.iter().count() == 1 { "" } else { "s" },
    ))
}

/// The victim: the attacked addresses, ports and protocols seen in the package's flows.
fn victim_text(c: &Ctx<'_>) -> String {
    let alert = c.alert();
    let f = &c.facts;
    let mut s = format!(
        "{} ({} sector, asset `{}`",
        alert.service,
        alert.sector.as_str(),
        alert.asset
    );
    if !c.victims.is_empty() {
        let _ = write!(
            s,
            ", address{} {}",
            if c.victims.len() == 1 { "" } else { "es" },
            list(&c.victims)
        );
    }
    let ported = f.protos.iter().all(|p| matches!(p, 6 | 17 | 132));
    if !f.victim_ports.is_empty() && ported && f.victim_ports.len() <= 20 {
        let _ = write!(
            s,
            ", port{} {}",
            if f.victim_ports.len() == 1 { "" } else { "s" },
            list(&f.victim_ports)
        );
    } else if f.victim_ports.len() > 20 {
        let _ = write!(s, ", {} ports", f.victim_ports.len());
    }
    if !f.protos.is_empty() {
        let _ = write!(s, ", {}", list(f.protos.iter().map(|p| proto_label(*p))));
    }
    s.push(')');
    s
}

/// One paragraph on the attack as this package's sources show it.
pub(crate) fn summary(c: &Ctx<'_>) -> String {
    let alert = c.alert();
    let f = &c.facts;
    let mut s = format!(
        "{} against {} between {} and {} UTC.",
        capitalise(kind_text(alert.kind)),
        victim_text(c),
        rfc3339_s(c.first_ns),
        rfc3339_s(c.last_ns.max(alert.window_end_ns))
    );
    let sample = if (f.listed_sources as u64) < f.total_sources {
        format!(
            " The detector listed {} of them (the largest); the list is a sample.",
            num(f.listed_sources as u64)
        )
    } else {
        String::new()
    };
    if c.traceback() {
        let _ = write!(
            s,
            " The attack came from {} distinct source addresses, assessed as forged.{sample} \
             This package lists {} of them, which carried {} of the attack's packets.",
            num(f.total_sources),
            num(f.own_sources as u64),
            pct(f.own_share)
        );
    } else {
        let what = if c.request_sources().next().is_some() {
            format!("registered in {}", c.about())
        } else {
            "for providers' abuse desks".to_string()
        };
        let came = if f.total_known {
            format!(
                "The attack came from {} distinct source address{}.",
                num(f.total_sources),
                if f.total_sources == 1 { "" } else { "es" }
            )
        } else {
            format!(
                "The detector listed {} source address{} (the largest; it did not count all \
                 of the attack's sources).",
                num(f.total_sources),
                if f.total_sources == 1 { "" } else { "es" }
            )
        };
        let _ = write!(
            s,
            " {came}{sample} This package concerns {} of them, {what}, which carried {} of the \
             attack's packets ({} packets, {} bytes in the flows kept as evidence).",
            num(f.own_sources as u64),
            pct(f.own_share),
            num(f.pkts),
            num(f.bytes)
        );
    }
    for (proto, counts) in &f.ics {
        if let Some(t) = ics_text(proto, counts) {
            let _ = write!(s, " These sources sent {t}.");
        }
    }
    // Rates of the whole attack; an ICS command alert is about commands, not rates.
    let m = alert.measured;
    if alert.kind != AlertKind::IcsCommandAbuse && (m.pps > 0.0 || m.bps > 0.0) {
        let _ = write!(
            s,
            " At its peak second the whole attack measured {} packets/s, {} bit/s, {} new \
             flows/s.",
            num(m.pps.round() as u64),
            num(m.bps.round() as u64),
            num(m.new_flows_per_s.round() as u64)
        );
    }
    s
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

pub(crate) fn letter(c: &Ctx<'_>) -> String {
    let alert = c.alert();
    let p = c.planned();
    let mut s = String::new();
    // Writing into a String cannot fail; the results are ignored for that reason.
    if c.traceback() {
        let _ = writeln!(
            s,
            "# Request for traceback of a flood with forged source addresses\n"
        );
    } else {
        let _ = writeln!(
            s,
            "# Request for assistance in mitigating malicious ICT activity\n"
        );
    }
    let _ = writeln!(s, "- Package: `{}`", c.package_id);
    if let Some(cu) = &p.campaign {
        let _ = writeln!(
            s,
            "- Update of request `{}` (campaign `{}`): not a new request. The hosts named in \
             that request also attacked the service below; the campaign has impaired: {}.",
            cu.update_of,
            cu.id,
            cu.services.join("; ")
        );
    }
    let attacked = c.input.asset_operator.unwrap_or(&c.input.operator.name);
    let _ = writeln!(
        s,
        "- From: {}, sent by its own monitoring system (normwatch)",
        c.input.operator.name
    );
    if attacked != c.input.operator.name {
        let _ = writeln!(s, "- Operator of the attacked asset: {attacked}");
    }
    recipient_lines(&mut s, c);
    let _ = writeln!(
        s,
        "- Alert: `{}` ({}, severity {:?})",
        alert.id,
        alert.kind.as_str(),
        alert.severity
    );
    prepared_lines(&mut s, c);

    let _ = writeln!(s, "\n## The public service impaired\n");
    let _ = writeln!(s, "{}", c.summary);
    if let Some(i) = alert.impairment {
        if let Some(h) = i.handshake_completion {
            let base = i
                .baseline_handshake_completion
                .map(|b| format!(" (normally {})", pct(b)))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "\nShare of connection attempts to the service that completed: {}{base}.",
                pct(h)
            );
        }
        if let Some(r) = i.response_ratio {
            let _ = writeln!(
                s,
                "Share of requests to the service that got an answer: {}.",
                pct(r)
            );
        }
    }

    let _ = writeln!(s);
    timeline_head(&mut s, c.first_ns);
    let _ = writeln!(
        s,
        "- {}: alert raised (start of the attack window)",
        rfc3339_s(alert.window_start_ns)
    );
    let _ = writeln!(
        s,
        "- {}: latest evidence{}",
        rfc3339_s(c.last_ns.max(alert.window_end_ns)),
        if alert.state == AlertState::Closed {
            " (the attack has ended)"
        } else {
            " (the attack was ongoing when this package was prepared)"
        }
    );
    timeline_tail(&mut s, c);

    if c.traceback() {
        spoofing_section(&mut s, c);
    }

    let reqs: Vec<_> = c.request_sources().collect();
    if !reqs.is_empty() {
        let _ = writeln!(s, "\n## Sources registered in {}\n", c.about());
        let f = &c.facts;
        let _ = writeln!(
            s,
            "{} of the attack's {}{} sources, carrying {} of its packets.\n",
            num(f.own_sources as u64),
            if f.total_known { "" } else { "listed " },
            num(f.total_sources),
            pct(f.own_share)
        );
        table_head(&mut s, &[&SOURCE_COLUMNS[..5], &SOURCE_COLUMNS[5..]]);
        for e in &reqs {
            source_row(
                &mut s,
                e,
                None,
                c.source_window(e.source.addr),
                source_counts(c, e),
            );
        }
        location_notes(&mut s, &reqs);
    }
    let abuse: Vec<_> = c.abuse_sources().collect();
    if !abuse.is_empty() && c.traceback() {
        let _ = writeln!(
            s,
            "\n## Forged source addresses ({} of {}{})\n",
            num(abuse.len() as u64),
            num(c.facts.total_sources),
            if (abuse.len() as u64) < c.facts.total_sources {
                ", a sample"
            } else {
                ""
            }
        );
        let _ = writeln!(s, "These addresses appeared as sources but were forged: their registrants did not send the traffic. They are listed so the traceback can be matched against the upstream networks' records, not for action against them.\n");
        let _ = writeln!(s, "| address | packets | bytes |");
        let _ = writeln!(s, "|---|---|---|");
        for e in &abuse {
            let (pkts, bytes) = source_counts(c, e);
            let _ = writeln!(s, "| {} | {pkts} | {bytes} |", e.source.addr);
        }
    } else if !abuse.is_empty() {
        abuse_head(&mut s, &["address", "reason", "AS", "prefix", "registered"]);
        for e in &abuse {
            let a = &e.attribution;
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                e.source.addr,
                reason(e.disposition),
                as_cell(a),
                prefix_cell(a),
                a.registered_country.as_deref().unwrap_or("-")
            );
        }
    }

    action_and_basis(
        &mut s,
        c,
        &c.action,
        [
            alert.norms.request_basis.iter().collect(),
            alert.norms.violated.iter().collect(),
            alert.norms.caveats.iter().collect(),
        ],
    );

    let _ = writeln!(s, "\n## No attribution\n");
    if c.traceback() {
        let _ = writeln!(s, "**No attribution of this activity to any State is made by this request.** The source addresses are forged; no State is asked about them.");
    } else {
        let _ = writeln!(s, "**No attribution of this activity to any State is made by this request.** It asks the State from whose territory the activity emanates to help mitigate it. Source addresses may be spoofed or belong to compromised third-party hosts; the recipient State is chosen from where the address blocks are registered ({}), with geolocation as corroboration only.", p.rule);
    }
    let _ = writeln!(s, "\nThe evidence is limited to the sources in this package and the victim (data minimisation); personal data in it may be used only to mitigate this activity.");
    let _ = writeln!(s, "\n## Evidence\n");
    let _ = writeln!(s, "`stix/bundle.json` (STIX 2.1), `misp/event.json`, `evidence/flows.jsonl` ({} flow records), `evidence/alert.json`, `evidence/attribution.json`, `custody.jsonl`. `manifest.json` lists every file with its SHA-256; `manifest.intoto.dsse.json` signs it (Ed25519, DSSE, in-toto Statement v1).", c.flows.len());
    s
}

/// Requester, recipient, routing and handling lines of a letter's header.
fn recipient_lines(s: &mut String, c: &Ctx<'_>) {
    let p = c.planned();
    let tlp = c.input.settings.tlp;
    let _ = writeln!(
        s,
        "- Requesting State: {} (national authority: {})",
        c.input.requester.code, c.input.requester.name
    );
    let _ = writeln!(s, "- To: {} ({})", p.recipient.name, p.recipient.code);
    match via_authority(&p.routing) {
        None => {
            let _ = writeln!(
                s,
                "- Routing: sent directly to the point of contact of {}",
                p.recipient.code
            );
        }
        Some((reason, true)) => {
            let _ = writeln!(
                s,
                "- Routing: to the national authority, for onward routing to the State \
                 concerned ({}); reason: {reason}",
                c.about()
            );
        }
        Some((reason, false)) => {
            let _ = writeln!(
                s,
                "- Routing: to the national authority for its own action, not to be routed \
                 onward; reason: {reason}"
            );
        }
    }
    let _ = writeln!(
        s,
        "- Handling: TLP:{}{}, PAP:{} (the requested filtering is permitted)",
        tlp.as_str().to_uppercase(),
        if tlp.forbids_onward_routing() {
            " (not to be passed on)"
        } else {
            ""
        },
        c.input.settings.pap.as_str().to_uppercase()
    );
}

fn spoofing_section(s: &mut String, c: &Ctx<'_>) {
    let _ = writeln!(s, "\n## Why the source addresses are taken as forged\n");
    match &c.alert().spoofing {
        Some(a) if a.likely_spoofed => {
            let _ = writeln!(
                s,
                "- distinct source addresses: {}",
                num(a.distinct_sources)
            );
            if let Some(x) = a.one_packet_half_open_share {
                let _ = writeln!(
                    s,
                    "- share of connection attempts that were one packet and never completed: {}",
                    pct(x)
                );
            }
            if let Some(x) = a.seen_once_share {
                let _ = writeln!(s, "- share of sources seen in one flow only: {}", pct(x));
            }
            if let Some(x) = a.bogon_share {
                let _ = writeln!(
                    s,
                    "- share of sources in reserved or unallocated address space: {}",
                    pct(x)
                );
            }
            if let Some(x) = a.ttl_spread {
                let _ = writeln!(s, "- spread of the packets' IP TTLs: {x}");
            }
            if let Some(x) = a.source_port_spread {
                let _ = writeln!(
                    s,
                    "- spread of the packets' source ports: {}",
                    num(x.into())
                );
            }
            if !a.method.is_empty() {
                let _ = writeln!(s, "\nMethod: {}", a.method);
            }
        }
        _ => {
            let _ = writeln!(
                s,
                "The listed addresses cannot originate Internet traffic (reserved, private or \
                 documentation space) or were named as forged."
            );
        }
    }
}

fn as_cell(a: &crate::attribution::Attribution) -> String {
    a.asn
        .map(|n| format!("AS{n} {}", a.as_org.as_deref().unwrap_or("")))
        .unwrap_or_else(|| "-".into())
}

fn source_counts(c: &Ctx<'_>, e: &SourceEvidence) -> (u64, u64) {
    match c.per_source.get(&e.source.addr) {
        Some(f) if f.flows > 0 => (f.pkts, f.bytes),
        _ => (e.source.pkts, e.source.bytes),
    }
}

/// Registration and geolocation disagreeing, and represented countries, pointed out: the
/// recipient should know its sources are located elsewhere.
fn location_notes(s: &mut String, sources: &[&&SourceEvidence]) {
    let mut notes = Vec::new();
    for e in sources {
        let a = &e.attribution;
        if a.location_disagrees() {
            notes.push(format!(
                "- {}: registered in {}, geolocated in {}. The request goes to the State of \
                 registration; geolocation only corroborates it.",
                e.source.addr,
                a.registered_country.as_deref().unwrap_or("-"),
                a.geo_country.as_deref().unwrap_or("-")
            ));
        }
        if let Some(r) = &a.represented_country {
            notes.push(format!(
                "- {}: the address serves {r}'s representation (a military base or embassy).",
                e.source.addr
            ));
        }
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "\nLocation notes:\n");
        for n in notes {
            let _ = writeln!(s, "{n}");
        }
    }
}

/// The columns of a table of request sources (a campaign's adds `attacks` after the fifth).
const SOURCE_COLUMNS: [&str; 9] = [
    "address",
    "AS",
    "prefix",
    "registered",
    "geolocated",
    "first seen",
    "last seen",
    "packets",
    "bytes",
];

/// A Markdown table's header row and rule, its columns given in parts.
fn table_head(s: &mut String, parts: &[&[&str]]) {
    let columns: Vec<&str> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let _ = writeln!(s, "| {} |", columns.join(" | "));
    let _ = writeln!(s, "|{}", "---|".repeat(columns.len()));
}

/// An address block's prefix (the AS's announcement, else the registry's), or `-`.
fn prefix_cell(a: &crate::attribution::Attribution) -> String {
    a.asn_prefix
        .or(a.prefix)
        .map(|n| n.to_string())
        .unwrap_or_else(|| "-".into())
}

/// One row of a table of request sources (see [`SOURCE_COLUMNS`]), with the attacks that
/// named the source where the package has several.
fn source_row(
    s: &mut String,
    e: &SourceEvidence,
    attacks: Option<String>,
    (first, last): (u64, u64),
    (pkts, bytes): (u64, u64),
) {
    let a = &e.attribution;
    let attacks = attacks.map(|l| format!("{l} | ")).unwrap_or_default();
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} | {attacks}{} | {} | {pkts} | {bytes} |",
        e.source.addr,
        as_cell(a),
        prefix_cell(a),
        a.registered_country.as_deref().unwrap_or("-"),
        a.geo_country.as_deref().unwrap_or("-"),
        rfc3339_s(first),
        rfc3339_s(last),
    );
}

/// Why a source goes to providers' abuse desks rather than to its State.
fn reason(d: Disposition) -> &'static str {
    match d {
        Disposition::Reflector => "reflector",
        Disposition::Spoofed => "forged",
        Disposition::Anonymiser => "anonymiser",
        Disposition::SatelliteProvider => "satellite provider",
        Disposition::StateRequest => "",
    }
}

/// The heading, explanation and table header of the providers' abuse-desk section.
fn abuse_head(s: &mut String, columns: &[&str]) {
    let _ = writeln!(
        s,
        "\n## For providers' abuse desks (no request to the State about these)\n"
    );
    let _ = writeln!(s, "These addresses carried attack traffic but are not its origin: reflectors answering forged requests, anonymisers (VPN, Tor, proxies) or satellite providers serving users in many countries. Please pass them to the operators of the networks concerned.\n");
    table_head(s, &[columns]);
}

/// The preparation time and, where the recipient prefers another, the letter's language.
fn prepared_lines(s: &mut String, c: &Ctx<'_>) {
    let _ = writeln!(s, "- Prepared: {} UTC", rfc3339_s(c.input.packaged_at_ns));
    let p = c.planned();
    if p.recipient.language != "en" {
        let _ = writeln!(
            s,
            "- Language: this letter is in English; the recipient's preferred language is `{}`.",
            p.recipient.language
        );
    }
}

/// The timeline's heading and its first entry, the sources' first traffic.
fn timeline_head(s: &mut String, first_ns: u64) {
    let _ = writeln!(s, "## Timeline (UTC)\n");
    let _ = writeln!(
        s,
        "- {}: first traffic from the sources in this package",
        rfc3339_s(first_ns)
    );
}

/// The timeline's last entry, the packaging, and what its times are.
fn timeline_tail(s: &mut String, c: &Ctx<'_>) {
    let _ = writeln!(
        s,
        "- {}: package prepared",
        rfc3339_s(c.input.packaged_at_ns)
    );
    let _ = writeln!(s, "\nTimes are event times from the captured packets.");
}

/// The action requested with `c`'s deadline, and the norms it rests on: `norms` are the
/// request basis, the norms violated if State-conducted and the caveats, each with its text
/// from `c`'s catalogue.
fn action_and_basis(s: &mut String, c: &Ctx<'_>, action: &str, norms: [Vec<&String>; 3]) {
    let _ = writeln!(s, "\n## Action requested\n");
    let _ = writeln!(s, "{action}\n");
    let _ = writeln!(s, "We ask for a reply by **{} UTC** through the channel this package arrived on, stating what was done.", c.deadline);

    let _ = writeln!(s, "\n## Basis\n");
    let norm = |id: &String| match c.input.norms.get(id) {
        Some(n) => format!("- {} ({}): {}", n.reference, n.short, n.text),
        None => format!("- {id}"),
    };
    let [basis, violated, caveats] = norms;
    let sections = [
        ("This request rests on:\n", basis),
        ("\nThe activity is of a kind that would be contrary to the following norms if it were conducted or knowingly supported by a State:\n", violated),
        ("\nCaveats and handling:\n", caveats),
    ];
    for (title, ids) in sections {
        if !ids.is_empty() {
            let _ = writeln!(s, "{title}");
            for id in ids {
                let _ = writeln!(s, "{}", norm(id));
            }
        }
    }
    let _ = writeln!(
        s,
        "\nNorm texts are paraphrases; the reference names the official text."
    );
}

/// The action a campaign package asks for: each distinct action of its alerts, in order.
pub(crate) fn campaign_action(ctxs: &[Ctx<'_>]) -> String {
    let mut actions: Vec<&str> = Vec::new();
    for c in ctxs {
        if !actions.contains(&c.action.as_str()) {
            actions.push(&c.action);
        }
    }
    actions.join(" ")
}

/// The letter of a campaign's request to one State: every impaired service with its own
/// summary, one table of every listed source over all the alerts, one request.
pub(crate) fn campaign_letter(ctxs: &[Ctx<'_>], id: &str, campaign: &str) -> String {
    let first = &ctxs[0];
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Request for assistance in mitigating malicious ICT activity\n"
    );
    let _ = writeln!(s, "- Package: `{id}`");
    let services = crate::package::campaign_services(ctxs);
    let _ = writeln!(
        s,
        "- Campaign: `{campaign}`: {} attacks from overlapping hosts on {} service{} (one request \
         for all of them): {}",
        ctxs.len(),
        services.len(),
        if services.len() == 1 { "" } else { "s" },
        services.join("; ")
    );
    let _ = writeln!(
        s,
        "- From: {}, sent by its own monitoring system (normwatch)",
        first.input.operator.name
    );
    let mut attacked: Vec<&str> = Vec::new();
    for c in ctxs {
        let a = c.input.asset_operator.unwrap_or(&c.input.operator.name);
        if a != c.input.operator.name && !attacked.contains(&a) {
            attacked.push(a);
        }
    }
    if !attacked.is_empty() {
        let _ = writeln!(
            s,
            "- Operators of the attacked assets: {}",
            attacked.join("; ")
        );
    }
    recipient_lines(&mut s, first);
    for c in ctxs {
        let a = c.alert();
        let _ = writeln!(
            s,
            "- Alert: `{}` ({}, severity {:?}) on {}",
            a.id,
            a.kind.as_str(),
            a.severity,
            a.service
        );
    }
    prepared_lines(&mut s, first);

    let _ = writeln!(s, "\n## The public services impaired\n");
    for (i, c) in ctxs.iter().enumerate() {
        let a = c.alert();
        let _ = writeln!(s, "### {}. {} ({})\n", i + 1, a.service, a.asset);
        let _ = writeln!(s, "{}", c.summary);
        if let Some(h) = a.impairment.and_then(|i| i.handshake_completion) {
            let _ = writeln!(
                s,
                "\nShare of connection attempts to the service that completed: {}.",
                pct(h)
            );
        }
        let _ = writeln!(s);
    }

    timeline_head(
        &mut s,
        ctxs.iter().map(|c| c.first_ns).min().unwrap_or_default(),
    );
    for c in ctxs {
        let a = c.alert();
        let _ = writeln!(
            s,
            "- {} .. {}: attack on {}{}",
            rfc3339_s(a.window_start_ns),
            rfc3339_s(c.last_ns.max(a.window_end_ns)),
            a.service,
            if a.state == AlertState::Closed {
                " (ended)"
            } else {
                " (ongoing when this package was prepared)"
            }
        );
    }
    timeline_tail(&mut s, first);

    // Every source once, with its traffic summed over the alerts.
    type Row<'a> = (&'a SourceEvidence, u64, u64, u64, u64, Vec<usize>);
    let mut rows: std::collections::BTreeMap<std::net::IpAddr, Row<'_>> =
        std::collections::BTreeMap::new();
    for (i, c) in ctxs.iter().enumerate() {
        for e in &c.sources {
            let (f, l) = c.source_window(e.source.addr);
            let (pk, by) = source_counts(c, e);
            let r = rows
                .entry(e.source.addr)
                .or_insert((e, f, l, 0, 0, Vec::new()));
            r.1 = r.1.min(f);
            r.2 = r.2.max(l);
            r.3 += pk;
            r.4 += by;
            r.5.push(i + 1);
        }
    }
    let reqs: Vec<&Row<'_>> = rows
        .values()
        .filter(|r| r.0.disposition == Disposition::StateRequest)
        .collect();
    if !reqs.is_empty() {
        let _ = writeln!(s, "\n## Sources registered in {}\n", first.about());
        let _ = writeln!(
            s,
            "{} source{} named in the attacks above (the attack column gives their numbers).\n",
            num(reqs.len() as u64),
            if reqs.len() == 1 { "" } else { "s" }
        );
        table_head(
            &mut s,
            &[&SOURCE_COLUMNS[..5], &["attacks"], &SOURCE_COLUMNS[5..]],
        );
        for (e, f, l, pk, by, attacks) in &reqs {
            source_row(&mut s, e, Some(list(attacks)), (*f, *l), (*pk, *by));
        }
        let evidence: Vec<&&SourceEvidence> = reqs.iter().map(|r| &r.0).collect();
        location_notes(&mut s, &evidence);
    }
    let abuse: Vec<&Row<'_>> = rows
        .values()
        .filter(|r| r.0.disposition != Disposition::StateRequest)
        .collect();
    if !abuse.is_empty() {
        abuse_head(
            &mut s,
            &["address", "reason", "AS", "registered", "attacks"],
        );
        for (e, _, _, _, _, attacks) in &abuse {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                e.source.addr,
                reason(e.disposition),
                as_cell(&e.attribution),
                e.attribution.registered_country.as_deref().unwrap_or("-"),
                list(attacks)
            );
        }
    }

    action_and_basis(
        &mut s,
        first,
        &campaign_action(ctxs),
        [
            norm_union(ctxs, |a| &a.norms.request_basis),
            norm_union(ctxs, |a| &a.norms.violated),
            norm_union(ctxs, |a| &a.norms.caveats),
        ],
    );
    let _ = writeln!(s, "\n## No attribution\n");
    let _ = writeln!(s, "**No attribution of this activity to any State is made by this request.** It asks the State from whose territory the activity emanates to help mitigate it. The attacks are grouped because they came from overlapping hosts within a short time, not because any actor was identified. Source addresses may be spoofed or belong to compromised third-party hosts; the recipient State is chosen from where the address blocks are registered ({}), with geolocation as corroboration only.", first.planned().rule);
    let _ = writeln!(s, "\nThe evidence is limited to the sources in this package and the victims (data minimisation); personal data in it may be used only to mitigate this activity.");
    let _ = writeln!(s, "\n## Evidence\n");
    let n_flows: usize = ctxs.iter().map(|c| c.flows.len()).sum();
    let _ = writeln!(s, "`stix/bundle.json` (STIX 2.1: one report over each attack's incident, indicator and observed data), `misp/event.json`, `evidence/flows.jsonl` ({n_flows} flow records, attack by attack), `evidence/alerts.json` (the {} alerts, in the order above), `evidence/attribution.json`, `custody.jsonl`. `manifest.json` lists every file with its SHA-256; `manifest.intoto.dsse.json` signs it (Ed25519, DSSE, in-toto Statement v1).", ctxs.len());
    s
}
