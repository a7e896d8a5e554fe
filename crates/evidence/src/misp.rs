//! The MISP event (`misp/event.json`): the same facts for CSIRTs that run MISP, with `tlp:`,
//! `PAP:` and `rsit:` tags from the MISP taxonomies and our `cyber-norms:` local taxonomy
//! (`config/misp-taxonomies/cyber-norms/machinetag.json`) so the recipient's tooling can triage
//! it.

use crate::package::Ctx;
use crate::recipients::Disposition;
use crate::stix::NORMWATCH_NAMESPACE;
use normwatch_model::{AlertKind, AlertState, Severity};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use uuid::Uuid;

/// The RSIT (Reference Security Incident Taxonomy) tag of an alert kind.
pub fn rsit_tag(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::VolumetricFlood
        | AlertKind::SynFlood
        | AlertKind::UdpAmplification
        | AlertKind::ServiceImpairment
        | AlertKind::CarpetBombing => "rsit:availability=\"ddos\"",
        AlertKind::IcsCommandAbuse => {
            "rsit:information-content-security=\"unauthorised-information-modification\""
        }
        AlertKind::Scan => "rsit:information-gathering=\"scanner\"",
        AlertKind::BulkExfiltration => {
            "rsit:information-content-security=\"unauthorised-information-access\""
        }
    }
}

/// Our norm machine tag for a catalogue id: `ungge2015.13f` → `cyber-norms:un-gge-2015="13f"`.
pub fn norm_tag(id: &str) -> String {
    let (ns, rest) = id.split_once('.').unwrap_or(("other", id));
    let predicate = match ns {
        "ungge2015" => "un-gge-2015",
        "us2015" => "us-2015",
        "osce" => "osce-cbm",
        other => other,
    };
    format!("cyber-norms:{predicate}=\"{rest}\"")
}

pub(crate) fn event(c: &Ctx<'_>) -> Value {
    let alert = c.alert();
    let ts = (c.input.packaged_at_ns / 1_000_000_000).to_string();
    let uuid = |what: &str| {
        Uuid::new_v5(
            &NORMWATCH_NAMESPACE,
            format!("{}/misp/{what}", c.package_id).as_bytes(),
        )
        .to_string()
    };
    let tag = |name: String| json!({"name": name});
    let mut tags = vec![
        tag(format!("tlp:{}", c.input.settings.tlp.as_str())),
        tag(c.input.settings.pap.misp_tag().to_string()),
        tag(rsit_tag(alert.kind).to_string()),
    ];
    let mut norm_ids: Vec<&String> = alert
        .norms
        .violated
        .iter()
        .chain(&alert.norms.request_basis)
        .chain(&alert.norms.caveats)
        .collect();
    norm_ids.dedup();
    let mut seen = std::collections::BTreeSet::new();
    for id in norm_ids {
        if seen.insert(id) {
            tags.push(tag(norm_tag(id)));
        }
    }
    let mut attrs = Vec::new();
    let mut asns = BTreeMap::new();
    for s in &c.sources {
        let a = s.source.addr;
        let (first, last) = c.source_window(a);
        let comment = match s.disposition {
            Disposition::StateRequest => format!(
                "source registered in {}{}",
                s.attribution.registered_country.as_deref().unwrap_or("?"),
                s.attribution
                    .asn
                    .map(|n| format!(", AS{n}"))
                    .unwrap_or_default()
            ),
            Disposition::Reflector => {
                "reflector answering spoofed requests: for the provider's abuse desk".into()
            }
            Disposition::Spoofed => {
                "forged source address: not the origin, no action against it".into()
            }
            Disposition::Anonymiser => {
                "VPN, Tor exit or proxy: for the provider's abuse desk".into()
            }
            Disposition::SatelliteProvider => {
                "satellite provider serving many countries: for the provider's abuse desk".into()
            }
        };
        let attr_tags: Vec<Value> = match s.disposition {
            Disposition::Reflector => vec![tag("rsit:vulnerable=\"ddos-amplifier\"".into())],
            _ => Vec::new(),
        };
        attrs.push(json!({
            "Tag": attr_tags,
            "uuid": uuid(&format!("ip-src/{a}")),
            "type": "ip-src",
            "category": "Network activity",
            "value": a.to_string(),
            "to_ids": s.disposition == Disposition::StateRequest,
            "comment": comment,
            "timestamp": ts,
            "first_seen": crate::canon::rfc3339_ms(first),
            "last_seen": crate::canon::rfc3339_ms(last),
        }));
        if let Some(n) = s.attribution.asn {
            asns.entry(n).or_insert(s.attribution.as_org.clone());
        }
    }
    for (n, org) in asns {
        attrs.push(json!({
            "uuid": uuid(&format!("AS/{n}")),
            "type": "AS",
            "category": "Network activity",
            "value": format!("AS{n}"),
            "to_ids": false,
            "comment": org.unwrap_or_default(),
            "timestamp": ts,
        }));
    }
    for v in &c.victims {
        attrs.push(json!({
            "uuid": uuid(&format!("ip-dst/{v}")),
            "type": "ip-dst",
            "category": "Network activity",
            "value": v.to_string(),
            "to_ids": false,
            "comment": format!("victim: {}", alert.service),
            "timestamp": ts,
        }));
    }
    attrs.push(json!({
        "uuid": uuid("summary"),
        "type": "text",
        "category": "Other",
        "value": c.summary,
        "to_ids": false,
        "comment": "the attack as this package's sources show it",
        "timestamp": ts,
    }));
    let threat_level = match alert.severity {
        Severity::Critical | Severity::High => "1",
        Severity::Medium => "2",
        Severity::Low => "3",
    };
    let analysis = if alert.state == AlertState::Closed {
        "2"
    } else {
        "1"
    };
    json!({"Event": {
        "uuid": uuid("event"),
        "info": if c.traceback() {
            format!(
                "{}: {} against {} with forged sources — traceback request ({})",
                c.package_id, alert.kind.as_str(), alert.service, alert.id
            )
        } else {
            format!(
                "{}: {} against {} — request to {} for mitigation ({})",
                c.package_id, alert.kind.as_str(), alert.service, c.about(), alert.id
            )
        },
        "date": crate::canon::date(alert.window_start_ns),
        "timestamp": ts,
        "publish_timestamp": ts,
        "threat_level_id": threat_level,
        "analysis": analysis,
        // Organisation only: the recipient decides whether to share further, within the TLP.
        "distribution": "0",
        "published": false,
        "Orgc": orgc(c),
        "Tag": tags,
        "Attribute": attrs,
    }})
}

/// The reporting organisation, the same in every package: its id depends on its name only.
fn orgc(c: &Ctx<'_>) -> Value {
    json!({
        "name": c.input.operator.name,
        "uuid": crate::stix::org_uuid("operator", &c.input.operator.name).to_string(),
    })
}

/// The MISP event of a campaign package: each alert's attributes (an address named by several
/// alerts once, with the first alert's comment), the tags of every alert, one text attribute
/// naming the campaign and its services.
pub(crate) fn campaign_event(ctxs: &[Ctx<'_>], id: &str, campaign: &str) -> Value {
    let first = &ctxs[0];
    let ts = (first.input.packaged_at_ns / 1_000_000_000).to_string();
    let uuid = |what: &str| {
        Uuid::new_v5(&NORMWATCH_NAMESPACE, format!("{id}/misp/{what}").as_bytes()).to_string()
    };
    let mut tags: Vec<Value> = Vec::new();
    let mut attrs: Vec<Value> = Vec::new();
    let mut values: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut threat = "3".to_string();
    let mut analysis = "2";
    for c in ctxs {
        let e = event(c);
        let e = &e["Event"];
        for t in e["Tag"].as_array().into_iter().flatten() {
            if !tags.contains(t) {
                tags.push(t.clone());
            }
        }
        for a in e["Attribute"].as_array().into_iter().flatten() {
            let key = (
                a["type"].as_str().unwrap_or_default().to_string(),
                a["value"].as_str().unwrap_or_default().to_string(),
            );
            match values.get(&key) {
                None => {
                    values.insert(key, attrs.len());
                    attrs.push(a.clone());
                }
                // One attribute per value (MISP refuses duplicates in an event); a victim
                // address of several services names each.
                Some(&i) => {
                    let add = a["comment"].as_str().unwrap_or_default();
                    let had = attrs[i]["comment"].as_str().unwrap_or_default().to_string();
                    if !add.is_empty() && !had.split("; ").any(|c| c == add) {
                        attrs[i]["comment"] = json!(format!("{had}; {add}"));
                    }
                }
            }
        }
        let t = e["threat_level_id"].as_str().unwrap_or("3");
        if t < threat.as_str() {
            threat = t.to_string();
        }
        if e["analysis"] != "2" {
            analysis = "1";
        }
    }
    let services = crate::package::campaign_services(ctxs);
    attrs.push(json!({
        "uuid": uuid("campaign"),
        "type": "text",
        "category": "Other",
        "value": format!(
            "Campaign {campaign}: {} attacks from overlapping hosts on {}",
            ctxs.len(),
            services.join("; ")
        ),
        "to_ids": false,
        "comment": "the alerts this request groups",
        "timestamp": ts,
    }));
    let start = ctxs
        .iter()
        .map(|c| c.alert().window_start_ns)
        .min()
        .unwrap_or_default();
    json!({"Event": {
        "uuid": uuid("event"),
        "info": format!(
            "{id}: campaign {campaign} against {} — request to {} for mitigation ({})",
            services.join("; "),
            first.about(),
            ctxs.iter().map(|c| c.alert().id.as_str()).collect::<Vec<_>>().join(", ")
        ),
        "date": crate::canon::date(start),
        "timestamp": ts,
        "publish_timestamp": ts,
        "threat_level_id": threat,
        "analysis": analysis,
        "distribution": "0",
        "published": false,
        "Orgc": orgc(first),
        "Tag": tags,
        "Attribute": attrs,
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_tags_use_one_namespace_per_framework() {
        assert_eq!(norm_tag("ungge2015.13f"), "cyber-norms:un-gge-2015=\"13f\"");
        assert_eq!(
            norm_tag("us2015.no-ci-damage"),
            "cyber-norms:us-2015=\"no-ci-damage\""
        );
        assert_eq!(norm_tag("osce.cbm03"), "cyber-norms:osce-cbm=\"cbm03\"");
        assert_eq!(rsit_tag(AlertKind::SynFlood), "rsit:availability=\"ddos\"");
    }

    /// Every norm of the shipped catalogue has its value in the local MISP taxonomy, so a
    /// recipient that loads the taxonomy knows every `cyber-norms:` tag a package carries.
    #[test]
    fn every_catalogue_norm_is_a_value_of_the_cyber_norms_taxonomy() {
        let tax: Value = serde_json::from_str(include_str!(
            "../../../config/misp-taxonomies/cyber-norms/machinetag.json"
        ))
        .unwrap();
        let mut known = std::collections::BTreeSet::new();
        for v in tax["values"].as_array().unwrap() {
            for e in v["entry"].as_array().unwrap() {
                known.insert(format!(
                    "cyber-norms:{}=\"{}\"",
                    v["predicate"].as_str().unwrap(),
                    e["value"].as_str().unwrap()
                ));
            }
        }
        let cat: toml::Value = toml::from_str(include_str!("../../../config/norms.toml")).unwrap();
        let norms = cat["norm"].as_array().unwrap();
        assert!(!norms.is_empty());
        for n in norms {
            let tag = norm_tag(n["id"].as_str().unwrap());
            assert!(known.contains(&tag), "{tag} not in the taxonomy");
        }
    }
}
