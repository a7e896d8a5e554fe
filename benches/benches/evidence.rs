//! Evidence packages built per second for an alert with 10 000 sources: the recipient plan,
//! then one signed package (STIX bundle with 30 000 SCOs and relationships, MISP event, flows,
//! letter, custody, canonical manifest, DSSE signature), and the same with its `.tar`.
//!
//! `cargo bench -p normwatch-benches --bench evidence`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use normwatch_config::norms::parse_norms;
use normwatch_evidence::attribution::Attribution;
use normwatch_evidence::keys::SecretKey;
use normwatch_evidence::package::{self, BuildInput, Operator, RequestSettings};
use normwatch_evidence::recipients::{self, Directory, Recipient};
use normwatch_evidence::sample;
use normwatch_evidence::tlp::Tlp;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

const SOURCES: u32 = 10_000;

fn recipient(code: &str) -> Recipient {
    Recipient {
        code: code.into(),
        name: format!("CSIRT {code}"),
        language: "en".into(),
        tlp_accepted: Tlp::ALL.to_vec(),
        public_key: None,
        email: None,
        channels: vec![],
    }
}

fn packages(c: &mut Criterion) {
    // 10 000 routable sources in 11.0.0.0/8, one flow each, registered in DE across 40 ASes;
    // every tenth is a reflector (provider-abuse section).
    let sources: Vec<(IpAddr, bool)> = (0..SOURCES)
        .map(|i| (IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + i * 3)), i % 10 == 0))
        .collect();
    let alert = sample::alert(&sources);
    let flows = sample::flows(&alert, 1);
    let attributions: BTreeMap<IpAddr, Attribution> = alert
        .top_sources
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let asn = 64_500 + (i % 40) as u32;
            (
                s.addr,
                Attribution {
                    addr: Some(s.addr),
                    prefix: format!("{}/24", s.addr)
                        .parse::<ipnet::IpNet>()
                        .ok()
                        .map(|n| n.trunc()),
                    asn: Some(asn),
                    as_org: Some(format!("Example Networks {asn}")),
                    asn_prefix: None,
                    geo_country: Some("DE".into()),
                    registered_country: Some("DE".into()),
                    represented_country: None,
                    anonymous: None,
                    anonymous_proxy: false,
                    satellite_provider: false,
                },
            )
        })
        .collect();
    let directory = Directory::new(vec![recipient("NL"), recipient("DE")]).expect("directory");
    let norms = parse_norms(
        include_str!("../../config/norms.toml"),
        Path::new("norms.toml"),
    )
    .expect("norm catalogue");
    let key = SecretKey::from_seed(&[9; 32]);
    let operator = Operator {
        name: "Bench Operator".into(),
        email: None,
    };
    let settings = RequestSettings::default();
    let build = || {
        let plan = recipients::plan(&alert, &attributions, &[], &directory, "NL", Tlp::Amber)
            .expect("plan");
        plan.packages
            .iter()
            .map(|p| {
                package::build(
                    BuildInput {
                        alert: &alert,
                        flows: &flows,
                        planned: p,
                        requester: directory.get("NL").expect("NL"),
                        operator: &operator,
                        asset_operator: None,
                        settings: &settings,
                        norms: &norms,
                        geo: &[],
                        packaged_at_ns: sample::START_NS + 3_600_000_000_000,
                        flows_received_ns: None,
                    },
                    &key,
                )
                .expect("package")
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(build().len(), 1);

    let mut g = c.benchmark_group("evidence_10k_sources");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1));
    g.bench_function("plan_and_build_package", |b| b.iter(|| black_box(build())));
    g.bench_function("plan_build_and_tar", |b| {
        b.iter(|| {
            let p = build();
            black_box(p[0].tar_bytes().expect("tar"))
        })
    });
    g.finish();
}

criterion_group!(benches, packages);
criterion_main!(benches);
