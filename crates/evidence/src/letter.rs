//! The request letter (`request.md`): what a duty officer at the recipient reads first.

use crate::canon::rfc3339_s;
use crate::package::{via_authority, Ctx};
use crate::recipients::Disposition;
use std::fmt::Write;

fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

pub(crate) fn letter(c: &Ctx<'_>) -> String {
    let alert = c.alert();
    let p = c.planned();
    let mut s = String::new();
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = writeln!(
        s,
        "# Request for assistance in mitigating malicious ICT activity\n"
    );
    let _ = writeln!(s, "- Package: `{}`", c.package_id);
    let _ = writeln!(
        s,
        "- From: {} ({}), on behalf of the operator {}",
        c.input.requester.name, c.input.requester.code, c.input.operator.name
    );
    let _ = writeln!(s, "- To: {} ({})", p.recipient.name, p.recipient.code);
    if let Some(reason) = via_authority(&p.routing) {
        let _ = writeln!(s, "- Routing: for onward routing by the national authority to the State concerned ({}); reason: {reason}", c.about());
    }
    let _ = writeln!(
        s,
        "- Handling: TLP:{}, PAP:{}",
        c.input.settings.tlp.as_str().to_uppercase(),
        c.input.settings.pap.as_str().to_uppercase()
    );
    let _ = writeln!(
        s,
        "- Alert: `{}` ({}, severity {:?})",
        alert.id,
        alert.kind.as_str(),
        alert.severity
    );
    let _ = writeln!(s, "- Prepared: {} UTC", rfc3339_s(c.input.packaged_at_ns));
    if p.recipient.language != "en" {
        let _ = writeln!(
            s,
            "- Language: this letter is in English; the recipient's preferred language is `{}`.",
            p.recipient.language
        );
    }

    let _ = writeln!(s, "\n## The public service impaired\n");
    let _ = writeln!(
        s,
        "{} ({} sector, asset `{}`) was attacked: {}.",
        alert.service,
        alert.sector.as_str(),
        alert.asset,
        alert.summary
    );
    let m = alert.measured;
    let _ = writeln!(
        s,
        "\nMeasured at its peak second: {:.0} packets/s, {:.0} bit/s, {:.0} new flows/s.",
        m.pps, m.bps, m.new_flows_per_s
    );
    if let Some(i) = alert.impairment {
        if let Some(h) = i.handshake_completion {
            let base = i
                .baseline_handshake_completion
                .map(|b| format!(" (normally {})", pct(b)))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "Share of connection attempts to the service that completed: {}{base}.",
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

    let _ = writeln!(s, "\n## Timeline (UTC)\n");
    let _ = writeln!(
        s,
        "- {}: first traffic from the sources in this package",
        rfc3339_s(c.first_ns)
    );
    let _ = writeln!(
        s,
        "- {}: alert raised (start of the attack window)",
        rfc3339_s(alert.window_start_ns)
    );
    let _ = writeln!(
        s,
        "- {}: latest evidence{}",
        rfc3339_s(c.last_ns.max(alert.window_end_ns)),
        if alert.state == normwatch_model::AlertState::Closed {
            " (the attack has ended)"
        } else {
            " (the attack was ongoing when this package was prepared)"
        }
    );
    let _ = writeln!(
        s,
        "- {}: package prepared",
        rfc3339_s(c.input.packaged_at_ns)
    );
    let _ = writeln!(s, "\nTimes are event times from the captured packets.");

    let reqs: Vec<_> = c.request_sources().collect();
    if !reqs.is_empty() {
        let _ = writeln!(s, "\n## Sources registered in {}\n", c.about());
        let _ = writeln!(s, "| address | AS | prefix | registered | geolocated | first seen | last seen | packets | bytes |");
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
        for e in reqs {
            row(&mut s, c, e);
        }
    }
    let abuse: Vec<_> = c.abuse_sources().collect();
    if !abuse.is_empty() {
        let _ = writeln!(
            s,
            "\n## For providers' abuse desks (no request to the State about these)\n"
        );
        let _ = writeln!(s, "These addresses carried attack traffic but are not its origin: reflectors answering spoofed requests, spoofed addresses, or anonymisers. Please pass them to the operators of the networks concerned.\n");
        let _ = writeln!(s, "| address | reason | AS | prefix | registered |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for e in abuse {
            let reason = match e.disposition {
                Disposition::Reflector => "reflector",
                Disposition::Spoofed => "spoofed",
                Disposition::Anonymiser => "anonymiser",
                Disposition::StateRequest => "",
            };
            let a = &e.attribution;
            let _ = writeln!(
                s,
                "| {} | {reason} | {} | {} | {} |",
                e.source.addr,
                a.asn
                    .map(|n| format!("AS{n} {}", a.as_org.as_deref().unwrap_or("")))
                    .unwrap_or_else(|| "-".into()),
                a.asn_prefix
                    .or(a.prefix)
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                a.registered_country.as_deref().unwrap_or("-")
            );
        }
    }

    let _ = writeln!(s, "\n## Action requested\n");
    let _ = writeln!(s, "{}\n", c.action);
    let _ = writeln!(s, "We ask for a reply by **{} UTC** through the channel this package arrived on, stating what was done.", c.deadline);

    let _ = writeln!(s, "\n## Basis\n");
    let norm = |id: &String| match c.input.norms.get(id) {
        Some(n) => format!("- {} ({}): {}", n.reference, n.short, n.text),
        None => format!("- {id}"),
    };
    if !alert.norms.request_basis.is_empty() {
        let _ = writeln!(s, "This request rests on:\n");
        for id in &alert.norms.request_basis {
            let _ = writeln!(s, "{}", norm(id));
        }
    }
    if !alert.norms.violated.is_empty() {
        let _ = writeln!(s, "\nThe activity is of a kind that would be contrary to the following norms if it were conducted or knowingly supported by a State:\n");
        for id in &alert.norms.violated {
            let _ = writeln!(s, "{}", norm(id));
        }
    }
    if !alert.norms.caveats.is_empty() {
        let _ = writeln!(s, "\nCaveats and handling:\n");
        for id in &alert.norms.caveats {
            let _ = writeln!(s, "{}", norm(id));
        }
    }
    let _ = writeln!(
        s,
        "\nNorm texts are paraphrases; the reference names the official text."
    );

    let _ = writeln!(s, "\n## No attribution\n");
    let _ = writeln!(s, "**No attribution of this activity to any State is made by this request.** It asks the State from whose territory the activity emanates to help mitigate it. Source addresses may be spoofed or belong to compromised third-party hosts; the recipient State is chosen from where the address blocks are registered ({}), with geolocation as corroboration only.", p.rule);
    let _ = writeln!(s, "\nThe evidence is limited to the sources in this package and the victim (data minimisation); personal data in it may be used only to mitigate this activity.");
    let _ = writeln!(s, "\n## Evidence\n");
    let _ = writeln!(s, "`stix/bundle.json` (STIX 2.1), `misp/event.json`, `evidence/flows.jsonl` ({} flow records), `evidence/alert.json`, `evidence/attribution.json`, `custody.jsonl`. `manifest.json` lists every file with its SHA-256; `manifest.intoto.dsse.json` signs it (Ed25519, DSSE, in-toto Statement v1).", c.flows.len());
    s
}

fn row(s: &mut String, c: &Ctx<'_>, e: &crate::recipients::SourceEvidence) {
    let a = &e.attribution;
    let (first, last) = c.source_window(e.source.addr);
    let (pkts, bytes) = match c.per_source.get(&e.source.addr) {
        Some(f) if f.flows > 0 => (f.pkts, f.bytes),
        _ => (e.source.pkts, e.source.bytes),
    };
    let _ = writeln!(
        s,
        "| {} | {} | {} | {} | {} | {} | {} | {pkts} | {bytes} |",
        e.source.addr,
        a.asn
            .map(|n| format!("AS{n} {}", a.as_org.as_deref().unwrap_or("")))
            .unwrap_or_else(|| "-".into()),
        a.asn_prefix
            .or(a.prefix)
            .map(|n| n.to_string())
            .unwrap_or_else(|| "-".into()),
        a.registered_country.as_deref().unwrap_or("-"),
        a.geo_country.as_deref().unwrap_or("-"),
        rfc3339_s(first),
        rfc3339_s(last),
    );
}
