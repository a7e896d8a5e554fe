//! The decoders over hand-built datagrams: templates after their data, template refresh and
//! withdrawal, several observation domains, sampling announced in options records and in
//! NetFlow v5 headers, configured rates, bad datagrams counted by reason.

use normwatch_flowexport::{Decoder, DecoderConfig, DropReason, Exported};
use normwatch_model::flow::RecordSource;
use normwatch_model::{Asset, AssetId, AssetIndex, ConnState, Side};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

const T0: u64 = 1_700_000_000;

fn from() -> SocketAddr {
    "192.0.2.1:40000".parse().unwrap()
}

/// Template fields: src, dst, sport, dport, proto, flags, pkts (4), bytes (4), first, last.
const FIELDS: [(u16, u16); 10] = [
    (8, 4),
    (12, 4),
    (7, 2),
    (11, 2),
    (4, 1),
    (6, 1),
    (2, 4),
    (1, 4),
    (22, 4),
    (21, 4),
];

fn set(id: u16, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&id.to_be_bytes());
    v.extend_from_slice(&((body.len() + 4) as u16).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn template(tid: u16, fields: &[(u16, u16)]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&tid.to_be_bytes());
    v.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    for (id, len) in fields {
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
    }
    v
}

fn record(src: [u8; 4], dst: [u8; 4], dport: u16, pkts: u32, bytes: u32, flags: u8) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(&40_000u16.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.push(6);
    v.push(flags);
    v.extend_from_slice(&pkts.to_be_bytes());
    v.extend_from_slice(&bytes.to_be_bytes());
    // First and last switched: 2 s and 1 s before the header's uptime of 10 s.
    v.extend_from_slice(&8_000u32.to_be_bytes());
    v.extend_from_slice(&9_000u32.to_be_bytes());
    v
}

fn v9(seq: u32, domain: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&9u16.to_be_bytes());
    v.extend_from_slice(&(sets.len() as u16).to_be_bytes());
    v.extend_from_slice(&10_000u32.to_be_bytes());
    v.extend_from_slice(&(T0 as u32).to_be_bytes());
    v.extend_from_slice(&seq.to_be_bytes());
    v.extend_from_slice(&domain.to_be_bytes());
    for s in sets {
        v.extend_from_slice(s);
    }
    v
}

fn ipfix(domain: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let body: Vec<u8> = sets.concat();
    let mut v = Vec::new();
    v.extend_from_slice(&10u16.to_be_bytes());
    v.extend_from_slice(&((16 + body.len()) as u16).to_be_bytes());
    v.extend_from_slice(&(T0 as u32).to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&domain.to_be_bytes());
    v.extend_from_slice(&body);
    v
}

fn decoder() -> Decoder {
    Decoder::new(DecoderConfig::default())
}

fn run(d: &mut Decoder, dgram: &[u8], now_s: u64) -> (Result<(), DropReason>, Vec<Exported>) {
    let mut out = Vec::new();
    let r = d.decode(from(), dgram, now_s * 1_000_000_000, &mut out);
    (r, out)
}

#[test]
fn v9_data_before_its_template_is_held_and_decoded_when_the_template_arrives() {
    let mut d = decoder();
    let data = set(
        300,
        &record([198, 51, 100, 7], [10, 0, 0, 1], 443, 3, 180, 0x02),
    );
    let (r, out) = run(&mut d, &v9(1, 0, &[data]), T0);
    assert_eq!((r, out.len(), d.held()), (Ok(()), 0, 1));
    let (r, out) = run(&mut d, &v9(2, 0, &[set(0, &template(300, &FIELDS))]), T0);
    assert_eq!(r, Ok(()));
    assert_eq!(out.len(), 1);
    assert_eq!((d.held(), d.stats().resolved), (0, 1));
    let e = &out[0];
    assert_eq!(e.origin.source, RecordSource::NetflowV9);
    assert_eq!(e.record.export, Some(e.origin));
    assert_eq!(e.origin.exporter, from().ip());
    assert_eq!(e.origin.sampling_rate, 1);
    let r = &e.record;
    assert_eq!(r.orig_addr, IpAddr::from([198, 51, 100, 7]));
    assert_eq!((r.resp_port, r.ip_proto), (443, 6));
    assert_eq!((r.orig.pkts, r.orig.ip_bytes, r.resp.pkts), (3, 180, 0));
    assert_eq!(r.conn_state, ConnState::S0);
    assert_eq!(r.first_ns, (T0 - 2) * 1_000_000_000);
    assert_eq!(r.last_ns, (T0 - 1) * 1_000_000_000);
    assert_eq!(d.stats().lost, 0);
}

#[test]
fn held_data_whose_template_never_comes_is_dropped_as_missing_template() {
    let mut d = decoder();
    let data = set(301, &record([198, 51, 100, 7], [10, 0, 0, 1], 80, 1, 40, 2));
    let _ = run(&mut d, &v9(1, 0, &[data]), T0);
    let mut out = Vec::new();
    d.tick((T0 + 11) * 1_000_000_000, &mut out);
    assert!(out.is_empty());
    assert_eq!(d.held(), 0);
    assert_eq!(d.stats().dropped(DropReason::MissingTemplate), 1);
}

#[test]
fn the_hold_is_bounded_oldest_first() {
    let mut d = Decoder::new(DecoderConfig {
        hold_sets: 2,
        ..DecoderConfig::default()
    });
    for seq in 1..=5 {
        let data = set(
            302,
            &record([198, 51, 100, 7], [10, 0, 0, 1], 80, seq, 40, 2),
        );
        let _ = run(&mut d, &v9(seq, 0, &[data]), T0);
    }
    assert_eq!(d.held(), 2);
    assert_eq!(d.stats().dropped(DropReason::MissingTemplate), 3);
    let (_, out) = run(&mut d, &v9(6, 0, &[set(0, &template(302, &FIELDS))]), T0);
    let pkts: Vec<u64> = out.iter().map(|e| e.record.orig.pkts).collect();
    assert_eq!(pkts, [4, 5]);
}

#[test]
fn a_refreshed_template_with_a_new_layout_replaces_the_old_one() {
    let mut d = decoder();
    let _ = run(&mut d, &v9(1, 0, &[set(0, &template(300, &FIELDS))]), T0);
    // The same id, now with 8-byte counters (an exporter restarted with other settings).
    let mut wide = FIELDS;
    wide[6].1 = 8;
    wide[7].1 = 8;
    let mut rec = record([198, 51, 100, 7], [10, 0, 0, 1], 80, 0, 0, 0x12);
    rec.splice(14..22, [0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 1, 0]);
    let (r, out) = run(
        &mut d,
        &v9(2, 0, &[set(0, &template(300, &wide)), set(300, &rec)]),
        T0,
    );
    assert_eq!(r, Ok(()));
    assert_eq!(
        (out[0].record.orig.pkts, out[0].record.orig.ip_bytes),
        (9, 256)
    );
    assert_eq!(d.stats().templates, 2);
}

#[test]
fn templates_are_per_observation_domain() {
    let mut d = decoder();
    let _ = run(&mut d, &v9(1, 7, &[set(0, &template(300, &FIELDS))]), T0);
    let data = set(300, &record([198, 51, 100, 7], [10, 0, 0, 1], 80, 1, 40, 2));
    // Domain 8 has no template 300: held, not decoded with domain 7's.
    let (_, out) = run(&mut d, &v9(1, 8, std::slice::from_ref(&data)), T0);
    assert!(out.is_empty());
    assert_eq!(d.held(), 1);
    let (_, out) = run(&mut d, &v9(2, 7, &[data]), T0);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].origin.domain, 7);
}

#[test]
fn v9_sequence_gaps_are_counted_as_lost_datagrams() {
    let mut d = decoder();
    let _ = run(&mut d, &v9(10, 0, &[set(0, &template(300, &FIELDS))]), T0);
    let _ = run(&mut d, &v9(14, 0, &[]), T0);
    assert_eq!(d.stats().lost, 3);
}

#[test]
fn ipfix_sampling_from_an_options_record_scales_counts() {
    let mut d = decoder();
    // Options template 400: scope samplerId (302), samplingPacketInterval (305) = 100.
    let mut opt = Vec::new();
    opt.extend_from_slice(&400u16.to_be_bytes());
    opt.extend_from_slice(&2u16.to_be_bytes());
    opt.extend_from_slice(&1u16.to_be_bytes());
    for (id, len) in [(302u16, 4u16), (305, 4)] {
        opt.extend_from_slice(&id.to_be_bytes());
        opt.extend_from_slice(&len.to_be_bytes());
    }
    let mut opt_data = 5u32.to_be_bytes().to_vec();
    opt_data.extend_from_slice(&100u32.to_be_bytes());
    // Flow template 300 with samplerId and absolute millisecond times.
    let fields = [
        (8, 4),
        (12, 4),
        (7, 2),
        (11, 2),
        (4, 1),
        (2, 4),
        (1, 4),
        (152, 8),
        (153, 8),
        (302, 4),
    ];
    let mut rec = vec![203, 0, 113, 9, 10, 0, 0, 2, 0x9c, 0x40, 0, 53, 17];
    rec.extend_from_slice(&2u32.to_be_bytes());
    rec.extend_from_slice(&150u32.to_be_bytes());
    rec.extend_from_slice(&(T0 * 1000).to_be_bytes());
    rec.extend_from_slice(&(T0 * 1000 + 5).to_be_bytes());
    rec.extend_from_slice(&5u32.to_be_bytes());
    let msg = ipfix(
        1,
        &[
            set(3, &opt),
            set(400, &opt_data),
            set(2, &template(300, &fields)),
            set(300, &rec),
        ],
    );
    let (r, out) = run(&mut d, &msg, T0);
    assert_eq!(r, Ok(()));
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e.origin.source, RecordSource::Ipfix);
    assert_eq!(e.origin.sampling_rate, 100);
    assert_eq!((e.record.orig.pkts, e.record.orig.ip_bytes), (200, 15_000));
    assert_eq!(e.record.resp_port, 53);
    assert_eq!(e.record.first_ns, T0 * 1_000_000_000);
    assert_eq!(e.record.last_ns, T0 * 1_000_000_000 + 5_000_000);
}

/// minimumTTL and maximumTTL (52, 53), where an exporter sends them, are the record's
/// originator TTLs (for the spoofing assessment); without them there are none.
#[test]
fn exported_ttls_reach_the_record() {
    let mut d = decoder();
    let mut fields = FIELDS.to_vec();
    fields.extend([(52, 1), (53, 1)]);
    let mut rec = record([203, 0, 113, 9], [10, 0, 0, 2], 443, 3, 120, 0x02);
    rec.extend([242, 244]);
    let msg = v9(1, 0, &[set(0, &template(256, &fields)), set(256, &rec)]);
    let (r, out) = run(&mut d, &msg, T0);
    assert_eq!(r, Ok(()));
    assert_eq!(
        out[0].record.orig_ttl,
        Some(normwatch_model::Span { min: 242, max: 244 })
    );
    // Only the least sent: it stands for both ends.
    let mut fields = FIELDS.to_vec();
    fields.push((52, 1));
    let mut rec = record([203, 0, 113, 9], [10, 0, 0, 2], 443, 3, 120, 0x02);
    rec.push(57);
    let msg = v9(2, 0, &[set(0, &template(257, &fields)), set(257, &rec)]);
    let (_, out) = run(&mut d, &msg, T0);
    assert_eq!(out[0].record.orig_ttl, Some(normwatch_model::Span::of(57)));
    let msg = v9(
        3,
        0,
        &[
            set(0, &template(258, &FIELDS)),
            set(
                258,
                &record([203, 0, 113, 9], [10, 0, 0, 2], 443, 3, 120, 2),
            ),
        ],
    );
    let (_, out) = run(&mut d, &msg, T0);
    assert_eq!(out[0].record.orig_ttl, None);
}

#[test]
fn ipfix_template_withdrawal_forgets_the_template() {
    let mut d = decoder();
    let _ = run(&mut d, &ipfix(1, &[set(2, &template(300, &FIELDS))]), T0);
    let mut withdraw = 300u16.to_be_bytes().to_vec();
    withdraw.extend_from_slice(&0u16.to_be_bytes());
    let _ = run(&mut d, &ipfix(1, &[set(2, &withdraw)]), T0);
    assert_eq!(d.stats().withdrawn, 1);
    let data = set(300, &record([198, 51, 100, 7], [10, 0, 0, 1], 80, 1, 40, 2));
    let (_, out) = run(&mut d, &ipfix(1, &[data]), T0);
    assert!(out.is_empty());
    assert_eq!(d.held(), 1);
}

#[test]
fn ipfix_variable_length_fields_are_skipped_correctly() {
    let mut d = decoder();
    // An interfaceName-like string (82, variable) between the addresses and the counters.
    let fields = [(8, 4), (12, 4), (82, 0xffff), (4, 1), (2, 4), (1, 4)];
    let mut rec = vec![198, 51, 100, 7, 10, 0, 0, 1, 3, b'e', b't', b'h', 17];
    rec.extend_from_slice(&4u32.to_be_bytes());
    rec.extend_from_slice(&400u32.to_be_bytes());
    // The long form: 255 then a two-byte length.
    let mut long = vec![198, 51, 100, 8, 10, 0, 0, 1, 255, 0, 2, b'x', b'y', 17];
    long.extend_from_slice(&1u32.to_be_bytes());
    long.extend_from_slice(&100u32.to_be_bytes());
    rec.extend_from_slice(&long);
    let (r, out) = run(
        &mut d,
        &ipfix(1, &[set(2, &template(256, &fields)), set(256, &rec)]),
        T0,
    );
    assert_eq!(r, Ok(()));
    let got: Vec<(u64, u64)> = out
        .iter()
        .map(|e| (e.record.orig.pkts, e.record.orig.ip_bytes))
        .collect();
    assert_eq!(got, [(4, 400), (1, 100)]);
}

fn v5(sampling: u16, records: &[Vec<u8>]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&5u16.to_be_bytes());
    v.extend_from_slice(&(records.len() as u16).to_be_bytes());
    v.extend_from_slice(&10_000u32.to_be_bytes());
    v.extend_from_slice(&(T0 as u32).to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(&sampling.to_be_bytes());
    for r in records {
        v.extend_from_slice(r);
    }
    v
}

fn v5_record(src: [u8; 4], dst: [u8; 4], pkts: u32, bytes: u32) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&src);
    v.extend_from_slice(&dst);
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(&pkts.to_be_bytes());
    v.extend_from_slice(&bytes.to_be_bytes());
    v.extend_from_slice(&9_000u32.to_be_bytes());
    v.extend_from_slice(&9_500u32.to_be_bytes());
    v.extend_from_slice(&1234u16.to_be_bytes());
    v.extend_from_slice(&80u16.to_be_bytes());
    v.extend_from_slice(&[0, 0x12, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(v.len(), 48);
    v
}

#[test]
fn v5_header_sampling_scales_and_assets_match_as_in_the_sensor() {
    let asset = Asset {
        id: AssetId(Arc::from("web")),
        name: "web".into(),
        operator: "op".into(),
        sector: normwatch_model::Sector::Energy,
        service: "web".into(),
        cidrs: vec!["10.0.0.0/24".parse().unwrap()],
        roles: vec![],
        service_ports: vec![],
        thresholds: Default::default(),
        allow: vec![],
    };
    let mut d = Decoder::new(DecoderConfig {
        assets: Arc::new(AssetIndex::new(vec![asset]).unwrap()),
        ..DecoderConfig::default()
    });
    // Mode 01 (deterministic), interval 64.
    let dgram = v5(
        0x4000 | 64,
        &[
            v5_record([198, 51, 100, 7], [10, 0, 0, 1], 2, 100),
            v5_record([10, 0, 0, 1], [198, 51, 100, 7], 1, 60),
        ],
    );
    let (r, out) = run(&mut d, &dgram, T0);
    assert_eq!(r, Ok(()));
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].origin.sampling_rate, 64);
    assert_eq!(
        (out[0].record.orig.pkts, out[0].record.orig.ip_bytes),
        (128, 6400)
    );
    let sides: Vec<Side> = out
        .iter()
        .map(|e| e.record.asset.as_ref().unwrap().side)
        .collect();
    assert_eq!(sides, [Side::Resp, Side::Orig]);
    assert_eq!(out[0].record.first_ns, (T0 - 1) * 1_000_000_000);
}

#[test]
fn a_configured_rate_wins_over_what_the_exporter_announces() {
    let mut d = Decoder::new(DecoderConfig {
        sampling: vec![(from().ip(), 1000)],
        ..DecoderConfig::default()
    });
    let dgram = v5(0, &[v5_record([198, 51, 100, 7], [10, 0, 0, 1], 1, 40)]);
    let (_, out) = run(&mut d, &dgram, T0);
    assert_eq!(out[0].origin.sampling_rate, 1000);
    assert_eq!(out[0].record.orig.pkts, 1000);
}

#[test]
fn bad_datagrams_are_counted_by_reason() {
    let mut d = decoder();
    let cases: Vec<(Vec<u8>, DropReason)> = vec![
        (vec![0, 5], DropReason::Truncated),
        (vec![0, 7, 0, 0, 0, 0], DropReason::UnknownVersion),
        (
            v5(0, &[v5_record([1, 1, 1, 1], [2, 2, 2, 2], 1, 40)])[..50].to_vec(),
            DropReason::Truncated,
        ),
        (
            v9(1, 0, &[set(0, &template(12, &FIELDS))]),
            DropReason::BadTemplate,
        ),
        (v9(2, 0, &[vec![1, 44, 0, 2]]), DropReason::BadSet),
        (
            v9(3, 0, &[vec![1, 44, 0, 200, 0, 0]]),
            DropReason::Truncated,
        ),
        (
            ipfix(1, &[set(2, &template(300, &[(8, 0)]))]),
            DropReason::BadTemplate,
        ),
        (
            {
                let mut m = ipfix(1, &[]);
                m[3] = 200;
                m
            },
            DropReason::Truncated,
        ),
        (vec![0, 0, 0, 5, 0, 0, 0, 9], DropReason::BadSet),
    ];
    for (dgram, reason) in &cases {
        let (r, _) = run(&mut d, dgram, T0);
        assert_eq!(r, Err(*reason), "{dgram:?}");
    }
    let total: u64 = d.stats().drops.iter().sum();
    assert_eq!(total, cases.len() as u64);
}

#[test]
fn too_many_templates_are_refused() {
    let mut d = Decoder::new(DecoderConfig {
        max_templates: 2,
        ..DecoderConfig::default()
    });
    let t: Vec<u8> = [300, 301, 302]
        .iter()
        .flat_map(|id| template(*id, &FIELDS))
        .collect();
    let (r, _) = run(&mut d, &v9(1, 0, &[set(0, &t)]), T0);
    assert_eq!(r, Err(DropReason::TooManyTemplates));
    assert_eq!(d.stats().templates, 2);
}

/// An sFlow v5 datagram from `agent` with one flow sample (data source `source`, 1 in
/// `rate`) of a raw IPv4/UDP header.
fn sflow(agent: [u8; 4], source: u32, rate: u32) -> Vec<u8> {
    let w = |v: &mut Vec<u8>, x: u32| v.extend_from_slice(&x.to_be_bytes());
    // IPv4 (total length 28) + UDP 198.51.100.7:5000 → 10.0.0.1:53, checksums zero.
    let pkt: Vec<u8> = vec![
        0x45, 0, 0, 28, 0, 1, 0, 0, 64, 17, 0, 0, 198, 51, 100, 7, 10, 0, 0, 1, 0x13, 0x88, 0, 53,
        0, 8, 0, 0,
    ];
    let mut rec = Vec::new();
    w(&mut rec, 11); // header protocol: IPv4
    w(&mut rec, 28); // frame length
    w(&mut rec, 0); // stripped
    w(&mut rec, pkt.len() as u32);
    rec.extend_from_slice(&pkt);
    let mut sample = Vec::new();
    for x in [1, source, rate, 1000, 0, 1, 2, 1] {
        w(&mut sample, x);
    }
    w(&mut sample, 1); // raw packet header record
    w(&mut sample, rec.len() as u32);
    sample.extend_from_slice(&rec);
    let mut v = Vec::new();
    for x in [5, 1] {
        w(&mut v, x);
    }
    v.extend_from_slice(&agent);
    for x in [0, 1, 1000, 1] {
        w(&mut v, x);
    }
    w(&mut v, 1); // flow sample
    w(&mut v, sample.len() as u32);
    v.extend_from_slice(&sample);
    v
}

#[test]
fn sflow_samples_become_scaled_flows_from_the_agent() {
    let mut d = decoder();
    for _ in 0..3 {
        let (r, out) = run(&mut d, &sflow([192, 0, 2, 9], 7, 512), T0);
        assert_eq!(r, Ok(()));
        assert!(out.is_empty(), "the flow is still open");
    }
    let mut out = Vec::new();
    d.flush(&mut out);
    assert_eq!(out.len(), 1);
    let e = &out[0];
    assert_eq!(e.origin.source, RecordSource::Sflow);
    assert_eq!(e.origin.exporter, IpAddr::from([192, 0, 2, 9]));
    assert_eq!((e.origin.domain, e.origin.sampling_rate), (7, 512));
    assert_eq!(e.record.export, Some(e.origin));
    assert_eq!(
        (e.record.orig.pkts, e.record.orig.ip_bytes),
        (3 * 512, 3 * 28 * 512)
    );
    assert_eq!(e.record.resp_port, 53);
    // The sampled headers' TTL, as the sensor's flow table reads it.
    assert_eq!(e.record.orig_ttl, Some(normwatch_model::Span::of(64)));
}

#[test]
fn sflow_tables_are_bounded() {
    let mut d = Decoder::new(DecoderConfig {
        max_sflow_tables: 2,
        ..DecoderConfig::default()
    });
    let mut flushed = Vec::new();
    for agent in 1..=3u8 {
        let (r, out) = run(
            &mut d,
            &sflow([192, 0, 2, agent], 1, 1),
            T0 + u64::from(agent),
        );
        assert_eq!(r, Ok(()));
        flushed.extend(out);
    }
    // The third agent's table takes the place of the least recently sampled one, whose
    // flow is emitted rather than lost.
    assert_eq!(d.sessions().1, 2);
    assert_eq!(flushed.len(), 1);
    assert_eq!(flushed[0].origin.exporter, IpAddr::from([192, 0, 2, 1]));
}
