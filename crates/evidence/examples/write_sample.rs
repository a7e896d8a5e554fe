//! Writes the sample packages (one per recipient State of a sample SYN flood whose sources are
//! looked up in MaxMind's test databases) and the signer's public key into a directory, for the
//! independent validators in `tests/evidence/check.sh`. Each directory also carries one
//! delivery (`sent`) entry in its custody log.
//!
//! Usage: `write_sample OUT_DIR GEOIP_DIR NORMS_TOML`

use normwatch_config::norms::load_norms;
use normwatch_evidence::attribution::{GeoDb, GeoPaths};
use normwatch_evidence::keys::SecretKey;
use normwatch_evidence::package::{self, BuildInput, Operator, RequestSettings};
use normwatch_evidence::recipients;
use normwatch_evidence::sample;
use normwatch_evidence::tlp::Tlp;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out, geoip, norms] = args.as_slice() else {
        return Err("usage: write_sample OUT_DIR GEOIP_DIR NORMS_TOML".into());
    };
    let out = PathBuf::from(out);
    let geoip = PathBuf::from(geoip);
    std::fs::create_dir_all(&out)?;
    let db = GeoDb::open(&GeoPaths {
        country: geoip.join("GeoLite2-Country-Test.mmdb"),
        asn: Some(geoip.join("GeoLite2-ASN-Test.mmdb")),
        anonymous_ip: Some(geoip.join("GeoIP2-Anonymous-IP-Test.mmdb")),
    })?;
    let sources: Vec<(IpAddr, bool)> = [
        ("89.160.20.112", false),
        ("89.160.20.130", true),
        ("2.125.160.216", false),
        ("216.160.83.56", false),
        ("10.9.8.7", false),
        ("2001:218::1", false),
    ]
    .iter()
    .map(|(a, r)| Ok((a.parse()?, *r)))
    .collect::<Result<_, std::net::AddrParseError>>()?;
    let alert = sample::alert(&sources);
    let flows = sample::flows(&alert, 3);
    let mut attributions = BTreeMap::new();
    for s in &alert.top_sources {
        attributions.insert(s.addr, db.lookup(s.addr)?);
    }
    let dir = sample::directory();
    let plan = recipients::plan(&alert, &attributions, &[], &dir, "NL", Tlp::Amber)?;
    let key = SecretKey::from_seed(&[42; 32]);
    let pub_path = out.join("signer.pub");
    std::fs::write(
        &pub_path,
        serde_json::to_string_pretty(&key.public().to_json())?,
    )?;
    let norms = load_norms(std::path::Path::new(norms))?;
    let operator = Operator {
        name: "Example Grid Operator".into(),
        email: Some("soc@grid.example".into()),
    };
    let requester = dir.get("NL").ok_or("no NL entry")?;
    for p in &plan.packages {
        let pkg = package::build(
            BuildInput {
                alert: &alert,
                flows: &flows,
                planned: p,
                requester,
                operator: &operator,
                asset_operator: None,
                settings: &RequestSettings::default(),
                norms: &norms,
                geo: &db.provenance(),
                packaged_at_ns: sample::START_NS + 3_600_000_000_000,
                flows_received_ns: None,
            },
            &key,
        )?;
        let d = out.join(&pkg.id);
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        let dir = pkg.write_dir(&out)?;
        pkg.write_tar(&out)?;
        // The directory copy also carries a delivery record, as a stored package would.
        package::record_sent(
            &dir,
            &key,
            "NCSC-NL",
            "directory outbox",
            sample::START_NS + 3_660_000_000_000,
        )?;
    }
    Ok(())
}
