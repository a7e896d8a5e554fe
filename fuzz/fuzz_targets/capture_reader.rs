//! Any bytes as a pcap/pcapng file: an error or frames, never a panic or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use normwatch_sensor::capture::file::read_stream;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let mut frames = 0u64;
    let _ = read_stream(data, Path::new("fuzz-input"), |f| {
        frames += 1;
        let _ = (f.data.len(), f.wire_len, f.ts_ns);
    });
});
