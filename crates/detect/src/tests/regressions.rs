//! One test per defect of issue 17 ("detector verdicts a CSIRT can trust"), each on a crafted
//! record sequence, named after the defect it keeps fixed.

use super::*;

/// Unsolicited datagrams from reflector port `port` of `n` reflectors in second `sec`, each to
/// one of `addrs` addresses of 192.0.2.0/24 (from .1), at a random-looking port of the asset.
fn reflection_over_prefix(
    d: &Detector,
    sec: u64,
    n: u64,
    port: u16,
    addrs: u32,
) -> Vec<FlowRecord> {
    (0..n)
        .map(|i| {
            let refl = v4(0xC633_6400 + (i as u32 % 200));
            let dst = v4(0xC000_0201 + (i as u32 % addrs));
            rec(
                d,
                17,
                (refl, port),
                (dst, 20_000 + (i * 7_919 % 40_000) as u16),
                sec * NS + i * (NS / n.max(1)),
                dir(1, 1_200),
                dir(0, 0),
                ConnState::S0,
            )
        })
        .collect()
}

#[test]
fn reflection_from_ike_and_nat_t_is_amplification_and_no_reflector_is_a_scanner() {
    // Defect 3: reflection from ports reflect.rs did not list (IKE 500, NAT-T 4500) was a
    // volumetric flood naming reflectors as attack sources, and unsolicited datagrams from an
    // unlisted port were scan probes, so reflection spread over a prefix made each reflector
    // a scanner.
    let mut d = detector(
        vec![asset(
            "vpn",
            "192.0.2.0/24",
            total(1_000, 10_000_000_000, 100_000),
        )],
        Settings::default(),
    );
    let mut recs = Vec::new();
    for sec in 100..104 {
        recs.extend(reflection_over_prefix(&d, sec, 1_500, 500, 50));
        recs.extend(reflection_over_prefix(&d, sec, 1_500, 4_500, 50));
    }
    let out = run(&mut d, &recs);
    assert_eq!(
        opened(&out),
        [(AlertKind::UdpAmplification, "vpn".into())],
        "{out:#?}"
    );
    let last = out.last().unwrap();
    assert!(last.summary.contains("IKE"), "{}", last.summary);
    assert!(!last.top_sources.is_empty());
    assert!(last.top_sources.iter().all(|s| s.reflector));
    assert!(last.spoofing.is_none(), "reflectors are real hosts");
}

#[test]
fn unsolicited_datagrams_from_a_well_known_port_are_not_scan_probes() {
    // Defect 3, its second half: below every flood limit, one reflector answering from an
    // unlisted well-known port to many addresses and ports of the asset is no scanner.
    let mut d = detector(
        vec![asset("net", "192.0.2.0/24", Thresholds::default())],
        Settings::default(),
    );
    let recs: Vec<FlowRecord> = (0..40u64)
        .map(|i| {
            rec(
                &d,
                17,
                (ip("198.51.100.7"), 999),
                (v4(0xC000_0201 + i as u32), 30_000 + i as u16),
                (100 + i) * NS,
                dir(1, 600),
                dir(0, 0),
                ConnState::S0,
            )
        })
        .collect();
    let out = run(&mut d, &recs);
    assert!(out.iter().all(|a| a.kind != AlertKind::Scan), "{out:#?}");
}

/// Unsolicited SYN-ACKs from `n` servers (ports 80 and 443) towards 192.0.2.10, one to three
/// packets each, in second `sec`; the asset answers some with a RST.
fn syn_ack_reflection(d: &Detector, sec: u64, n: u64) -> Vec<FlowRecord> {
    (0..n)
        .map(|i| {
            let server = v4(0x0B00_0000 + i as u32 * 13);
            let pkts = 1 + i % 3;
            let rst = if i % 2 == 0 {
                tcp_dir(1, 40, 0, R)
            } else {
                dir(0, 0)
            };
            rec(
                d,
                6,
                (server, if i % 2 == 0 { 80 } else { 443 }),
                (ip("192.0.2.10"), 10_000 + (i % 50_000) as u16),
                sec * NS + i * (NS / n.max(1)),
                tcp_dir(pkts, 44 * pkts, 0, S | A),
                rst,
                ConnState::REJ,
            )
        })
        .collect()
}

#[test]
fn syn_ack_reflection_is_reflection_and_its_sources_are_reflectors() {
    // Defect 3: TCP SYN-ACK reflection's sources were never marked as reflectors.
    let mut d = detector(
        vec![asset(
            "web",
            "192.0.2.0/24",
            total(1_000, 10_000_000_000, 1_000),
        )],
        Settings::default(),
    );
    let mut recs = Vec::new();
    for sec in 100..103 {
        recs.extend(syn_ack_reflection(&d, sec, 5_000));
    }
    let out = run(&mut d, &recs);
    assert_eq!(
        opened(&out),
        [(AlertKind::UdpAmplification, "web".into())],
        "{out:#?}"
    );
    let last = out.last().unwrap();
    assert!(last.summary.contains("HTTP"), "{}", last.summary);
    assert!(last.top_sources.len() > 10);
    assert!(
        last.top_sources.iter().all(|s| s.reflector),
        "{:#?}",
        last.top_sources
    );
    assert!(last.spoofing.is_none());
}

#[test]
fn a_download_is_not_syn_ack_reflection() {
    // The guard of TCP reflection: the asset's own connections (it sent the SYN), and data
    // from a server, are not reflected, even reported one direction at a time.
    let mut d = detector(
        vec![asset("web", "192.0.2.0/24", Thresholds::default())],
        Settings::default(),
    );
    let mut recs = Vec::new();
    for i in 0..2_000u64 {
        // A flow export's record of a server's side of a download.
        recs.push(rec(
            &d,
            6,
            (v4(0x0B00_0000 + i as u32), 443),
            (ip("192.0.2.10"), 10_000 + i as u16),
            100 * NS + i * (NS / 2_000),
            tcp_dir(20, 20 * 1_400, 0, S | A | P | F),
            dir(0, 0),
            ConnState::SF,
        ));
    }
    let out = run(&mut d, &recs);
    assert!(
        out.iter().all(|a| a.kind != AlertKind::UdpAmplification),
        "{out:#?}"
    );
}

/// An address scan of ten hosts over three ports from one source, host by host, 20 ms apart.
fn address_scan(d: &Detector, src: &str) -> Vec<FlowRecord> {
    let mut v = Vec::new();
    for h in 0..10u32 {
        for (k, port) in [22u16, 502, 102].into_iter().enumerate() {
            let i = u64::from(h) * 3 + k as u64;
            let mut r = probe(d, src, v4(0xC000_0210 + h), port, 100);
            r.first_ns = 100 * NS + i * 20_000_000;
            r.last_ns = r.first_ns;
            v.push(r);
        }
    }
    v
}

#[test]
fn an_address_scan_of_ten_hosts_over_three_ports_is_a_scan_in_either_order() {
    // Defect 7: the packets in time order raised nothing, in reverse order a scan.
    for thresholds in [Thresholds::default(), total(1_000, 10_000_000, 10)] {
        for reverse in [false, true] {
            let mut d = detector(
                vec![asset("plant", "192.0.2.0/24", thresholds)],
                Settings::default(),
            );
            let mut recs = address_scan(&d, "203.0.113.66");
            if reverse {
                recs.reverse();
            }
            let out = run(&mut d, &recs);
            assert_eq!(
                opened(&out),
                [(AlertKind::Scan, "plant".into())],
                "reverse {reverse}, {thresholds:?}: {out:#?}"
            );
        }
    }
}

#[test]
fn a_fast_single_source_port_scan_is_a_scan_and_no_syn_flood() {
    // Defect 2: one source probing 2 000 ports in one second crossed the new-flow limit and
    // was also reported as a high-severity SYN flood; its probes in seconds over the limit
    // were dropped from the scan count.
    let mut d = detector(
        vec![asset(
            "srv",
            "192.0.2.0/24",
            total(100_000, 10_000_000_000, 200),
        )],
        Settings::default(),
    );
    let recs: Vec<FlowRecord> = (0..2_000u16)
        .map(|p| {
            let mut r = probe(&d, "203.0.113.5", ip("192.0.2.22"), 1 + p, 100);
            r.first_ns += u64::from(p) * 400_000;
            r.last_ns = r.first_ns;
            r
        })
        .collect();
    let out = run(&mut d, &recs);
    assert_eq!(opened(&out), [(AlertKind::Scan, "srv".into())], "{out:#?}");
    let last = out.last().unwrap();
    assert_eq!(last.top_sources[0].pkts, 2_000, "every probe counted");
}

#[test]
fn a_single_source_syn_flood_on_one_port_is_still_a_syn_flood() {
    // The guard of defect 2's fix: many probes of the same target are a flood, not a scan.
    let mut d = detector(
        vec![asset(
            "srv",
            "192.0.2.0/24",
            total(100_000, 10_000_000_000, 200),
        )],
        Settings::default(),
    );
    let recs: Vec<FlowRecord> = (0..2_000u64)
        .map(|i| {
            let mut r = rec(
                &d,
                6,
                (ip("203.0.113.5"), 1_024 + i as u16),
                (ip("192.0.2.22"), 80),
                100 * NS + i * 400_000,
                tcp_dir(1, 40, 0, S),
                dir(0, 0),
                ConnState::S0,
            );
            r.flow_id = i;
            r
        })
        .collect();
    let out = run(&mut d, &recs);
    assert_eq!(
        opened(&out),
        [(AlertKind::SynFlood, "srv".into())],
        "{out:#?}"
    );
}

/// One-packet half-open SYNs from random-looking sources towards 192.0.2.22:80, `n` a second.
fn spoofed_syns(d: &Detector, from_sec: u64, secs: u64, n: u64) -> Vec<FlowRecord> {
    let mut v = Vec::new();
    for s in 0..secs {
        for i in 0..n {
            let k = (s * n + i) as u32;
            let mut r = rec(
                d,
                6,
                (
                    v4(0x0D00_0000u32.wrapping_add(k.wrapping_mul(2_654_435_761) >> 4)),
                    1_024 + (k % 60_000) as u16,
                ),
                (ip("192.0.2.22"), 80),
                (from_sec + s) * NS + i * (NS / n),
                tcp_dir(1, 40, 0, S),
                dir(0, 0),
                ConnState::S0,
            );
            r.flow_id = u64::from(k);
            v.push(r);
        }
    }
    v
}

#[test]
fn a_syn_flood_over_a_packet_limit_alone_is_a_syn_flood() {
    // Defect 10: an asset with only `pps` set saw a flood of one-packet half-open SYNs
    // reported as `volumetric_flood`; the kind must follow the half-open share whichever
    // limit the flood crossed.
    let only_pps = Thresholds {
        total: Rates {
            pps: Some(10_000),
            ..Rates::default()
        },
        ..Thresholds::default()
    };
    let mut d = detector(
        vec![asset("srv", "192.0.2.0/24", only_pps)],
        Settings::default(),
    );
    let recs = spoofed_syns(&d, 100, 2, 40_000);
    let out = run(&mut d, &recs);
    assert_eq!(
        opened(&out),
        [(AlertKind::SynFlood, "srv".into())],
        "{out:#?}"
    );
    // Over a bits-per-second limit alone, the same.
    let only_bps = Thresholds {
        total: Rates {
            bps: Some(5_000_000),
            ..Rates::default()
        },
        ..Thresholds::default()
    };
    let mut d = detector(
        vec![asset("srv", "192.0.2.0/24", only_bps)],
        Settings::default(),
    );
    let recs = spoofed_syns(&d, 100, 2, 40_000);
    let out = run(&mut d, &recs);
    assert_eq!(
        opened(&out),
        [(AlertKind::SynFlood, "srv".into())],
        "{out:#?}"
    );
}

#[test]
fn carpet_bombing_of_an_asset_listed_as_single_addresses_is_recognised() {
    // Defect 6: multi-address assets were told by prefix length only, so an asset listed as
    // many single addresses was never carpet-bombed, only flooded.
    let mut a = asset(
        "farm",
        "192.0.2.0/32",
        total(10_000, 10_000_000_000, 1_000_000),
    );
    a.cidrs = (0..250u32)
        .map(|i| format!("192.0.2.{i}/32").parse().unwrap())
        .collect();
    let mut d = detector(vec![a], Settings::default());
    let recs = spread_load(&d, 100, 250, 60);
    let out = run(&mut d, &recs);
    assert_eq!(
        opened(&out),
        [(AlertKind::CarpetBombing, "farm".into())],
        "{out:#?}"
    );
    assert!(
        out.last().unwrap().summary.contains("over 250 addresses"),
        "{}",
        out.last().unwrap().summary
    );
}

#[test]
fn a_carpet_summary_never_says_spread_over_0_addresses() {
    // Defect 9: a second of the same attack judged without its spread (here: one address
    // over its own limit) became the alert's peak, and its summary said "spread over 0
    // addresses".
    let limits = total(10_000, 10_000_000_000, 1_000_000);
    let mut d = detector(
        vec![asset("isp", "192.0.2.0/24", limits)],
        Settings::default(),
    );
    let mut recs = spread_load(&d, 100, 250, 60);
    recs.extend(spread_load(&d, 101, 1, 20_000));
    let out = run(&mut d, &recs);
    assert_eq!(
        opened(&out),
        [(AlertKind::CarpetBombing, "isp".into())],
        "{out:#?}"
    );
    for a in &out {
        assert!(!a.summary.contains("over 0 addresses"), "{}", a.summary);
    }
    assert!(
        out.last().unwrap().summary.contains("over 250 addresses"),
        "{}",
        out.last().unwrap().summary
    );
}

#[test]
fn an_ics_alert_counts_the_commands_of_all_its_flows() {
    // Defect 5: a master that sent 1 007 writes to 27 PLCs was reported as "41 writes", the
    // figures of one flow.
    let plcs = Asset {
        allow: vec!["10.1.1.1/32".parse().unwrap()],
        roles: vec![Role::Ot],
        ..asset("plant", "192.0.2.0/24", Thresholds::default())
    };
    let mut d = detector(vec![plcs], Settings::default());
    let mut recs = Vec::new();
    let mut sent = 0;
    for plc in 0..27u32 {
        let writes = if plc == 26 { 1_007 - sent } else { 37 };
        sent += writes;
        let mut r = ics_rec(&d, "203.0.113.66", writes, 0);
        r.resp_addr = v4(0xC000_0210 + plc);
        r.asset = d.assets.match_flow(r.orig_addr, r.resp_addr);
        r.first_ns = 100 * NS + u64::from(plc) * 300_000_000;
        r.last_ns = r.first_ns + 200_000_000;
        r.flow_id = u64::from(plc);
        recs.push(r);
    }
    assert_eq!(sent, 1_007);
    let out = run(&mut d, &recs);
    assert_eq!(opened(&out), [(AlertKind::IcsCommandAbuse, "plant".into())]);
    let last = out.last().unwrap();
    assert_eq!(last.state, AlertState::Closed);
    assert!(
        last.summary
            .starts_with("1007 industrial commands (1007 write")
            && last.summary.contains("to 27 addresses"),
        "{}",
        last.summary
    );
}

#[test]
fn an_asset_without_thresholds_is_protected_during_its_warm_up() {
    // Defect 8: a 22 k new-flows/s SYN flood, all half-open, against an asset configured
    // without thresholds raised nothing until its baseline was learned (5 min).
    let mut d = detector(
        vec![asset("srv", "192.0.2.0/24", Thresholds::default())],
        Settings::default(),
    );
    let recs = spoofed_syns(&d, 100, 2, 22_000);
    let out = run(&mut d, &recs);
    assert_eq!(
        opened(&out),
        [(AlertKind::SynFlood, "srv".into())],
        "{out:#?}"
    );
    // Judged against the documented default limits, which the alert shows.
    let s = Settings::default();
    assert_eq!(out[0].threshold.new_flows_per_s, Some(s.default_new_flows));
    // Traffic within the default limits stays quiet meanwhile.
    let mut d = detector(
        vec![asset("srv", "192.0.2.0/24", Thresholds::default())],
        Settings::default(),
    );
    let recs = spoofed_syns(&d, 100, 2, 2_000);
    assert!(run(&mut d, &recs).is_empty());
}

// A flood's named sources are the attack's, not the asset's ordinary clients: evidence
// packages address the States its sources are registered in, so a client named there would
// have a State asked to take the protected service's own users offline.

/// Whether `a` is in `net`/8.
fn in_net8(a: IpAddr, net: u8) -> bool {
    matches!(a, IpAddr::V4(v) if v.octets()[0] == net)
}

#[test]
fn a_syn_flood_names_no_client_whose_handshakes_complete_or_whose_syn_was_dropped() {
    let web = Asset {
        service_ports: vec![443],
        ..asset("web", "192.0.2.0/24", total(10_000_000, 1 << 40, 1_000))
    };
    let mut d = detector(vec![web], Settings::default());
    let mut recs = Vec::new();
    // 60 clients in 90/8, three completed connections a second each from second 100 to 112:
    // 18 packets a second per client, far more than a forged source's one.
    for sec in 100..112u64 {
        for j in 0..3u64 {
            for c in 0..60u32 {
                let mut r = rec(
                    &d,
                    6,
                    (v4(0x5A00_0000 + c), 20_000 + (sec * 3 + j) as u16),
                    (ip("192.0.2.22"), 443),
                    sec * NS + j * (NS / 3) + u64::from(c) * (NS / 3 / 60),
                    tcp_dir(6, 400, 100, S | A | P | F),
                    tcp_dir(5, 2_000, 1_500, S | A | P | F),
                    ConnState::SF,
                );
                r.flow_id = (sec << 32) | (j << 16) | u64::from(c);
                recs.push(r);
            }
        }
    }
    // During the flood, 20 clients a second in 91/8 whose SYN the flooded server dropped: a
    // real TCP stack sends it again on the same connection (two packets, one attempt).
    for sec in 105..110u64 {
        for c in 0..20u32 {
            let mut r = rec(
                &d,
                6,
                (v4(0x5B00_0000 + (sec as u32) * 100 + c), 30_000),
                (ip("192.0.2.22"), 443),
                sec * NS + u64::from(c) * (NS / 20),
                tcp_dir(2, 80, 0, S),
                dir(0, 0),
                ConnState::S0,
            );
            r.flow_id = (1 << 60) | (sec << 16) | u64::from(c);
            recs.push(r);
        }
    }
    // 3 000 forged one-packet SYNs a second for 5 s (15 000 sources).
    recs.extend(spoofed_syns(&d, 105, 5, 3_000));
    recs.sort_by_key(|r| r.last_ns);
    let out = run(&mut d, &recs);
    assert_eq!(
        opened(&out),
        [(AlertKind::SynFlood, "web".into())],
        "{out:#?}"
    );
    for a in &out {
        let clients: Vec<IpAddr> = a
            .top_sources
            .iter()
            .map(|s| s.addr)
            .filter(|a| in_net8(*a, 90) || in_net8(*a, 91))
            .collect();
        assert!(
            clients.is_empty(),
            "{:?} event names clients: {clients:?}",
            a.state
        );
        assert!(!a.top_sources.is_empty(), "{a:?}");
        // `spoofed_syns` forges its sources from 13.0.0.0 up to 29.0.0.0.
        let forged = |a: IpAddr| matches!(a, IpAddr::V4(v) if (13..29).contains(&v.octets()[0]));
        assert!(a.top_sources.iter().all(|s| forged(s.addr)), "{a:?}");
    }
    let closed = out.last().unwrap();
    assert_eq!(closed.state, AlertState::Closed);
    // Counted: the forged sources, not the clients.
    let total = closed.sources_total.unwrap();
    assert!((12_000..=18_000).contains(&total), "{total}");
    let sp = closed.spoofing.as_ref().unwrap();
    assert!(sp.likely_spoofed, "{sp:?}");
    assert_eq!(sp.seen_once_share, Some(1.0), "{sp:?}");
    let shares: f64 = closed.top_sources.iter().map(|s| s.share).sum();
    assert!(shares > 0.0 && shares <= 1.0 + 1e-9, "{shares}");
}

#[test]
fn a_volumetric_flood_names_no_steady_client_and_its_shares_are_of_the_attack() {
    let web = Asset {
        service_ports: vec![443],
        ..asset("web", "192.0.2.0/24", total(5_000, 1 << 40, 100_000))
    };
    let mut d = detector(vec![web], Settings::default());
    let mut recs = Vec::new();
    // 80 clients in 90/8, each one answered connection a second of 20 packets each way, from
    // second 100 to 130 (1 600 packets a second: the asset's sources are followed all along).
    for sec in 100..130u64 {
        for c in 0..80u32 {
            let mut r = rec(
                &d,
                6,
                (v4(0x5A00_0000 + c), 20_000 + sec as u16),
                (ip("192.0.2.22"), 443),
                sec * NS + u64::from(c) * (NS / 80),
                tcp_dir(20, 2_000, 1_000, S | A | P | F),
                tcp_dir(20, 20_000, 18_000, S | A | P | F),
                ConnState::SF,
            );
            r.flow_id = (sec << 32) | u64::from(c);
            recs.push(r);
        }
    }
    // Ten hosts in 14/8 each send 1 000 unanswered datagrams a second from second 110 to 120.
    for sec in 110..120u64 {
        for k in 0..10u32 {
            let mut r = rec(
                &d,
                17,
                (v4(0x0E00_0000 + k), 4_444),
                (ip("192.0.2.22"), 9_999),
                sec * NS + u64::from(k) * 1_000,
                dir(1_000, 1_000_000),
                dir(0, 0),
                ConnState::S0,
            );
            r.first_ns = sec * NS;
            r.last_ns = sec * NS + NS - 1;
            r.flow_id = (1 << 60) | (sec << 16) | u64::from(k);
            recs.push(r);
        }
    }
    recs.sort_by_key(|r| r.last_ns);
    let out = run(&mut d, &recs);
    assert_eq!(
        opened(&out),
        [(AlertKind::VolumetricFlood, "web".into())],
        "{out:#?}"
    );
    for a in &out {
        assert!(
            a.top_sources.iter().all(|s| in_net8(s.addr, 14)),
            "{:?} event names clients: {:?}",
            a.state,
            a.top_sources
        );
    }
    let closed = out.last().unwrap();
    assert_eq!(closed.state, AlertState::Closed);
    assert_eq!(closed.top_sources.len(), 10, "{:?}", closed.top_sources);
    assert_eq!(closed.sources_total, Some(10));
    // The ten carried the whole attack, each a tenth of it.
    for s in &closed.top_sources {
        assert!((s.share - 0.1).abs() < 1e-9, "{s:?}");
    }
}

#[test]
fn carpet_bombing_names_no_steady_client_of_the_prefix() {
    let mut d = detector(
        vec![asset(
            "isp",
            "192.0.2.0/24",
            total(10_000, 10_000_000_000, 1_000_000),
        )],
        Settings::default(),
    );
    let mut recs = Vec::new();
    // 40 clients in 90/8, each with one answered connection a second to its own address of
    // the prefix, 30 packets each way, from second 95 to 106.
    for sec in 95..106u64 {
        for c in 0..40u32 {
            let mut r = rec(
                &d,
                6,
                (v4(0x5A00_0000 + c), 20_000 + sec as u16),
                (v4(0xC000_0200 + c), 443),
                sec * NS + NS / 2 + u64::from(c) * 1_000_000,
                tcp_dir(30, 3_000, 1_500, S | A | P | F),
                tcp_dir(30, 30_000, 28_000, S | A | P | F),
                ConnState::SF,
            );
            r.flow_id = (sec << 32) | u64::from(c);
            recs.push(r);
        }
    }
    // 500 hosts in 13/8 spread 15 000 unanswered packets a second over 250 addresses (60 per
    // address, within the per-address limit) from second 100 to 103.
    for sec in 100..103u64 {
        for k in 0..6u32 {
            for a in 0..250u32 {
                let mut r = rec(
                    &d,
                    17,
                    (v4(0x0D00_0000 + (k * 250 + a) % 500), 5_000),
                    (v4(0xC000_0200 + a), 80),
                    sec * NS + u64::from(k * 250 + a) * 100_000,
                    dir(10, 2_000),
                    dir(0, 0),
                    ConnState::S0,
                );
                r.flow_id = (1 << 60) | (sec << 32) | u64::from(k * 250 + a);
                recs.push(r);
            }
        }
    }
    recs.sort_by_key(|r| r.last_ns);
    let out = run(&mut d, &recs);
    assert_eq!(
        opened(&out),
        [(AlertKind::CarpetBombing, "isp".into())],
        "{out:#?}"
    );
    for a in &out {
        assert!(
            a.top_sources.iter().all(|s| in_net8(s.addr, 13)),
            "{:?} event names clients: {:?}",
            a.state,
            a.top_sources
        );
    }
    let closed = out.last().unwrap();
    assert_eq!(closed.sources_total, Some(500));
    assert_eq!(closed.top_sources.len(), 100);
}
