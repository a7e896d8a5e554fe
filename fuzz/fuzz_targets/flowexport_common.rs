//! What every flow-export fuzz target does: any bytes as one datagram of a protocol, decoded
//! twice from one exporter (so templates the first pass learned, or flows it began, meet the
//! second pass), then time passes and the input ends.

use normwatch_flowexport::{Decoder, DecoderConfig};

/// Decodes `input` with its first bytes set to `version` (the protocol's version field).
pub fn run(input: &[u8], version: &[u8]) {
    let mut data = input.to_vec();
    if data.len() >= version.len() {
        data[..version.len()].copy_from_slice(version);
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
}
