//! Any bytes as a flow record on the wire, through the hand-written decoder and through
//! postcard's serde decoder: both must give the same record and the same rest, or the same
//! error, and a record both accept must encode by hand to postcard's bytes.
//!
//! The codec is compiled from its source here (the transport crate itself brings the Kafka
//! client, which the fuzz build does not need).
#![no_main]

#[path = "../../crates/transport/src/wire/flow.rs"]
#[allow(dead_code)]
mod flow;

use libfuzzer_sys::fuzz_target;
use normwatch_model::FlowRecord;

fuzz_target!(|data: &[u8]| {
    let hand = flow::decode(data);
    let serde = postcard::take_from_bytes::<FlowRecord>(data);
    assert_eq!(hand, serde);
    if let Ok((r, rest)) = hand {
        let mut b = Vec::new();
        flow::encode(&r, &mut b).expect("encode");
        assert_eq!(b, postcard::to_allocvec(&r).expect("encode"));
        let mut out = Vec::new();
        assert_eq!(flow::decode_into(data, &mut out), Ok(rest));
        assert_eq!(out, [r]);
    }
});
