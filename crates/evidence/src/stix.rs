//! The STIX 2.1 bundle: report, incident (Incident Core Extension and our norm extension),
//! observed-data over deterministic SCOs, sighting, indicator, attack-pattern, identities, the
//! request note, the TLP 2.0 marking and our extension-definition.
//!
//! SDO ids are UUIDv5 under a normwatch namespace over the package id and the object's role,
//! so a rebuilt package has the same ids; SCO ids follow the STIX rule (UUIDv5 under the STIX
//! namespace over the canonical JSON of the id-contributing properties).

use crate::canon::{jcs, rfc3339_ms, rfc3339_trimmed, sha256};
use crate::error::Result;
use crate::package::{via_authority, Ctx};
use crate::recipients::Disposition;
use crate::tlp::Tlp;
use normwatch_model::ip_proto;
use normwatch_model::{AlertKind, Sector, Severity};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::net::IpAddr;
use uuid::Uuid;

/// The namespace of deterministic SCO ids (STIX 2.1 §2.9).
pub const SCO_NAMESPACE: Uuid = Uuid::from_u128(0x00abedb4_aa42_466c_9c01_fed23315a9b7);
/// Our namespace for SDO ids derived from the package id.
pub const NORMWATCH_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c2a7e_3b5d_4e89_a0c4_2d7e9b1f5a63);
/// Our property extension (norm references, the request). Never change it.
pub const EXTENSION_ID: &str = "extension-definition--3c8f6a2e-9d41-4b7a-8e25-71f0c6d4b9a1";
/// The identity that defines the extension (fixed, so the definition is the same everywhere).
pub const NORMWATCH_IDENTITY: &str = "identity--8a4e2b6c-1d3f-4a5b-9c7e-0f2d4b6a8c1e";
/// The OASIS Incident Core Extension.
pub const INCIDENT_CORE_EXTENSION: &str =
    "extension-definition--ef765651-680c-498d-9894-99799f2fa126";
const EXTENSION_CREATED: &str = "2026-01-01T00:00:00.000Z";
/// The extension definition's current version time (the schema URL moved to the project's
/// namespace).
const EXTENSION_MODIFIED: &str = "2026-12-01T00:00:00.000Z";
/// Where the extension's JSON schema is published: the project's own namespace (the schema
/// is `config/stix/norm-request-extension-v1.schema.json` in the source tree).
pub const EXTENSION_SCHEMA: &str =
    "https://schemas.normwatch.org/stix/norm-request-extension/v1/schema.json";

/// The version time of the organisations' identity objects.
pub(crate) const IDENTITY_TIME: &str = "2026-01-01T00:00:00.000Z";

/// A UUID for an organisation's identity, derived from its role and the identity's content
/// (including who describes it), so every package names the same organisation with the same
/// id and a changed description is a new object, never a conflicting version.
pub fn org_uuid(role: &str, name: &str) -> Uuid {
    sdo_uuid("organisation", &format!("{role}/{name}"))
}

/// A UUID for an SDO, derived from the package id and the object's role. STIX asks for
/// version 4 UUIDs on SDOs; these carry the version-4 layout with hash bits in place of random
/// ones, so a rebuilt package keeps its ids.
pub fn sdo_uuid(package_id: &str, role: &str) -> Uuid {
    let mut name = NORMWATCH_NAMESPACE.as_bytes().to_vec();
    name.extend_from_slice(format!("{package_id}/{role}").as_bytes());
    let h = sha256(&name);
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid()
}

/// `type--uuid5(STIX namespace, JCS(contributing properties))`.
pub fn sco_id(ty: &str, contributing: &Value) -> Result<String> {
    let data = jcs(contributing)?;
    Ok(format!("{ty}--{}", Uuid::new_v5(&SCO_NAMESPACE, &data)))
}

/// The SCO for an address.
pub fn addr_sco(addr: IpAddr) -> Result<Value> {
    let ty = match addr {
        IpAddr::V4(_) => "ipv4-addr",
        IpAddr::V6(_) => "ipv6-addr",
    };
    let value = addr.to_string();
    Ok(json!({
        "type": ty,
        "spec_version": "2.1",
        "id": sco_id(ty, &json!({"value": value}))?,
        "value": value,
    }))
}

fn as_sco(number: u32, name: Option<&str>) -> Result<Value> {
    let mut o = json!({
        "type": "autonomous-system",
        "spec_version": "2.1",
        "id": sco_id("autonomous-system", &json!({"number": number}))?,
        "number": number,
    });
    if let Some(n) = name {
        o["name"] = json!(n);
    }
    Ok(o)
}

fn proto_name(p: u8) -> Option<&'static str> {
    match p {
        ip_proto::TCP => Some("tcp"),
        ip_proto::UDP => Some("udp"),
        ip_proto::ICMP => Some("icmp"),
        ip_proto::ICMPV6 => Some("ipv6-icmp"),
        132 => Some("sctp"),
        _ => None,
    }
}

/// ATT&CK techniques for an alert kind: (id, name, domain URL part).
fn techniques(kind: AlertKind, ot: bool) -> Vec<(&'static str, &'static str, bool)> {
    let mut v = match kind {
        AlertKind::VolumetricFlood | AlertKind::CarpetBombing => {
            vec![(
                "T1498.001",
                "Network Denial of Service: Direct Network Flood",
                false,
            )]
        }
        AlertKind::SynFlood => vec![(
            "T1499.001",
            "Endpoint Denial of Service: OS Exhaustion Flood",
            false,
        )],
        AlertKind::UdpAmplification => {
            vec![(
                "T1498.002",
                "Network Denial of Service: Reflection Amplification",
                false,
            )]
        }
        AlertKind::ServiceImpairment => vec![(
            "T1499.002",
            "Endpoint Denial of Service: Service Exhaustion Flood",
            false,
        )],
        AlertKind::IcsCommandAbuse => vec![("T0855", "Unauthorized Command Message", true)],
        AlertKind::Scan => vec![("T1595", "Active Scanning", false)],
        AlertKind::BulkExfiltration => {
            vec![("T1048", "Exfiltration Over Alternative Protocol", false)]
        }
    };
    // A denial of service against operational technology is also ATT&CK for ICS T0814.
    if ot
        && kind != AlertKind::IcsCommandAbuse
        && kind != AlertKind::Scan
        && kind != AlertKind::BulkExfiltration
    {
        v.push(("T0814", "Denial of Service", true));
    }
    v
}

fn severity_score(s: Severity) -> u8 {
    match s {
        Severity::Low => 25,
        Severity::Medium => 50,
        Severity::High => 75,
        Severity::Critical => 100,
    }
}

/// The objects every bundle carries, with fixed content and ids: the TLP marking (and
/// TLP:CLEAR for the extension's definition), the normwatch identity and our extension's
/// definition.
pub(crate) fn shared_objects(tlp: Tlp) -> Vec<Value> {
    let mut objects = Vec::new();
    objects.push(tlp.stix_object());
    if tlp != Tlp::Clear {
        // The extension's definition is public: TLP:CLEAR.
        objects.push(Tlp::Clear.stix_object());
    }
    objects.push(json!({
        "type": "identity",
        "spec_version": "2.1",
        "id": NORMWATCH_IDENTITY,
        "created": EXTENSION_CREATED,
        "modified": EXTENSION_CREATED,
        "object_marking_refs": [Tlp::Clear.stix_id()],
        "name": "normwatch",
        "identity_class": "system",
        "description": "Defines the normwatch STIX extension for norm references and mitigation requests.",
    }));
    objects.push(json!({
        "type": "extension-definition",
        "spec_version": "2.1",
        "id": EXTENSION_ID,
        "created_by_ref": NORMWATCH_IDENTITY,
        "created": EXTENSION_CREATED,
        "modified": EXTENSION_MODIFIED,
        "object_marking_refs": [Tlp::Clear.stix_id()],
        "name": "normwatch norm references and mitigation request",
        "description": "Norms of responsible State behaviour in cyberspace an activity would violate if State-conducted or knowingly supported, the norms a request for mitigation rests on, and the request itself. No State attribution is made.",
        "schema": EXTENSION_SCHEMA,
        "version": "1.0.0",
        "extension_types": ["property-extension"],
    }));
    objects
}

/// The operator's identity object id, the same in every package and follow-up.
pub(crate) fn operator_id(name: &str, email: Option<&String>) -> String {
    format!(
        "identity--{}",
        org_uuid("operator", &format!("{name}/{email:?}"))
    )
}

/// Builds the bundle.
pub(crate) fn bundle(c: &Ctx<'_>) -> Result<Value> {
    let alert = c.alert();
    let planned = c.planned();
    let tlp: Tlp = c.input.settings.tlp;
    let sdo_id = |ty: &str, role: &str| format!("{ty}--{}", sdo_uuid(&c.package_id, role));
    let marking = vec![json!(tlp.stix_id())];
    let created = c.created.clone();
    let operator_id = operator_id(&c.input.operator.name, c.input.operator.email.as_ref());
    let sdo = |ty: &str, id: &str| -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("type".into(), json!(ty));
        m.insert("spec_version".into(), json!("2.1"));
        m.insert("id".into(), json!(id));
        m.insert("created".into(), json!(created));
        m.insert("modified".into(), json!(created));
        m.insert("created_by_ref".into(), json!(operator_id));
        m.insert("object_marking_refs".into(), json!(marking));
        m
    };
    let mut objects: Vec<Value> = Vec::new();

    // Identities: the reporting operator, the requesting authority, the recipient POC.
    // Identities are the same object in every package (same id, same version, same content),
    // so a TAXII collection holding many packages holds each organisation once: a fixed
    // version time and no per-alert property.
    let identity = |id: &str| {
        let mut m = sdo("identity", id);
        m.insert("created".into(), json!(IDENTITY_TIME));
        m.insert("modified".into(), json!(IDENTITY_TIME));
        m
    };
    let mut op = identity(&operator_id);
    op.remove("created_by_ref");
    op.insert("name".into(), json!(c.input.operator.name));
    op.insert("identity_class".into(), json!("organization"));
    if let Some(e) = &c.input.operator.email {
        op.insert("contact_information".into(), json!(e));
    }
    objects.push(Value::Object(op));
    let requester_id = format!(
        "identity--{}",
        org_uuid(
            "requester",
            &format!(
                "{}/{}/{}/{:?}",
                c.input.operator.name,
                c.input.requester.code,
                c.input.requester.name,
                c.input.requester.email
            )
        )
    );
    let mut rq = identity(&requester_id);
    rq.insert("name".into(), json!(c.input.requester.name));
    rq.insert("identity_class".into(), json!("organization"));
    rq.insert("sectors".into(), json!(["government"]));
    rq.insert(
        "description".into(),
        json!(format!(
            "National authority of {} requesting assistance",
            c.input.requester.code
        )),
    );
    objects.push(Value::Object(rq));
    let recipient_id = format!(
        "identity--{}",
        org_uuid(
            "recipient",
            &format!(
                "{}/{}/{}/{:?}",
                c.input.operator.name,
                planned.recipient.code,
                planned.recipient.name,
                planned.recipient.email
            )
        )
    );
    let mut rc = identity(&recipient_id);
    rc.insert("name".into(), json!(planned.recipient.name));
    rc.insert("identity_class".into(), json!("organization"));
    rc.insert("sectors".into(), json!(["government"]));
    rc.insert(
        "description".into(),
        json!(format!("Point of contact of {}", planned.recipient.code)),
    );
    if let Some(e) = &planned.recipient.email {
        rc.insert("contact_information".into(), json!(e));
    }
    objects.push(Value::Object(rc));

    // The marking and our extension's definition (fixed content, fixed ids).
    objects.extend(shared_objects(tlp));

    // SCOs.
    let mut scos: BTreeMap<String, Value> = BTreeMap::new();
    let mut addr_ids: BTreeMap<IpAddr, String> = BTreeMap::new();
    let mut put_addr = |a: IpAddr, scos: &mut BTreeMap<String, Value>| -> Result<String> {
        if let Some(id) = addr_ids.get(&a) {
            return Ok(id.clone());
        }
        let o = addr_sco(a)?;
        let id = o["id"].as_str().unwrap_or_default().to_string();
        scos.insert(id.clone(), o);
        addr_ids.insert(a, id.clone());
        Ok(id)
    };
    let mut relationships = Vec::new();
    let mut nt_count = 0usize;
    for s in &c.sources {
        let a = s.source.addr;
        let src_id = put_addr(a, &mut scos)?;
        if let Some(n) = s.attribution.asn {
            let o = as_sco(n, s.attribution.as_org.as_deref())?;
            let as_id = o["id"].as_str().unwrap_or_default().to_string();
            scos.entry(as_id.clone()).or_insert(o);
            let mut r = sdo(
                "relationship",
                &sdo_id("relationship", &format!("belongs-to/{a}/{n}")),
            );
            r.insert("relationship_type".into(), json!("belongs-to"));
            r.insert("source_ref".into(), json!(src_id));
            r.insert("target_ref".into(), json!(as_id));
            relationships.push(Value::Object(r));
        }
        let (first, last) = c.source_window(a);
        let f = c.per_source.get(&a);
        let victim = f.and_then(|f| {
            if f.victims.len() == 1 {
                f.victims.iter().next().copied()
            } else {
                None
            }
        });
        let mut nt = Map::new();
        nt.insert("type".into(), json!("network-traffic"));
        nt.insert("spec_version".into(), json!("2.1"));
        nt.insert("src_ref".into(), json!(src_id));
        if let Some(v) = victim {
            nt.insert("dst_ref".into(), json!(put_addr(v, &mut scos)?));
        }
        nt.insert("start".into(), json!(rfc3339_trimmed(first)));
        nt.insert("end".into(), json!(rfc3339_trimmed(last)));
        nt.insert("is_active".into(), json!(false));
        if let Some(port) = f.and_then(|f| {
            if f.dst_ports.len() == 1 {
                f.dst_ports.iter().next().copied()
            } else {
                None
            }
        }) {
            let proto_has_ports = f.is_some_and(|f| {
                f.protos
                    .iter()
                    .all(|p| *p == ip_proto::TCP || *p == ip_proto::UDP || *p == ip_proto::SCTP)
            });
            if proto_has_ports {
                nt.insert("dst_port".into(), json!(port));
            }
        }
        let mut protocols = vec![if a.is_ipv4() { "ipv4" } else { "ipv6" }];
        if let Some(f) = f {
            protocols.extend(f.protos.iter().filter_map(|p| proto_name(*p)));
        }
        nt.insert("protocols".into(), json!(protocols));
        let (pkts, bytes) = match f {
            Some(f) if f.flows > 0 => (f.pkts, f.bytes),
            _ => (s.source.pkts, s.source.bytes),
        };
        nt.insert("src_packets".into(), json!(pkts));
        nt.insert("src_byte_count".into(), json!(bytes));
        let mut contributing = Map::new();
        for k in [
            "start",
            "end",
            "src_ref",
            "dst_ref",
            "src_port",
            "dst_port",
            "protocols",
            "extensions",
        ] {
            if let Some(v) = nt.get(k) {
                contributing.insert(k.into(), v.clone());
            }
        }
        let id = sco_id("network-traffic", &Value::Object(contributing))?;
        nt.insert("id".into(), json!(id));
        scos.insert(id, Value::Object(nt));
        nt_count += 1;
    }
    let _ = nt_count;
    let sco_ids: Vec<String> = scos.keys().cloned().collect();
    let addr_ids_victims: BTreeMap<IpAddr, String> = c
        .victims
        .iter()
        .filter_map(|v| {
            let id = addr_sco(*v).ok()?["id"].as_str()?.to_string();
            scos.contains_key(&id).then_some((*v, id))
        })
        .collect();
    let addr_ids_final: BTreeMap<IpAddr, String> = c
        .sources
        .iter()
        .filter_map(|s| {
            let id = addr_sco(s.source.addr).ok()?["id"].as_str()?.to_string();
            Some((s.source.addr, id))
        })
        .collect();

    // Attack patterns (MITRE ATT&CK / ATT&CK for ICS).
    let ot = alert.sector == Sector::Energy
        || alert.sector == Sector::Water
        || alert.kind == AlertKind::IcsCommandAbuse;
    let mut ap_ids = Vec::new();
    for (tid, name, ics) in techniques(alert.kind, ot) {
        let id = sdo_id("attack-pattern", tid);
        let url = if ics {
            format!("https://attack.mitre.org/techniques/{tid}/")
        } else {
            format!(
                "https://attack.mitre.org/techniques/{}/",
                tid.replace('.', "/")
            )
        };
        let mut ap = sdo("attack-pattern", &id);
        ap.insert("name".into(), json!(name));
        ap.insert(
            "description".into(),
            json!(if ics {
                "MITRE ATT&CK for ICS technique"
            } else {
                "MITRE ATT&CK Enterprise technique"
            }),
        );
        // The ATT&CK id names the technique; a `url` would need `hashes` under the strict
        // validator, and a page's hash changes with every edit of the page.
        let _ = url;
        ap.insert(
            "external_references".into(),
            json!([{
                "source_name": if ics { "mitre-ics-attack" } else { "mitre-attack" },
                "external_id": tid,
            }]),
        );
        objects.push(Value::Object(ap));
        ap_ids.push(id);
    }

    // Observed data over every SCO, the indicator, the sighting.
    let od_id = sdo_id("observed-data", "observed");
    let mut od = sdo("observed-data", &od_id);
    od.insert("first_observed".into(), json!(rfc3339_ms(c.first_ns)));
    od.insert("last_observed".into(), json!(rfc3339_ms(c.last_ns)));
    od.insert(
        "number_observed".into(),
        json!(c.flows.len().clamp(1, 999_999_999)),
    );
    od.insert("object_refs".into(), json!(sco_ids));
    objects.push(Value::Object(od));

    // The indicator names only the sources the State is asked about: a reflector, an
    // anonymiser or a forged address in a `malicious-activity` indicator would have automatic
    // ingestion block a legitimate resolver, a VPN's other users or an innocent registrant.
    let quote = |a: &IpAddr| format!("'{a}'");
    let srcs: Vec<String> = c.request_sources().map(|s| quote(&s.source.addr)).collect();
    let mut ind_id = None;
    if !srcs.is_empty() {
        let mut pattern = format!("[network-traffic:src_ref.value IN ({})", srcs.join(", "));
        if !c.victims.is_empty() {
            let v: Vec<String> = c.victims.iter().map(quote).collect();
            pattern.push_str(&format!(
                " AND network-traffic:dst_ref.value IN ({})",
                v.join(", ")
            ));
        }
        pattern.push(']');
        let id = sdo_id("indicator", "sources");
        let mut ind = sdo("indicator", &id);
        ind.insert(
            "name".into(),
            json!(format!(
                "Sources of {} against {} registered in {}",
                alert.kind.as_str(),
                alert.service,
                c.about()
            )),
        );
        ind.insert("description".into(), json!(format!(
            "Traffic from these sources to the victim during {} .. {} (UTC). Source addresses may be spoofed or compromised hosts; no State attribution is made.",
            rfc3339_ms(c.first_ns), rfc3339_ms(c.last_ns)
        )));
        ind.insert("indicator_types".into(), json!(["malicious-activity"]));
        ind.insert("pattern".into(), json!(pattern));
        ind.insert("pattern_type".into(), json!("stix"));
        ind.insert("valid_from".into(), json!(rfc3339_ms(c.first_ns)));
        objects.push(Value::Object(ind));
        for ap in &ap_ids {
            let mut r = sdo(
                "relationship",
                &sdo_id("relationship", &format!("indicates/{ap}")),
            );
            r.insert("relationship_type".into(), json!("indicates"));
            r.insert("source_ref".into(), json!(id));
            r.insert("target_ref".into(), json!(ap));
            relationships.push(Value::Object(r));
        }
        let sg_id = sdo_id("sighting", "sighting");
        let mut sg = sdo("sighting", &sg_id);
        sg.insert("sighting_of_ref".into(), json!(id));
        sg.insert("observed_data_refs".into(), json!([od_id]));
        sg.insert("where_sighted_refs".into(), json!([operator_id]));
        sg.insert("first_seen".into(), json!(rfc3339_ms(c.first_ns)));
        sg.insert("last_seen".into(), json!(rfc3339_ms(c.last_ns)));
        sg.insert("count".into(), json!(c.flows.len().clamp(1, 999_999_999)));
        objects.push(Value::Object(sg));
        ind_id = Some(id);
    }

    // Reflectors, anonymisers and satellite providers: misused infrastructure for their
    // providers' abuse desks, not malicious hosts. Forged addresses get no object beyond
    // their observation.
    for (disp, types, what) in [
        (
            Disposition::Reflector,
            "amplification",
            "Reflectors answering forged requests (DDoS amplifiers)",
        ),
        (
            Disposition::Anonymiser,
            "anonymization",
            "Anonymisers (VPN, Tor exit, proxy) that carried attack traffic",
        ),
        (
            Disposition::SatelliteProvider,
            "unknown",
            "Satellite-provider addresses that carried attack traffic (users in many countries)",
        ),
    ] {
        let members: Vec<IpAddr> = c
            .abuse_sources()
            .filter(|s| s.disposition == disp)
            .map(|s| s.source.addr)
            .collect();
        if members.is_empty() || c.traceback() {
            continue;
        }
        let id = sdo_id("infrastructure", disposition_str(disp));
        let mut inf = sdo("infrastructure", &id);
        inf.insert("name".into(), json!(what));
        inf.insert("description".into(), json!(format!(
            "{what}. They are not the origin of the attack: please pass them to the abuse contacts of the networks operating them, so they close or rate-limit the misused service. Do not block them as malicious."
        )));
        inf.insert("infrastructure_types".into(), json!([types]));
        inf.insert("first_seen".into(), json!(rfc3339_ms(c.first_ns)));
        inf.insert("last_seen".into(), json!(rfc3339_ms(c.last_ns)));
        objects.push(Value::Object(inf));
        for m in members {
            if let Some(sco) = addr_ids_final.get(&m) {
                let mut r = sdo(
                    "relationship",
                    &sdo_id(
                        "relationship",
                        &format!("consists-of/{}/{m}", disposition_str(disp)),
                    ),
                );
                r.insert("relationship_type".into(), json!("consists-of"));
                r.insert("source_ref".into(), json!(id));
                r.insert("target_ref".into(), json!(sco));
                relationships.push(Value::Object(r));
            }
        }
    }

    // The incident with the Incident Core Extension and our norm extension.
    let inc_id = sdo_id("incident", "incident");
    let mut inc = sdo("incident", &inc_id);
    inc.insert(
        "name".into(),
        json!(format!(
            "{} against {} ({})",
            alert.kind.as_str(),
            alert.service,
            alert.asset
        )),
    );
    inc.insert("description".into(), json!(c.summary));
    let availability = alert
        .impairment
        .and_then(|i| i.handshake_completion.or(i.response_ratio))
        .map(|r| ((1.0 - r.clamp(0.0, 1.0)) * 100.0).round() as u8);
    let victim_refs: Vec<String> = c
        .victims
        .iter()
        .filter_map(|v| addr_ids_victims.get(v).cloned())
        .collect();
    // Incident Core Extension (OASIS schema): impacts are objects, not strings.
    let mut ice = json!({
        "extension_type": "property-extension",
        "determination": determination(alert.kind),
        "investigation_status": "open",
        "detection_methods": ["automated-tool"],
        "criticality": severity_score(alert.severity),
        "external_impacts": external_impacts(alert.sector)
            .into_iter()
            .map(|t| json!({"impact_type": t}))
            .collect::<Vec<_>>(),
    });
    if let Some(a) = availability {
        let mut imp = json!({
            "availability_impact": a,
            "description": "Share of connection attempts to the service that failed during the attack",
        });
        if !victim_refs.is_empty() {
            imp["impacted_refs"] = json!(victim_refs);
        }
        ice["availability_impacts"] = json!([imp]);
    }
    let abuse: Vec<Value> = c
        .abuse_sources()
        .map(|s| json!({"addr": s.source.addr.to_string(), "reason": disposition_str(s.disposition)}))
        .collect();
    // A traceback request asks the own State; no other State is named.
    let requested_state = if c.traceback() {
        c.input.requester.code.as_str()
    } else {
        c.about()
    };
    let mut ours = json!({
        "extension_type": "property-extension",
        "norms_violated_if_state_conducted": alert.norms.violated,
        "norms_request_basis": alert.norms.request_basis,
        "norms_caveats": alert.norms.caveats,
        "requested_state": requested_state,
        "recipient": planned.recipient.code,
        "recipient_rule": planned.rule,
        "requested_action": c.action,
        "deadline": c.deadline,
        "request_channel": "technical",
        "state_attribution": "none",
    });
    // STIX forbids empty lists.
    if !abuse.is_empty() {
        ours["provider_abuse"] = json!(abuse);
    }
    match via_authority(&planned.routing) {
        Some((reason, true)) => ours["routing_via_national_authority"] = json!(reason),
        Some((reason, false)) => ours["for_national_authority_only"] = json!(reason),
        None => {}
    }
    if c.traceback() {
        ours["request_purpose"] = json!("traceback");
    }
    inc.insert(
        "extensions".into(),
        json!({INCIDENT_CORE_EXTENSION: ice, EXTENSION_ID: ours}),
    );
    objects.push(Value::Object(inc));

    let note_id = sdo_id("note", "request");
    let mut note = sdo("note", &note_id);
    note.insert(
        "abstract".into(),
        json!(format!(
            "Request to {} to mitigate activity from its territory",
            c.about()
        )),
    );
    note.insert("content".into(), json!(c.letter));
    note.insert("authors".into(), json!([c.input.requester.name]));
    let mut note_refs = vec![inc_id.clone()];
    note_refs.extend(ind_id);
    note.insert("object_refs".into(), json!(note_refs));
    objects.push(Value::Object(note));

    objects.extend(relationships);
    // SCOs carry the marking too: stored in a TAXII collection, each object stands alone.
    objects.extend(scos.into_values().map(|mut o| {
        o["object_marking_refs"] = json!(marking);
        o
    }));

    let mut refs = report_refs(&objects);
    let rep_id = sdo_id("report", "report");
    let mut rep = sdo("report", &rep_id);
    rep.insert(
        "name".into(),
        json!(format!("Evidence package {}", c.package_id)),
    );
    let mut description = format!(
        "Request for assistance in mitigating malicious ICT activity emanating from the territory of {} against {} ({}). No State attribution is made.",
        c.about(), alert.service, alert.sector.as_str()
    );
    if let Some(cu) = &planned.campaign {
        // An update refers to the campaign's request, whose report it extends.
        refs.push(json!(format!(
            "report--{}",
            sdo_uuid(&cu.update_of, "report")
        )));
        description = format!(
            "Update of request {} (campaign {}), not a new request: the same hosts also attacked {} ({}). The campaign has impaired: {}. No State attribution is made.",
            cu.update_of,
            cu.id,
            alert.service,
            alert.sector.as_str(),
            cu.services.join("; ")
        );
    }
    rep.insert("description".into(), json!(description));
    rep.insert("report_types".into(), json!(["threat-report"]));
    rep.insert("published".into(), json!(c.created));
    rep.insert("object_refs".into(), json!(refs));
    rep.insert(
        "extensions".into(),
        json!({EXTENSION_ID: {
            "extension_type": "property-extension",
            "requested_state": requested_state,
            "requested_action": c.action,
            "deadline": c.deadline,
            "norms_request_basis": alert.norms.request_basis,
        }}),
    );
    objects.insert(0, Value::Object(rep));

    Ok(json!({
        "type": "bundle",
        "id": format!("bundle--{}", sdo_uuid(&c.package_id, "bundle")),
        "objects": objects,
    }))
}

/// Incident Core `determination`: reconnaissance is only suspected of leading anywhere; the
/// other kinds were measured hitting the asset.
fn determination(kind: AlertKind) -> &'static str {
    match kind {
        AlertKind::Scan => "suspected",
        _ => "successful-attempt",
    }
}

fn disposition_str(d: Disposition) -> &'static str {
    match d {
        Disposition::StateRequest => "state-request",
        Disposition::Reflector => "reflector",
        Disposition::Spoofed => "spoofed",
        Disposition::Anonymiser => "anonymiser",
        Disposition::SatelliteProvider => "satellite-provider",
    }
}

fn external_impacts(s: Sector) -> Vec<&'static str> {
    match s {
        Sector::Health | Sector::Water => vec!["public-health", "public-confidence"],
        Sector::Government | Sector::Csirt => vec!["national-security", "public-confidence"],
        Sector::Finance => vec!["economic", "public-confidence"],
        _ => vec!["economic", "public-confidence"],
    }
}

/// The ids a report names: every object but the marking and extension definitions.
fn report_refs(objects: &[Value]) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| o["type"] != "marking-definition" && o["type"] != "extension-definition")
        .map(|o| o["id"].clone())
        .collect()
}

/// The bundle of a campaign package: each alert's objects (built as its own package's, with
/// ids of its own within the package; shared objects such as identities, markings and
/// addresses once), without their reports and notes, under one report; one indicator over
/// every listed source towards every victim (the one a follow-up's sighting names) and one
/// note carrying the letter.
pub(crate) fn campaign_bundle(
    ctxs: &[Ctx<'_>],
    id: &str,
    campaign: &str,
    letter: &str,
) -> Result<Value> {
    let first = &ctxs[0];
    let tlp: Tlp = first.input.settings.tlp;
    let created = first.created.clone();
    let operator_id = operator_id(
        &first.input.operator.name,
        first.input.operator.email.as_ref(),
    );
    let marking = json!([tlp.stix_id()]);
    let sdo = |ty: &str, role: &str| {
        json!({
            "type": ty,
            "spec_version": "2.1",
            "id": format!("{ty}--{}", sdo_uuid(id, role)),
            "created": created,
            "modified": created,
            "created_by_ref": operator_id,
            "object_marking_refs": marking,
        })
    };
    let mut objects: Vec<Value> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut incidents = Vec::new();
    let mut indicators = Vec::new();
    for c in ctxs {
        let b = bundle(c)?;
        for o in b["objects"].as_array().into_iter().flatten() {
            let ty = o["type"].as_str().unwrap_or_default();
            if ty == "report" || ty == "note" {
                continue;
            }
            let oid = o["id"].as_str().unwrap_or_default().to_string();
            match ty {
                "incident" => incidents.push(oid.clone()),
                "indicator" => indicators.push(oid.clone()),
                _ => {}
            }
            if seen.insert(oid) {
                objects.push(o.clone());
            }
        }
    }
    let quote = |a: &IpAddr| format!("'{a}'");
    let srcs: std::collections::BTreeSet<IpAddr> = ctxs
        .iter()
        .flat_map(|c| c.request_sources().map(|s| s.source.addr))
        .collect();
    let victims: std::collections::BTreeSet<IpAddr> = ctxs
        .iter()
        .flat_map(|c| c.victims.iter().copied())
        .collect();
    let first_ns = ctxs.iter().map(|c| c.first_ns).min().unwrap_or_default();
    let last_ns = ctxs.iter().map(|c| c.last_ns).max().unwrap_or_default();
    let services = crate::package::campaign_services(ctxs);
    let mut note_refs = incidents.clone();
    if !srcs.is_empty() {
        let mut pattern = format!(
            "[network-traffic:src_ref.value IN ({})",
            srcs.iter().map(quote).collect::<Vec<_>>().join(", ")
        );
        if !victims.is_empty() {
            pattern.push_str(&format!(
                " AND network-traffic:dst_ref.value IN ({})",
                victims.iter().map(quote).collect::<Vec<_>>().join(", ")
            ));
        }
        pattern.push(']');
        let mut ind = sdo("indicator", "sources");
        ind["name"] = json!(format!(
            "Sources of campaign {campaign} registered in {}",
            first.about()
        ));
        ind["description"] = json!(format!(
            "Traffic from these sources to the victims ({}) during {} .. {} (UTC). Source addresses may be spoofed or compromised hosts; no State attribution is made.",
            services.join("; "),
            rfc3339_ms(first_ns),
            rfc3339_ms(last_ns)
        ));
        ind["indicator_types"] = json!(["malicious-activity"]);
        ind["pattern"] = json!(pattern);
        ind["pattern_type"] = json!("stix");
        ind["valid_from"] = json!(rfc3339_ms(first_ns));
        note_refs.push(ind["id"].as_str().unwrap_or_default().to_string());
        objects.push(ind);
    }
    note_refs.extend(indicators);
    let mut note = sdo("note", "request");
    note["abstract"] = json!(format!(
        "Request to {} to mitigate activity from its territory (campaign {campaign}, {} services)",
        first.about(),
        services.len()
    ));
    note["content"] = json!(letter);
    note["authors"] = json!([first.input.requester.name]);
    note["object_refs"] = json!(note_refs);
    objects.push(note);

    let refs = report_refs(&objects);
    let mut rep = sdo("report", "report");
    rep["name"] = json!(format!("Evidence package {id}"));
    rep["description"] = json!(format!(
        "Request for assistance in mitigating malicious ICT activity emanating from the territory of {} against {} services, one campaign ({campaign}) of {} attacks from overlapping hosts: {}. No State attribution is made.",
        first.about(),
        services.len(),
        ctxs.len(),
        services.join("; ")
    ));
    rep["report_types"] = json!(["threat-report"]);
    rep["published"] = json!(created);
    rep["object_refs"] = json!(refs);
    let basis = crate::package::norm_union(ctxs, |a| &a.norms.request_basis);
    let mut ours = json!({
        "extension_type": "property-extension",
        "requested_state": first.about(),
        "requested_action": crate::letter::campaign_action(ctxs),
        "deadline": first.deadline,
    });
    // STIX forbids empty lists.
    if !basis.is_empty() {
        ours["norms_request_basis"] = json!(basis);
    }
    rep["extensions"] = json!({ EXTENSION_ID: ours });
    objects.insert(0, rep);
    Ok(json!({
        "type": "bundle",
        "id": format!("bundle--{}", sdo_uuid(id, "bundle")),
        "objects": objects,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: timestamps written with trailing zeros (`…00.000Z`) gave ids that differ
    /// from the ones `stix2` computes, which drops them; the value is the Python library's.
    #[test]
    fn network_traffic_id_matches_python_stix2() {
        let start = 1_772_359_200_000_000_000; // 2026-03-01T10:00:00Z
        let contributing = json!({
            "start": rfc3339_trimmed(start),
            "end": rfc3339_trimmed(start + 2_500_000_000),
            "src_ref": "ipv4-addr--12592121-be4c-5a93-a813-5a5af16e50db",
            "dst_ref": "ipv4-addr--570130c0-7daf-5d1e-992f-58b53b447312",
            "dst_port": 502,
            "protocols": ["ipv4", "tcp"],
        });
        assert_eq!(
            sco_id("network-traffic", &contributing).unwrap(),
            "network-traffic--1f4ec8f8-0dd6-5166-a922-365ee0dff308"
        );
    }

    /// Values computed with the Python `stix2` library (reference §2.1).
    #[test]
    fn sco_ids_match_python_stix2() {
        let ip = |s: &str| addr_sco(s.parse().unwrap()).unwrap()["id"].clone();
        assert_eq!(
            ip("198.51.100.7"),
            "ipv4-addr--12592121-be4c-5a93-a813-5a5af16e50db"
        );
        assert_eq!(
            ip("203.0.113.10"),
            "ipv4-addr--570130c0-7daf-5d1e-992f-58b53b447312"
        );
        assert_eq!(
            as_sco(64500, None).unwrap()["id"],
            "autonomous-system--0a5f7072-df00-5729-9f0a-4eb18631a446"
        );
    }
}
