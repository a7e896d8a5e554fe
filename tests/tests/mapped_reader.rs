//! Large capture files are memory-mapped window by window. Every real legacy pcap capture in
//! the shared data, read that way in small windows (so that records straddle many window
//! edges), must give exactly the frames that reading the same bytes as a stream gives, and
//! end the same way.
#![allow(clippy::print_stdout)]

use normwatch_sensor::capture::file::{read_file_mapped, read_stream, FileSummary};
use normwatch_sensor::capture::Frame;
use normwatch_tests::{files_under, shared_data};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::Path;

/// Whether `path` holds at most `max` bytes and starts with a legacy pcap magic.
fn legacy_pcap(path: &Path, max: u64) -> bool {
    let size = std::fs::metadata(path).map_or(0, |m| m.len());
    let mut magic = [0u8; 4];
    let read = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok();
    let legacy = [0xa1b2_c3d4u32, 0xa1b2_3c4d, 0xd4c3_b2a1, 0x4d3c_b2a1];
    size > 24 && size <= max && read && legacy.contains(&u32::from_le_bytes(magic))
}

/// A digest of every frame, the frame count, and how the read ended (the error text without
/// the file name, which differs between the two ways of reading).
fn digest(
    read: impl FnOnce(&mut dyn FnMut(Frame<'_>)) -> Result<FileSummary, String>,
) -> (u64, u64, Result<(u64, u64), String>) {
    let mut h = DefaultHasher::new();
    let mut n = 0u64;
    let r = read(&mut |f: Frame<'_>| {
        n += 1;
        (f.ts_ns, f.data, f.wire_len, f.link as u8).hash(&mut h);
    });
    let end = r.map(|s| (s.frames, s.bytes)).map_err(|e| {
        e.split_once(": ")
            .map_or(e.clone(), |(_, rest)| rest.to_owned())
    });
    (h.finish(), n, end)
}

#[test]
fn mapped_windows_give_the_frames_of_a_stream_on_every_legacy_capture() {
    let files = files_under(&shared_data().join("captures"), &|p| {
        legacy_pcap(p, 16 << 20)
    });
    assert!(
        files.len() >= 50,
        "expected the shared legacy pcap captures, found {}",
        files.len()
    );
    let mut frames = 0;
    for path in &files {
        let stream = digest(|cb| {
            let f = std::fs::File::open(path).expect("open capture");
            read_stream(std::io::BufReader::new(f), path, cb).map_err(|e| e.to_string())
        });
        for threaded in [false, true] {
            let mapped =
                digest(|cb| read_file_mapped(path, 4096, threaded, cb).map_err(|e| e.to_string()));
            assert_eq!(
                mapped,
                stream,
                "{} (mapped, threaded: {threaded})",
                path.display()
            );
        }
        frames += stream.1;
    }
    println!("{} captures, {frames} frames", files.len());
}
