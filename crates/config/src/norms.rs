//! The norm catalogue (`config/norms.toml`): the voluntary norms of responsible State behaviour
//! an alert can name, and which of them each alert kind touches.
//!
//! - `[[norm]]`: id, framework (`UN-GGE-2015`, `US-2015`, `OSCE-CBM`), reference, short name,
//!   paraphrase, kind (conduct / cooperation / protection / process), whether a violation
//!   presupposes State conduct, related norms.
//! - `[[alert_kind]]`: for each alert kind the detector raises, the norms it would violate if
//!   State-conducted or knowingly supported, and the norms its request for assistance rests on.
//! - `[mapping]`: norms attached to every alert (the attribution caveat, the handling
//!   constraint) and those an attack on an asset with role `csirt` adds.
//!
//! Every id a mapping names must be in the catalogue; every alert kind must be mapped once.

use crate::diag::{ConfigError, Diagnostics};
use normwatch_model::{AlertKind, AlertNorms, Role};
use serde::Deserialize;
use std::collections::HashSet;
use std::path::Path;

/// The alert kinds the detector raises; each needs an `[[alert_kind]]` entry.
pub const ALERT_KINDS: [&str; 8] = [
    AlertKind::ALL[0].as_str(),
    AlertKind::ALL[1].as_str(),
    AlertKind::ALL[2].as_str(),
    AlertKind::ALL[3].as_str(),
    AlertKind::ALL[4].as_str(),
    AlertKind::ALL[5].as_str(),
    AlertKind::ALL[6].as_str(),
    AlertKind::ALL[7].as_str(),
];

/// Which body of norms a norm comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Framework {
    /// The 2015 UN GGE report, A/70/174 para 13 (a)–(k).
    UnGge2015,
    /// The four peacetime norms the United States promoted from 2015.
    Us2015,
    /// The OSCE cyber/ICT confidence-building measures (PC.DEC/1106, PC.DEC/1202).
    OsceCbm,
}

/// What a norm asks of States.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NormKind {
    /// Refrain from some conduct.
    Conduct,
    /// Cooperate with other States.
    Cooperation,
    /// Protect one's own infrastructure.
    Protection,
    /// Process and confidence-building.
    Process,
}

/// One norm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Norm {
    /// Stable id, e.g. `ungge2015.13f`.
    pub id: String,
    pub framework: Framework,
    /// Where it is written, e.g. `A/70/174 para 13(f)`.
    pub reference: String,
    pub short: String,
    /// A paraphrase, not the official text.
    pub text: String,
    pub kind: NormKind,
    /// Whether a violation presupposes State conduct or knowing support.
    pub state_attribution_required: bool,
    pub related: Vec<String>,
}

/// A validated catalogue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NormCatalogue {
    norms: Vec<Norm>,
    kinds: Vec<(String, Vec<String>, Vec<String>)>,
    caveats: Vec<String>,
    csirt: Vec<String>,
}

impl NormCatalogue {
    pub fn norms(&self) -> &[Norm] {
        &self.norms
    }

    pub fn get(&self, id: &str) -> Option<&Norm> {
        self.norms.iter().find(|n| n.id == id)
    }

    /// The norms of an alert of `kind` against an asset with `roles`; `None` for a kind the
    /// catalogue does not map.
    pub fn for_alert(&self, kind: &str, roles: &[Role]) -> Option<AlertNorms> {
        let (_, violated, request) = self.kinds.iter().find(|(k, _, _)| k == kind)?;
        let mut violated = violated.clone();
        if roles.contains(&Role::Csirt) {
            for id in &self.csirt {
                if !violated.contains(id) {
                    violated.push(id.clone());
                }
            }
        }
        Some(AlertNorms {
            violated,
            request_basis: request.clone(),
            caveats: self.caveats.clone(),
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalogue {
    mapping: RawMapping,
    #[serde(default)]
    alert_kind: Vec<RawKind>,
    #[serde(default)]
    norm: Vec<RawNorm>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    caveats: Vec<String>,
    csirt: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKind {
    kind: String,
    violated: Vec<String>,
    request_basis: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNorm {
    id: String,
    framework: String,
    #[serde(rename = "ref")]
    reference: String,
    short: String,
    text: String,
    kind: String,
    state_attribution_required: bool,
    #[serde(default)]
    related: Vec<String>,
}

fn is_norm_id(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-'))
}

/// Reads and validates the catalogue at `path`.
pub fn load_norms(path: &Path) -> Result<NormCatalogue, ConfigError> {
    let text = crate::diag::read_file(path)?;
    parse_norms(&text, path)
}

/// Validates catalogue text; `origin` names it in diagnostics.
pub fn parse_norms(text: &str, origin: &Path) -> Result<NormCatalogue, ConfigError> {
    let raw: RawCatalogue = crate::diag::parse_toml(text, origin)?;
    let mut d = Diagnostics::new(origin);
    let mut norms = Vec::new();
    let mut ids = HashSet::new();
    for (i, n) in raw.norm.iter().enumerate() {
        let key = |f: &str| format!("norm[{i}].{f}");
        if !is_norm_id(&n.id) {
            d.push(
                key("id"),
                format!(
                    "{:?} is not a norm id (lower-case letters, digits, '.', '-')",
                    n.id
                ),
            );
        } else if !ids.insert(n.id.clone()) {
            d.push(key("id"), format!("{:?} is already in the catalogue", n.id));
        }
        let framework = match n.framework.as_str() {
            "UN-GGE-2015" => Some(Framework::UnGge2015),
            "US-2015" => Some(Framework::Us2015),
            "OSCE-CBM" => Some(Framework::OsceCbm),
            other => {
                d.push(
                    key("framework"),
                    format!("{other:?} is not one of UN-GGE-2015, US-2015, OSCE-CBM"),
                );
                None
            }
        };
        let kind = match n.kind.as_str() {
            "conduct" => Some(NormKind::Conduct),
            "cooperation" => Some(NormKind::Cooperation),
            "protection" => Some(NormKind::Protection),
            "process" => Some(NormKind::Process),
            other => {
                d.push(
                    key("kind"),
                    format!("{other:?} is not one of conduct, cooperation, protection, process"),
                );
                None
            }
        };
        for (f, v) in [
            ("ref", &n.reference),
            ("short", &n.short),
            ("text", &n.text),
        ] {
            if v.trim().is_empty() {
                d.push(key(f), "must not be empty");
            }
        }
        if let (Some(framework), Some(kind)) = (framework, kind) {
            norms.push(Norm {
                id: n.id.clone(),
                framework,
                reference: n.reference.clone(),
                short: n.short.clone(),
                text: n.text.clone(),
                kind,
                state_attribution_required: n.state_attribution_required,
                related: n.related.clone(),
            });
        }
    }
    let known = |key: String, list: &[String], d: &mut Diagnostics| {
        for (j, id) in list.iter().enumerate() {
            if !ids.contains(id) {
                d.push(
                    format!("{key}[{j}]"),
                    format!("{id:?} is not in the catalogue"),
                );
            }
        }
    };
    for (i, n) in raw.norm.iter().enumerate() {
        known(format!("norm[{i}].related"), &n.related, &mut d);
    }
    known("mapping.caveats".into(), &raw.mapping.caveats, &mut d);
    known("mapping.csirt".into(), &raw.mapping.csirt, &mut d);
    let mut kinds = Vec::new();
    for (i, k) in raw.alert_kind.iter().enumerate() {
        if !ALERT_KINDS.contains(&k.kind.as_str()) {
            d.push(
                format!("alert_kind[{i}].kind"),
                format!(
                    "{:?} is not an alert kind; known: {}",
                    k.kind,
                    ALERT_KINDS.join(", ")
                ),
            );
        } else if kinds.iter().any(|(seen, _, _)| seen == &k.kind) {
            d.push(
                format!("alert_kind[{i}].kind"),
                format!("{:?} is mapped twice", k.kind),
            );
        }
        known(format!("alert_kind[{i}].violated"), &k.violated, &mut d);
        known(
            format!("alert_kind[{i}].request_basis"),
            &k.request_basis,
            &mut d,
        );
        if k.request_basis.is_empty() {
            d.push(
                format!("alert_kind[{i}].request_basis"),
                "must name at least one norm: every alert can ground a request",
            );
        }
        kinds.push((k.kind.clone(), k.violated.clone(), k.request_basis.clone()));
    }
    for kind in ALERT_KINDS {
        if !raw.alert_kind.iter().any(|k| k.kind == kind) {
            d.push("alert_kind", format!("{kind:?} has no mapping"));
        }
    }
    if !d.is_empty() {
        return Err(ConfigError::Invalid(d));
    }
    Ok(NormCatalogue {
        norms,
        kinds,
        caveats: raw.mapping.caveats,
        csirt: raw.mapping.csirt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"
[mapping]
caveats = ["a.b"]
csirt = ["a.k"]

[[norm]]
id = "a.b"
framework = "UN-GGE-2015"
ref = "A/70/174 para 13(b)"
short = "consider-full-context"
text = "Weigh all relevant information."
kind = "process"
state_attribution_required = false

[[norm]]
id = "a.k"
framework = "UN-GGE-2015"
ref = "A/70/174 para 13(k)"
short = "no-harm-to-csirts"
text = "Do not harm CSIRTs."
kind = "conduct"
state_attribution_required = true
related = ["a.b"]
"#;

    fn kinds(violated: &str) -> String {
        ALERT_KINDS
            .iter()
            .map(|k| {
                format!(
                    "[[alert_kind]]\nkind = \"{k}\"\nviolated = {violated}\nrequest_basis = [\"a.b\"]\n"
                )
            })
            .collect()
    }

    #[test]
    fn csirt_role_adds_its_norms() {
        let text = format!("{SMALL}{}", kinds("[]"));
        let c = parse_norms(&text, Path::new("n.toml")).unwrap();
        let n = c.for_alert("syn_flood", &[Role::Ot]).unwrap();
        assert!(n.violated.is_empty());
        assert_eq!(n.caveats, ["a.b"]);
        let n = c.for_alert("syn_flood", &[Role::Csirt]).unwrap();
        assert_eq!(n.violated, ["a.k"]);
        assert!(c.for_alert("no_such_kind", &[]).is_none());
        assert_eq!(c.get("a.k").unwrap().framework, Framework::UnGge2015);
    }

    #[test]
    fn unknown_ids_missing_kinds_and_duplicates_are_reported() {
        let mut text = format!("{SMALL}{}", kinds("[\"x.y\"]"));
        text = text.replacen("kind = \"scan\"", "kind = \"syn_flood\"", 1);
        text.push_str("[[norm]]\nid = \"a.b\"\nframework = \"EU\"\nref = \"r\"\nshort = \"s\"\ntext = \"\"\nkind = \"vibe\"\nstate_attribution_required = false\n");
        let Err(ConfigError::Invalid(d)) = parse_norms(&text, Path::new("n.toml")) else {
            panic!("accepted");
        };
        let all: Vec<String> = d
            .iter()
            .map(|x| format!("{}: {}", x.key, x.message))
            .collect();
        let has = |s: &str| all.iter().any(|l| l.contains(s));
        assert!(has("norm[2].id: \"a.b\" is already"), "{all:#?}");
        assert!(has("norm[2].framework"), "{all:#?}");
        assert!(has("norm[2].kind"), "{all:#?}");
        assert!(has("norm[2].text: must not be empty"), "{all:#?}");
        assert!(
            has("alert_kind[0].violated[0]: \"x.y\" is not in the catalogue"),
            "{all:#?}"
        );
        assert!(has("is mapped twice"), "{all:#?}");
        assert!(has("alert_kind: \"scan\" has no mapping"), "{all:#?}");
    }
}
