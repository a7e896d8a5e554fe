//! The `[evidence]` configuration section, in two stages: raw serde structs that reject
//! unknown keys, then validated settings with paths resolved against the config file's
//! directory. Every problem is reported at once as `evidence.KEY: message`.

use crate::attribution::GeoPaths;
use crate::package::{Operator, RequestSettings};
use crate::recipients::country_code_problem;
use crate::tlp::{Pap, Tlp};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `[evidence]` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvidence {
    /// The requesting State (ISO 3166-1 alpha-2); must be in the recipients directory.
    pub own_state: Option<String>,
    /// The reporting organisation's name.
    pub operator: Option<String>,
    pub operator_email: Option<String>,
    /// The POC directory file (`[[state]]` tables).
    pub recipients: Option<PathBuf>,
    /// The Ed25519 private key from `normwatch keygen` (mode 0600).
    pub signing_key: Option<PathBuf>,
    /// Where packages are written.
    pub out_dir: Option<PathBuf>,
    pub tlp: Option<String>,
    pub pap: Option<String>,
    pub deadline_hours: Option<u32>,
    pub geoip: Option<RawGeoip>,
    pub follow_up: Option<RawFollowUp>,
    pub campaign: Option<RawCampaign>,
}

/// `[evidence.campaign]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCampaign {
    /// Whether alerts are grouped into campaigns (default true).
    pub enabled: Option<bool>,
    /// How far apart (event time) two alerts' windows may be and still be one campaign
    /// (default `"1h"`).
    pub window: Option<String>,
    /// Share of the smaller source (or reflector) set both alerts must name (default 0.5).
    pub min_overlap: Option<f64>,
    /// How long (event time) a new campaign's requests wait after its newest alert closed,
    /// for further alerts to join, before one request per State is built (default `"5m"`;
    /// at most `window`).
    pub hold: Option<String>,
}

/// `[evidence.follow_up]` as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFollowUp {
    /// Whether delivered requests are followed up (default true).
    pub enabled: Option<bool>,
    /// How long the named sources must send nothing for their activity to count as stopped
    /// (event time, e.g. `"1h"`; default one hour).
    pub quiet: Option<String>,
    /// When, after the request, the deadline follow-up is sent (event time, e.g. `"24h"`;
    /// default `deadline_hours`).
    pub deadline: Option<String>,
}

/// `[evidence.geoip]` as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGeoip {
    pub country: Option<PathBuf>,
    pub asn: Option<PathBuf>,
    pub anonymous_ip: Option<PathBuf>,
}

/// Validated evidence settings.
#[derive(Clone, Debug, PartialEq)]
pub struct EvidenceConfig {
    pub own_state: String,
    pub operator: Operator,
    pub recipients: PathBuf,
    pub signing_key: PathBuf,
    pub out_dir: PathBuf,
    pub request: RequestSettings,
    pub geoip: GeoPaths,
    pub follow_up: FollowUpSettings,
    pub campaign: crate::campaign::CampaignSettings,
}

/// How delivered requests are followed up (`[evidence.follow_up]`); times are event time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowUpSettings {
    pub enabled: bool,
    /// No traffic from the named sources for this long: their activity stopped.
    pub quiet_ns: u64,
    /// The deadline follow-up is due this long after the request.
    pub deadline_ns: u64,
}

impl Default for FollowUpSettings {
    fn default() -> Self {
        FollowUpSettings {
            enabled: true,
            quiet_ns: 3_600_000_000_000,
            deadline_ns: 24 * 3_600_000_000_000,
        }
    }
}

impl EvidenceConfig {
    /// Validates `raw`; relative paths are taken from `base` (the config file's directory).
    pub fn from_raw(raw: RawEvidence, base: &Path) -> Result<EvidenceConfig, Vec<String>> {
        let mut errs = Vec::new();
        let mut need = |v: Option<String>, key: &str| -> String {
            v.filter(|s| !s.trim().is_empty()).unwrap_or_else(|| {
                errs.push(format!("evidence.{key}: required"));
                String::new()
            })
        };
        let own_state = need(raw.own_state, "own_state");
        let operator = need(raw.operator, "operator");
        let path = |p: Option<PathBuf>, key: &str, errs: &mut Vec<String>| -> PathBuf {
            match p {
                Some(p) if !p.as_os_str().is_empty() => base.join(p),
                _ => {
                    errs.push(format!("evidence.{key}: required"));
                    PathBuf::new()
                }
            }
        };
        if let Some(p) = (!own_state.is_empty())
            .then(|| country_code_problem(&own_state))
            .flatten()
        {
            errs.push(format!("evidence.own_state: {p}"));
        }
        let recipients = path(raw.recipients, "recipients", &mut errs);
        let signing_key = path(raw.signing_key, "signing_key", &mut errs);
        let out_dir = path(raw.out_dir, "out_dir", &mut errs);
        let tlp = match raw.tlp.as_deref() {
            None => Tlp::Amber,
            Some(s) => Tlp::parse(s).unwrap_or_else(|| {
                errs.push(format!(
                    "evidence.tlp: {s:?} is not one of clear, green, amber, amber+strict, red"
                ));
                Tlp::Amber
            }),
        };
        // Every request asks the recipient to filter or block traffic (or trace it back):
        // active measures, which PAP:GREEN allows and PAP:AMBER and PAP:RED forbid.
        let pap = match raw.pap.as_deref() {
            None => Pap::Green,
            Some(s) => match Pap::parse(s) {
                Some(p @ (Pap::Clear | Pap::Green)) => p,
                Some(p) => {
                    errs.push(format!(
                        "evidence.pap: PAP:{} forbids the filtering and blocking every request \
                         asks the recipient for; use green (or clear)",
                        p.as_str().to_uppercase()
                    ));
                    Pap::Green
                }
                None => {
                    errs.push(format!(
                        "evidence.pap: {s:?} is not one of clear, green (amber and red forbid \
                         the requested action)"
                    ));
                    Pap::Green
                }
            },
        };
        let deadline_hours = raw.deadline_hours.unwrap_or(24);
        if deadline_hours == 0 || deadline_hours > 24 * 90 {
            errs.push("evidence.deadline_hours: must be between 1 and 2160".into());
        }
        let geoip = match raw.geoip {
            None => {
                errs.push("evidence.geoip.country: required".into());
                GeoPaths::default()
            }
            Some(g) => GeoPaths {
                country: path(g.country, "geoip.country", &mut errs),
                asn: g.asn.map(|p| base.join(p)),
                anonymous_ip: g.anonymous_ip.map(|p| base.join(p)),
            },
        };
        let follow_up = {
            let raw = raw.follow_up.unwrap_or_default();
            let mut dur = |v: Option<String>, key: &str, default: u64| -> u64 {
                match v {
                    None => default,
                    Some(s) => match humantime::parse_duration(&s) {
                        Ok(d) if !d.is_zero() && d.as_secs() <= 90 * 86_400 => {
                            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
                        }
                        Ok(_) => {
                            errs.push(format!(
                                "evidence.follow_up.{key}: must be between 1s and 90 days"
                            ));
                            default
                        }
                        Err(e) => {
                            errs.push(format!(
                                "evidence.follow_up.{key}: {s:?} is not a duration (e.g. \"1h\"): {e}"
                            ));
                            default
                        }
                    },
                }
            };
            FollowUpSettings {
                enabled: raw.enabled.unwrap_or(true),
                quiet_ns: dur(raw.quiet, "quiet", 3_600_000_000_000),
                deadline_ns: dur(
                    raw.deadline,
                    "deadline",
                    u64::from(deadline_hours) * 3_600_000_000_000,
                ),
            }
        };
        let campaign = {
            let raw = raw.campaign.unwrap_or_default();
            let mut c = crate::campaign::CampaignSettings {
                enabled: raw.enabled.unwrap_or(true),
                ..crate::campaign::CampaignSettings::default()
            };
            if let Some(w) = raw.window {
                match humantime::parse_duration(&w) {
                    Ok(d) if !d.is_zero() => {
                        c.window_ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                    }
                    _ => errs.push(format!(
                        "evidence.campaign.window: {w:?} is not a positive duration (e.g. \"1h\")"
                    )),
                }
            }
            if let Some(h) = raw.hold {
                match humantime::parse_duration(&h) {
                    Ok(d) => c.hold_ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
                    Err(e) => errs.push(format!(
                        "evidence.campaign.hold: {h:?} is not a duration (e.g. \"5m\"): {e}"
                    )),
                }
            }
            if c.hold_ns > c.window_ns {
                errs.push(format!(
                    "evidence.campaign.hold: must be at most evidence.campaign.window ({} s): an \
                     alert further from the campaign than the window never joins it",
                    c.window_ns / 1_000_000_000
                ));
            }
            if let Some(m) = raw.min_overlap {
                if m > 0.0 && m <= 1.0 {
                    c.min_overlap = m;
                } else {
                    errs.push(
                        "evidence.campaign.min_overlap: must be above 0 and at most 1".into(),
                    );
                }
            }
            c
        };
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(EvidenceConfig {
            own_state,
            operator: Operator {
                name: operator,
                email: raw.operator_email,
            },
            recipients,
            signing_key,
            out_dir,
            request: RequestSettings {
                tlp,
                pap,
                deadline_hours,
                action: None,
            },
            geoip,
            follow_up,
            campaign,
        })
    }

    /// Parses the `[evidence]` table of a whole config file's text.
    pub fn from_config_text(text: &str, base: &Path) -> Result<EvidenceConfig, Vec<String>> {
        #[derive(Deserialize)]
        struct Outer {
            evidence: Option<RawEvidence>,
        }
        let outer: Outer = toml::from_str(text).map_err(|e| vec![format!("evidence: {e}")])?;
        let raw = outer
            .evidence
            .ok_or_else(|| vec!["evidence: section missing".to_string()])?;
        EvidenceConfig::from_raw(raw, base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_at_once_and_unknown_keys_rejected() {
        let errs = EvidenceConfig::from_config_text(
            "[evidence]\nown_state = \"fr\"\ntlp = \"purple\"\npap = \"amber\"\n",
            Path::new("/etc/nw"),
        )
        .unwrap_err();
        let all = errs.join("\n");
        for want in [
            "evidence.own_state: \"fr\" must be an ISO 3166-1 code in upper case: FR",
            "evidence.pap: PAP:AMBER forbids the filtering",
            "evidence.operator: required",
            "evidence.tlp:",
            "evidence.recipients: required",
            "evidence.geoip.country: required",
        ] {
            assert!(all.contains(want), "{want} missing in {all}");
        }
        let errs = EvidenceConfig::from_config_text("[evidence]\nbogus = 1\n", Path::new("."))
            .unwrap_err();
        assert!(errs[0].contains("unknown field `bogus`"), "{errs:?}");
        let ok = EvidenceConfig::from_config_text(
            "[evidence]\nown_state = \"FR\"\noperator = \"Grid\"\nrecipients = \"r.toml\"\nsigning_key = \"k\"\nout_dir = \"out\"\ntlp = \"amber+strict\"\n[evidence.geoip]\ncountry = \"c.mmdb\"\n",
            Path::new("/etc/nw"),
        )
        .unwrap();
        assert_eq!(ok.recipients, Path::new("/etc/nw/r.toml"));
        assert_eq!(ok.request.tlp, Tlp::AmberStrict);
        // Every request asks for filtering: PAP:GREEN unless the operator says clear.
        assert_eq!(ok.request.pap, Pap::Green);
        assert_eq!(ok.follow_up, FollowUpSettings::default());
    }

    #[test]
    fn follow_up_times_are_durations_and_the_deadline_defaults_to_the_request_s() {
        let base = "[evidence]\nown_state = \"FR\"\noperator = \"Grid\"\nrecipients = \"r.toml\"\nsigning_key = \"k\"\nout_dir = \"out\"\ndeadline_hours = 6\n[evidence.geoip]\ncountry = \"c.mmdb\"\n";
        let ok = EvidenceConfig::from_config_text(base, Path::new(".")).unwrap();
        assert_eq!(ok.follow_up.deadline_ns, 6 * 3_600_000_000_000);
        let ok = EvidenceConfig::from_config_text(
            &format!("{base}[evidence.follow_up]\nquiet = \"90s\"\ndeadline = \"2h\"\n"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(ok.follow_up.quiet_ns, 90_000_000_000);
        assert_eq!(ok.follow_up.deadline_ns, 2 * 3_600_000_000_000);
        let errs = EvidenceConfig::from_config_text(
            &format!("{base}[evidence.follow_up]\nquiet = \"soon\"\ndeadline = \"0s\"\n"),
            Path::new("."),
        )
        .unwrap_err()
        .join("\n");
        assert!(
            errs.contains("evidence.follow_up.quiet: \"soon\" is not a duration"),
            "{errs}"
        );
        assert!(
            errs.contains("evidence.follow_up.deadline: must be between"),
            "{errs}"
        );
    }

    #[test]
    fn the_campaign_hold_is_a_duration_within_the_campaign_window() {
        let base = "[evidence]\nown_state = \"FR\"\noperator = \"Grid\"\nrecipients = \"r.toml\"\nsigning_key = \"k\"\nout_dir = \"out\"\n[evidence.geoip]\ncountry = \"c.mmdb\"\n";
        let ok = EvidenceConfig::from_config_text(base, Path::new(".")).unwrap();
        assert_eq!(ok.campaign.hold_ns, 300_000_000_000);
        let ok = EvidenceConfig::from_config_text(
            &format!("{base}[evidence.campaign]\nhold = \"0s\"\n"),
            Path::new("."),
        )
        .unwrap();
        assert_eq!(ok.campaign.hold_ns, 0);
        for (text, want) in [
            (
                "hold = \"later\"",
                "evidence.campaign.hold: \"later\" is not a duration",
            ),
            (
                "window = \"2m\"\nhold = \"3m\"",
                "evidence.campaign.hold: must be at most evidence.campaign.window (120 s)",
            ),
        ] {
            let errs = EvidenceConfig::from_config_text(
                &format!("{base}[evidence.campaign]\n{text}\n"),
                Path::new("."),
            )
            .unwrap_err()
            .join("\n");
            assert!(errs.contains(want), "{errs}");
        }
    }
}
