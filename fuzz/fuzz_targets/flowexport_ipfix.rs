//! Any bytes as a IPFIX datagram, decoded twice from one exporter (so templates the first
//! pass learned, or flows it began, meet the second pass), then time passes and the input ends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use normwatch_flowexport::{Decoder, DecoderConfig};

fuzz_target!(|input: &[u8]| {
    let mut data = input.to_vec();
    if data.len() >= 2 {
        data[..2].copy_from_slice(&10u16.to_be_bytes());
    }
    let mut d = Decoder::new(DecoderConfig::default());
    let from = "192.0.2.1:2055".parse().unwrap();
    let mut out = Vec::new();
    let _ = d.decode(from, &data, 1_000_000_000, &mut out);
    let _ = d.decode(from, &data, 2_000_000_000, &mut out);
    d.tick(u64::MAX / 2, &mut out);
    d.flush(&mut out);
    for e in &out {
        assert!(e.origin.sampling_rate >= 1);
    }
});
