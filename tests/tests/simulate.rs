//! `normwatch simulate`'s scenarios read back through the sensor: well-formed packets (no
//! drop with checksums verified), the attacks and the background they claim, and the same
//! bytes every time.

use normwatch_model::{ConnState, FlowRecord};
use normwatch_simulate::{write_scenario, SimulateError, SCENARIOS};
use normwatch_tests::{config, flows_of};
use std::net::IpAddr;

fn flows(name: &str) -> (Vec<FlowRecord>, normwatch_sensor::SensorStats, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{name}.pcap"));
    let file = std::fs::File::create(&path).unwrap();
    let w = write_scenario(name, std::io::BufWriter::new(file)).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (f, stats) = flows_of(&path, config(true)).unwrap_or_else(|(_, e)| panic!("{e}"));
    assert_eq!(stats.packets, w.packets);
    (f, stats, bytes)
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn every_scenario_decodes_without_a_drop() {
    for (name, _) in SCENARIOS {
        let (f, stats, _) = flows(name);
        assert!(!f.is_empty(), "{name}");
        assert_eq!(stats.drops.iter().sum::<u64>(), 0, "{name}: {stats:?}");
    }
}

#[test]
fn all_holds_each_attack_and_the_background() {
    let (f, _, _) = flows("all");
    // The SYN flood: tens of thousands of never-answered attempts on the portal.
    let portal = addr("203.0.113.10");
    let s0 = f
        .iter()
        .filter(|r| r.resp_addr == portal && r.conn_state == ConnState::S0)
        .count();
    assert!(s0 > 50_000, "{s0} unanswered attempts");
    let completed = f
        .iter()
        .filter(|r| r.resp_addr == portal && r.conn_state == ConnState::SF)
        .count();
    assert!(completed > 1_000, "{completed} completed sessions");
    // The amplification: resolvers' port 53 answers to the water utility.
    let water = addr("198.51.100.20");
    // Whichever side the flow table calls the originator, count what port 53 sent.
    let dns: u64 = f
        .iter()
        .filter(|r| r.ip_proto == 17)
        .map(|r| match (r.orig_port, r.resp_port) {
            (53, _) if r.resp_addr == water => r.orig.ip_bytes,
            (_, 53) if r.orig_addr == water => r.resp.ip_bytes,
            _ => 0,
        })
        .sum();
    assert!(dns > 10_000_000, "{dns} bytes of DNS answers");
    // Modbus: the master only reads; the outside host writes.
    let ics = |src: &str| {
        f.iter()
            .filter(|r| r.orig_addr == addr(src))
            .filter_map(|r| r.ics.as_ref())
            .map(|i| i.orig)
            .collect::<Vec<_>>()
    };
    let master = ics("10.10.10.5");
    assert_eq!(master.len(), 1);
    assert!(master[0].read > 200 && master[0].write == 0, "{master:?}");
    let writer = ics("67.43.156.14");
    assert_eq!(writer.len(), 1);
    assert_eq!(writer[0].write, 6, "{writer:?}");
    let stopper = ics("89.160.20.115");
    assert_eq!(stopper.len(), 1);
    assert_eq!(stopper[0].stop_restart, 1, "{stopper:?}");
}

#[test]
fn a_scenario_is_the_same_bytes_every_time() {
    let (_, _, one) = flows("modbus-write");
    let (_, _, two) = flows("modbus-write");
    assert_eq!(one, two);
}

#[test]
fn an_unknown_scenario_is_a_clear_error() {
    let err = write_scenario("ddos", std::io::sink()).unwrap_err();
    assert!(matches!(err, SimulateError::Unknown(_)));
    assert!(err.to_string().contains("known: syn-flood"), "{err}");
}

#[test]
fn the_campaign_floods_three_services_from_two_states_and_only_one_state_stops() {
    use normwatch_simulate::{campaign_hosts, CAMPAIGN_DE_STOP, CAMPAIGN_END, START_SECS};
    let (f, _, _) = flows("campaign");
    let s = 1_000_000_000u64;
    let last_from = |hosts: &[std::net::Ipv4Addr]| {
        f.iter()
            .filter(|r| hosts.iter().any(|h| IpAddr::V4(*h) == r.orig_addr))
            .map(|r| r.last_ns)
            .max()
            .unwrap()
    };
    let de = campaign_hosts(false);
    let us = campaign_hosts(true);
    let start = START_SECS * s;
    assert!(last_from(&de) < start + CAMPAIGN_DE_STOP * s);
    assert!(last_from(&de) > start + (CAMPAIGN_DE_STOP - 10) * s);
    assert!(last_from(&us) > start + (CAMPAIGN_END - 10) * s);
    // Each service is flooded by hosts of both States.
    for victim in ["203.0.113.10", "198.51.100.20", "192.0.2.10"] {
        let unanswered = |hosts: &[std::net::Ipv4Addr]| {
            f.iter()
                .filter(|r| r.resp_addr == addr(victim) && r.conn_state == ConnState::S0)
                .filter(|r| hosts.iter().any(|h| IpAddr::V4(*h) == r.orig_addr))
                .count()
        };
        assert!(unanswered(&de) > 10_000, "{victim}");
        assert!(unanswered(&us) > 10_000, "{victim}");
    }
}
