//! Any bytes as a pcap/pcapng file: an error or frames, never a panic or a hang; and a file
//! read through mapped windows gives exactly what the same bytes give as a stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use normwatch_sensor::capture::file::{read_file_mapped, read_stream, FileSummary};
use normwatch_sensor::capture::Frame;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

type Seen = (Vec<(u64, Vec<u8>, usize)>, Result<(u64, u64), String>);

fn seen(read: impl FnOnce(&mut dyn FnMut(Frame<'_>)) -> Result<FileSummary, String>) -> Seen {
    let mut frames = Vec::new();
    let r = read(&mut |f: Frame<'_>| frames.push((f.ts_ns, f.data.to_vec(), f.wire_len)));
    // Errors compared from the byte offset on: the two name the input differently.
    let r = r.map(|s| (s.frames, s.bytes)).map_err(|e| {
        e.split_once("byte offset ")
            .map_or(String::from("no offset"), |(_, at)| at.to_owned())
    });
    (frames, r)
}

/// One scratch file per fuzzing process, removed after each input.
fn scratch() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        std::env::temp_dir().join(format!("normwatch-fuzz-{}.pcap", std::process::id()))
    })
}

fuzz_target!(|data: &[u8]| {
    let stream =
        seen(|cb| read_stream(data, Path::new("fuzz-input"), cb).map_err(|e| e.to_string()));
    let path = scratch();
    if std::fs::write(path, data).is_err() {
        return;
    }
    let mapped = seen(|cb| read_file_mapped(path, 4096, false, cb).map_err(|e| e.to_string()));
    let _ = std::fs::remove_file(path);
    assert_eq!(mapped.0, stream.0, "frames");
    assert_eq!(mapped.1, stream.1, "end");
});
