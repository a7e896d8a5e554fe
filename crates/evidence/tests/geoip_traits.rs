//! The GeoIP2 Country/City traits `is_anonymous_proxy` and `is_satellite_provider`, read from a
//! real MaxMind DB file: MaxMind's public test databases carry no such rows, so the test writes
//! a Country database with them (`mmdb-writer`) and reads it through `GeoDb` as the packager
//! does (addresses from MaxMind's test rows; nothing is sent). An anonymiser or a satellite provider is never a source a State is asked about.

use mmdb_writer::ipnet::IpNet;
use normwatch_evidence::attribution::{GeoDb, GeoPaths};
use normwatch_evidence::recipients::{self, Disposition};
use normwatch_evidence::sample;
use normwatch_evidence::tlp::Tlp;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;

#[derive(Serialize)]
struct Country {
    iso_code: &'static str,
}

#[derive(Serialize, Default)]
struct Traits {
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_anonymous_proxy: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    is_satellite_provider: bool,
}

/// A row shaped like GeoIP2-Country's.
#[derive(Serialize)]
struct Row {
    country: Country,
    registered_country: Country,
    traits: Traits,
}

fn row(located: &'static str, registered: &'static str, traits: Traits) -> Row {
    Row {
        country: Country { iso_code: located },
        registered_country: Country {
            iso_code: registered,
        },
        traits,
    }
}

/// Writes the database: one ordinary block (registered and located in DE), one anonymous
/// proxy (registered SE), one satellite provider (registered DE, located in NL).
fn write_db(dir: &std::path::Path) -> std::path::PathBuf {
    let mut w = mmdb_writer::Writer::builder("GeoIP2-Country")
        .description(&[("en", "normwatch test rows with GeoIP2 Country traits")])
        .build();
    let rows = [
        ("81.2.69.0/25", row("DE", "DE", Traits::default())),
        (
            "81.2.69.128/25",
            row(
                "SE",
                "SE",
                Traits {
                    is_anonymous_proxy: true,
                    ..Traits::default()
                },
            ),
        ),
        (
            "2.125.160.0/24",
            row(
                "NL",
                "DE",
                Traits {
                    is_satellite_provider: true,
                    ..Traits::default()
                },
            ),
        ),
    ];
    for (net, r) in &rows {
        w.insert(net.parse::<IpNet>().unwrap(), r).unwrap();
    }
    let path = dir.join("GeoIP2-Country-Traits.mmdb");
    std::fs::write(&path, w.to_bytes().unwrap()).unwrap();
    path
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn country_database_traits_mark_anonymisers_and_satellite_providers() {
    let dir = tempfile::tempdir().unwrap();
    let db = GeoDb::open(&GeoPaths {
        country: write_db(dir.path()),
        asn: None,
        anonymous_ip: None,
    })
    .unwrap();

    let plain = db.lookup(ip("81.2.69.7")).unwrap();
    assert_eq!(plain.registered_country.as_deref(), Some("DE"));
    assert!(!plain.anonymous_proxy && !plain.satellite_provider);
    assert!(!plain.location_disagrees());

    let proxy = db.lookup(ip("81.2.69.200")).unwrap();
    assert!(proxy.anonymous_proxy, "{proxy:?}");
    assert!(!proxy.satellite_provider);

    let satellite = db.lookup(ip("2.125.160.9")).unwrap();
    assert!(satellite.satellite_provider, "{satellite:?}");
    assert!(!satellite.anonymous_proxy);
    assert!(satellite.location_disagrees(), "registered DE, located NL");

    // Routed as the packager routes them: only the ordinary block's address is a source a
    // State is asked about; the proxy and the satellite provider go to providers' abuse desks.
    let addrs = [ip("81.2.69.7"), ip("81.2.69.200"), ip("2.125.160.9")];
    let sources: Vec<(IpAddr, bool)> = addrs.iter().map(|a| (*a, false)).collect();
    let alert = sample::alert(&sources);
    let attributions: BTreeMap<IpAddr, _> =
        addrs.iter().map(|a| (*a, db.lookup(*a).unwrap())).collect();
    let plan = recipients::plan(
        &alert,
        &attributions,
        &[],
        &sample::directory(),
        "FR",
        Tlp::Amber,
    )
    .unwrap();
    let asked: Vec<IpAddr> = plan
        .packages
        .iter()
        .flat_map(|p| p.sources.iter().map(|s| s.source.addr))
        .collect();
    assert_eq!(asked, vec![ip("81.2.69.7")], "{plan:#?}");
    let abuse: BTreeMap<IpAddr, Disposition> = plan
        .packages
        .iter()
        .flat_map(|p| p.provider_abuse.iter())
        .map(|s| (s.source.addr, s.disposition))
        .collect();
    assert_eq!(
        abuse.get(&ip("81.2.69.200")),
        Some(&Disposition::Anonymiser)
    );
    assert_eq!(
        abuse.get(&ip("2.125.160.9")),
        Some(&Disposition::SatelliteProvider)
    );
}
