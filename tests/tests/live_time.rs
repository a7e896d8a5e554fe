//! Live time, in event time: packets → flow table (interim reports at the deployed default) →
//! detector, records handed over as the flow table emits them, as `normwatch run` does. An
//! alert follows the attack's packets, not the end of its flows.

use normwatch_config::norms::{load_norms, NormCatalogue};
use normwatch_detect::{Detector, Settings};
use normwatch_model::{
    Alert, AlertKind, AlertState, Asset, AssetId, AssetIndex, FlowRecord, Rates, Role, Sector,
    Thresholds,
};
use normwatch_sensor::decode::LinkType;
use normwatch_sensor::flow::{FlowConfig, FlowTable};
use normwatch_simulate::packet::{tcp, udp};
use normwatch_tests::{capture, config, flows_of};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;

const NS: u64 = 1_000_000_000;
/// The sensor's default report interval (`sensor.report_interval`).
const REPORT_NS: u64 = 100_000_000;
/// An event time well inside a second, so nothing lines up with second boundaries by luck.
const T0: u64 = 1_700_000_000 * NS + 370_000_000;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;

fn norms() -> NormCatalogue {
    load_norms(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/norms.toml"))
        .unwrap_or_else(|e| panic!("{e}"))
}

fn asset(id: &str, cidr: &str, roles: &[Role], total: Rates) -> Asset {
    Asset {
        id: AssetId(Arc::from(id)),
        name: id.into(),
        operator: "Example operator".into(),
        sector: Sector::Water,
        service: "a public service".into(),
        cidrs: vec![cidr.parse().unwrap()],
        roles: roles.to_vec(),
        service_ports: vec![],
        thresholds: Thresholds {
            total,
            ..Thresholds::default()
        },
        allow: vec![],
    }
}

/// A wire: frames with their event times, in time order.
#[derive(Default)]
struct Wire(Vec<(u64, Vec<u8>)>);

impl Wire {
    fn add(&mut self, ts: u64, frame: Vec<u8>) {
        self.0.push((ts, frame));
    }

    fn sorted(mut self) -> Vec<(u64, Vec<u8>)> {
        self.0.sort_by_key(|(t, _)| *t);
        self.0
    }
}

/// An alert event and the event time of the packet after which the detector raised it.
struct Raised {
    alert: Alert,
    at_ns: u64,
}

/// Replays `frames` through a flow table reporting every `report_ns` (or only at flow ends)
/// and the detector, handing each frame's records over at once.
fn replay(frames: &[(u64, Vec<u8>)], assets: Vec<Asset>, report_ns: Option<u64>) -> Vec<Raised> {
    let index = Arc::new(AssetIndex::new(assets).unwrap());
    let mut table = FlowTable::new(FlowConfig {
        report_ns,
        assets: index.clone(),
        ..config(false)
    });
    let mut d = Detector::new(index, norms(), Settings::default());
    let (mut recs, mut alerts, mut raised) = (Vec::new(), Vec::new(), Vec::new());
    for (ts, f) in frames {
        table.process_frame(LinkType::Ethernet, f, f.len(), *ts, &mut recs);
        if !recs.is_empty() {
            d.process(&recs, &mut alerts);
            recs.clear();
            raised.extend(alerts.drain(..).map(|alert| Raised { alert, at_ns: *ts }));
        }
    }
    let end = frames.last().map_or(0, |(t, _)| *t);
    table.flush(&mut recs);
    d.process(&recs, &mut alerts);
    d.finish(&mut alerts);
    raised.extend(alerts.drain(..).map(|alert| Raised { alert, at_ns: end }));
    raised
}

fn opened(r: &[Raised]) -> Vec<&Raised> {
    r.iter()
        .filter(|x| x.alert.state == AlertState::Open)
        .collect()
}

fn v4(a: u32) -> Ipv4Addr {
    Ipv4Addr::from(a)
}

#[test]
fn a_two_minute_reflection_attack_alert_starts_within_a_second_of_its_first_packet() {
    let victim = v4(0xC000_020A); // 192.0.2.10
    let mut w = Wire::default();
    // Benign: the victim's own DNS lookups, answered, for a minute before the attack.
    for i in 0..600u64 {
        let t = T0 - 60 * NS + i * 100_000_000;
        w.add(t, udp(victim, 40_000, v4(0x0808_0808), 53, &[0; 40]));
        w.add(
            t + 5_000_000,
            udp(v4(0x0808_0808), 53, victim, 40_000, &[0; 120]),
        );
    }
    // Two minutes of unsolicited DNS responses from 40 resolvers, 2 000 per second in all:
    // each resolver's datagrams are one long flow (UDP idle timeout 60 s).
    let start = T0;
    for i in 0..240_000u64 {
        let t = start + i * 500_000;
        let r = v4(0xCB00_7100 + (i % 40) as u32);
        w.add(t, udp(r, 53, victim, 33_000, &[0; 1_200]));
    }
    let frames = w.sorted();
    let assets = vec![asset("water", "192.0.2.0/24", &[], Rates::default())];
    let live = replay(&frames, assets.clone(), Some(REPORT_NS));
    let open = opened(&live);
    assert_eq!(open.len(), 1, "one alert for one attack");
    let a = &open[0];
    assert_eq!(a.alert.kind, AlertKind::UdpAmplification);
    let late = a.alert.window_start_ns.abs_diff(start);
    assert!(late < NS, "window starts {late} ns from the first packet");
    assert!(
        a.at_ns < start + 2 * NS,
        "raised {} ns after the first packet",
        a.at_ns - start
    );
    // Its reflectors are every resolver, named as reflectors.
    let closed = live
        .iter()
        .rfind(|x| x.alert.state == AlertState::Closed)
        .unwrap();
    assert_eq!(closed.alert.top_sources.len(), 40);
    assert!(closed.alert.top_sources.iter().all(|s| s.reflector));
}

/// A Modbus/TCP request: MBAP header, unit 1, then the PDU.
fn modbus(tid: u16, pdu: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(7 + pdu.len());
    m.extend_from_slice(&tid.to_be_bytes());
    m.extend_from_slice(&0u16.to_be_bytes());
    m.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
    m.push(1);
    m.extend_from_slice(pdu);
    m
}

#[test]
fn a_command_in_a_session_held_open_for_ten_minutes_alerts_at_its_second() {
    let (hmi, plc) = (v4(0xC633_6407), v4(0xC000_0216)); // 198.51.100.7 → 192.0.2.22
    let (cp, sp) = (49_152u16, 502u16);
    let mut w = Wire::default();
    let (mut cs, mut ss) = (1_000u32, 9_000u32);
    w.add(T0, tcp(hmi, cp, plc, sp, cs, 0, SYN, &[]));
    w.add(
        T0 + 1_000_000,
        tcp(plc, sp, hmi, cp, ss, cs + 1, SYN | ACK, &[]),
    );
    cs += 1;
    ss += 1;
    w.add(T0 + 2_000_000, tcp(hmi, cp, plc, sp, cs, ss, ACK, &[]));
    // Polls (reads of holding registers, function 3) every second for ten minutes; at five
    // minutes, one write of a register (function 6) from the same session.
    let command_at = T0 + 300 * NS + 500_000_000;
    let mut tid = 1u16;
    for s in 1..600u64 {
        let t = T0 + s * NS;
        let mut send = |t: u64, pdu: &[u8], w: &mut Wire| {
            let req = modbus(tid, pdu);
            w.add(t, tcp(hmi, cp, plc, sp, cs, ss, PSH | ACK, &req));
            cs += req.len() as u32;
            let resp = modbus(tid, &[pdu[0], 2, 0, 1]);
            w.add(
                t + 3_000_000,
                tcp(plc, sp, hmi, cp, ss, cs, PSH | ACK, &resp),
            );
            ss += resp.len() as u32;
            tid = tid.wrapping_add(1);
        };
        send(t, &[3, 0, 0, 0, 1], &mut w);
        if t < command_at && command_at < t + NS {
            send(command_at, &[6, 0, 10, 0, 99], &mut w);
        }
    }
    let frames = w.sorted();
    let assets = vec![asset("plc", "192.0.2.22/32", &[Role::Ot], Rates::default())];
    let live = replay(&frames, assets, Some(REPORT_NS));
    let open = opened(&live);
    assert_eq!(open.len(), 1, "one command, one alert");
    let a = &open[0];
    assert_eq!(a.alert.kind, AlertKind::IcsCommandAbuse);
    assert_eq!(a.alert.window_start_ns / NS, command_at / NS);
    assert!(
        a.at_ns <= command_at + NS,
        "raised {} ms after the command",
        (a.at_ns - command_at) / 1_000_000
    );
}

/// New connections per second, as the records say: each flow's first record counts it.
fn new_per_second(records: &[FlowRecord]) -> BTreeMap<u64, u64> {
    let mut m = BTreeMap::new();
    for r in records.iter().filter(|r| r.is_first_report()) {
        *m.entry(r.first_ns / NS).or_default() += 1;
    }
    m
}

const SYN_FLOOD: &str = "packet-captures/pkt.TCP.synflood.spoofed.pcap";

#[test]
fn interim_reports_leave_the_new_flow_rate_and_the_alerts_unchanged() {
    let assets = vec![asset(
        "web",
        "10.10.10.0/24",
        &[],
        Rates {
            pps: Some(20_000),
            bps: Some(100_000_000),
            new_flows_per_s: Some(200),
        },
    )];
    let run = |report_ns: Option<u64>| {
        let mut cfg = config(false);
        cfg.report_ns = report_ns;
        cfg.assets = Arc::new(AssetIndex::new(assets.clone()).unwrap());
        let index = cfg.assets.clone();
        let (recs, _) = flows_of(&capture(SYN_FLOOD), cfg).unwrap_or_else(|(_, e)| panic!("{e}"));
        let mut d = Detector::new(index, norms(), Settings::default());
        let mut out = Vec::new();
        for chunk in recs.chunks(256) {
            d.process(chunk, &mut out);
        }
        d.finish(&mut out);
        (recs, out)
    };
    let (whole, whole_alerts) = run(None);
    let (interim, interim_alerts) = run(Some(REPORT_NS));
    assert!(
        interim.len() > whole.len(),
        "interim reports were made ({} records, {} flows)",
        interim.len(),
        whole.len()
    );
    assert_eq!(new_per_second(&whole), new_per_second(&interim));
    // Every final record carries the same totals as without interim reports.
    let finals: Vec<_> = interim
        .iter()
        .filter(|r| r.end_reason.is_final())
        .map(|r| (r.flow_id, r.orig, r.resp, r.conn_state))
        .collect();
    let mut plain: Vec<_> = whole
        .iter()
        .map(|r| (r.flow_id, r.orig, r.resp, r.conn_state))
        .collect();
    let mut finals_sorted = finals.clone();
    finals_sorted.sort_by_key(|x| x.0);
    plain.sort_by_key(|x| x.0);
    assert_eq!(finals_sorted, plain);
    // The same attack: one SYN flood, with the same peak figures.
    let kinds = |a: &[Alert]| -> Vec<AlertKind> {
        a.iter()
            .filter(|x| x.state == AlertState::Open)
            .map(|x| x.kind)
            .collect()
    };
    assert_eq!(kinds(&whole_alerts), [AlertKind::SynFlood]);
    assert_eq!(kinds(&interim_alerts), [AlertKind::SynFlood]);
    let last = |a: &[Alert]| a.last().unwrap().measured;
    assert_eq!(last(&whole_alerts), last(&interim_alerts));
}

#[test]
fn an_alert_peak_at_end_of_input_is_the_real_peak_second() {
    let victim = v4(0xC000_020A);
    let mut w = Wire::default();
    // A SYN flood from spoofed sources that grows every second for eight seconds, the
    // capture ending in its busiest second.
    let mut per_second = Vec::new();
    let mut n = 0u32;
    for s in 0..8u64 {
        let pps = 1_500 + 400 * s;
        per_second.push(pps);
        for i in 0..pps {
            let t = T0 - T0 % NS + s * NS + i * (NS / pps);
            n += 1;
            let src = v4(0x6400_0000 + n);
            w.add(
                t,
                tcp(src, 1_024 + (n % 60_000) as u16, victim, 80, n, 0, SYN, &[]),
            );
        }
    }
    let frames = w.sorted();
    let assets = vec![asset(
        "web",
        "192.0.2.0/24",
        &[],
        Rates {
            pps: Some(1_000),
            ..Rates::default()
        },
    )];
    let live = replay(&frames, assets, Some(REPORT_NS));
    let closed = live
        .iter()
        .rfind(|x| x.alert.state == AlertState::Closed)
        .expect("the alert closes at end of input");
    let peak = *per_second.iter().max().unwrap() as f64;
    assert_eq!(
        closed.alert.measured.pps, peak,
        "{:?}",
        closed.alert.measured
    );
}
