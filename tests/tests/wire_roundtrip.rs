//! Real flow records (from real captures, with assets and ICS commands) survive the batch
//! wire format unchanged, batch by batch, and the key is the asset id when there is one.

use normwatch_model::{Asset, AssetId, AssetIndex, FlowRecord, Role, Sector};
use normwatch_pipeline::batcher::BatchKey;
use normwatch_tests::{capture, config, flows_of};
use normwatch_transport::wire;
use std::sync::Arc;

#[test]
fn flows_of_real_captures_round_trip_through_batches() {
    let mut cfg = config(false);
    cfg.assets = Arc::new(
        AssetIndex::new(vec![Asset {
            id: AssetId(Arc::from("plc")),
            name: "PLC".into(),
            operator: "op".into(),
            sector: Sector::Energy,
            service: "control".into(),
            cidrs: vec!["208.80.152.0/22".parse().unwrap()],
            roles: vec![Role::Ot],
            service_ports: vec![502],
            thresholds: Default::default(),
            allow: vec![],
        }])
        .unwrap(),
    );
    let mut all: Vec<FlowRecord> = Vec::new();
    for trace in [
        "zeek/testing/btest/Traces/wikipedia.pcap",
        "ICS-Security-Tools/pcaps/ModbusTCP/ModbusTCP.pcap",
        "zeek/testing/btest/Traces/ftp/ipv6.pcap",
    ] {
        let (flows, _) =
            flows_of(&capture(trace), cfg.clone()).unwrap_or_else(|(_, e)| panic!("{e}"));
        all.extend(flows);
    }
    assert!(all.iter().any(|f| f.ics.is_some()) && all.iter().any(|f| f.asset.is_some()));
    // A flow from packets carries the TTLs (IPv6 hop limits) of each side that sent any.
    for f in &all {
        assert_eq!(f.orig_ttl.is_some(), f.orig.pkts > 0, "{f:?}");
        assert_eq!(f.resp_ttl.is_some(), f.resp.pkts > 0, "{f:?}");
    }
    assert!(all
        .iter()
        .any(|f| f.orig_addr.is_ipv6() && f.resp_ttl.is_some()));
    let mut buf = Vec::new();
    for (seq, chunk) in all.chunks(7).enumerate() {
        wire::encode_into(&mut buf, "site-1", seq as u64 + 1, chunk).unwrap();
        let back: wire::Batch<FlowRecord> = wire::decode_batch(&buf).unwrap();
        assert_eq!(back.seq, seq as u64 + 1);
        assert_eq!(back.records, chunk);
    }
    for f in &all {
        let key = BatchKey::of(f).to_bytes();
        match &f.asset {
            Some(a) => assert_eq!(key, a.id.as_str().as_bytes()),
            None => assert_eq!(key, f.resp_addr.to_string().as_bytes()),
        }
    }
}
