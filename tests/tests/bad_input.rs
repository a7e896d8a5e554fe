//! Truncated and corrupted captures: a clear error naming the file and the byte offset, after
//! every flow read so far has been flushed; corrupt packets are counted drops, never panics.

use normwatch_sensor::capture::file::CaptureError;
use normwatch_sensor::decode::DropReason;
use normwatch_tests::{capture, config, flows_of};
use std::path::PathBuf;

fn write_tmp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

const TRACE: &str = "zeek/testing/btest/Traces/wikipedia.pcap";

#[test]
fn truncated_capture_reports_offset_after_flushing_flows() {
    let full = std::fs::read(capture(TRACE)).unwrap();
    let (all, _) = flows_of(&capture(TRACE), config(false)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Cut in the middle of a record, two thirds into the file.
    let cut = full.len() * 2 / 3;
    let path = write_tmp(&dir, "cut.pcap", &full[..cut]);
    let (partial, err) = flows_of(&path, config(false)).expect_err("a truncated file is an error");
    let msg = err.to_string();
    assert!(matches!(err, CaptureError::Truncated { .. }), "{msg}");
    assert!(msg.contains("cut.pcap"), "{msg}");
    let off = err.offset().unwrap();
    assert!(
        off > 24 && (off as usize) < cut,
        "offset {off} within the file"
    );
    assert!(msg.contains(&off.to_string()), "{msg}");
    // The flows before the cut were delivered, and they are a subset of the full run's.
    let pkts = |v: &[normwatch_model::FlowRecord]| {
        v.iter().map(|f| f.orig.pkts + f.resp.pkts).sum::<u64>()
    };
    assert!(!partial.is_empty());
    assert!(pkts(&partial) > 0 && pkts(&partial) < pkts(&all));
}

#[test]
fn pcapng_truncated_inside_a_block() {
    let trace = "zeek/testing/btest/Traces/tcp/http-on-irc-port-missing-syn.pcapng";
    let full = std::fs::read(capture(trace)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = write_tmp(&dir, "cut.pcapng", &full[..full.len() - 7]);
    let (partial, err) = flows_of(&path, config(false)).expect_err("truncated");
    assert!(matches!(err, CaptureError::Truncated { .. }), "{err}");
    assert!(
        !partial.is_empty(),
        "packets before the cut still make a flow"
    );
}

#[test]
fn corrupt_record_length_is_an_error_with_offset() {
    let mut bytes = std::fs::read(capture(TRACE)).unwrap();
    // The second record header starts after the 24-byte file header and the first record.
    let first_caplen = u32::from_le_bytes(bytes[32..36].try_into().unwrap()) as usize;
    let second = 24 + 16 + first_caplen;
    // caplen of the second record: absurdly large.
    bytes[second + 8..second + 12].copy_from_slice(&0x7fff_fff0u32.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = write_tmp(&dir, "corrupt.pcap", &bytes);
    let (partial, err) = flows_of(&path, config(false)).expect_err("corrupt");
    assert_eq!(err.offset(), Some(second as u64), "{err}");
    assert!(err.to_string().contains("corrupt.pcap"));
    assert_eq!(
        partial
            .iter()
            .map(|f| f.orig.pkts + f.resp.pkts)
            .sum::<u64>(),
        1
    );
}

#[test]
fn not_a_capture_and_empty_file_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("text.pcap", &b"this is not a capture file at all"[..]),
        ("empty.pcap", &b""[..]),
    ] {
        let path = write_tmp(&dir, name, bytes);
        let (_, err) = flows_of(&path, config(false)).expect_err("not a capture");
        assert!(err.to_string().contains(name), "{err}");
        assert!(matches!(err, CaptureError::NotACapture { .. }), "{err}");
    }
    let (_, err) = flows_of(&dir.path().join("missing.pcap"), config(false)).expect_err("missing");
    assert!(matches!(err, CaptureError::Open { .. }));
}

#[test]
fn garbage_packets_are_counted_drops_not_panics() {
    // Flip bytes all over every packet of a real capture (keeping record headers intact).
    let mut bytes = std::fs::read(capture(TRACE)).unwrap();
    let mut pos = 24;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    while pos + 16 <= bytes.len() {
        let caplen = u32::from_le_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let data = pos + 16;
        for i in data..(data + caplen).min(bytes.len()) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed.is_multiple_of(7) {
                bytes[i] = seed as u8;
            }
        }
        pos = data + caplen;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = write_tmp(&dir, "garbled.pcap", &bytes);
    let (_, stats) = flows_of(&path, config(true)).unwrap();
    let dropped: u64 = DropReason::ALL.iter().map(|r| stats.drops_for(*r)).sum();
    assert_eq!(stats.packets, 136);
    assert!(dropped > 0, "garbled packets are dropped with a reason");
}
