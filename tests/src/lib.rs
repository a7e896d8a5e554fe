//! Helpers for the integration tests: where the shared captures live, and running the sensor
//! over a capture file.

#![allow(clippy::print_stdout)]

use normwatch_model::FlowRecord;
use normwatch_sensor::capture::file::{read_file, CaptureError};
use normwatch_sensor::{FlowConfig, FlowTable, SensorStats};
use std::path::{Path, PathBuf};

/// The shared data directory (`../shared/data` beside the project, or `$NORMWATCH_SHARED_DATA`).
pub fn shared_data() -> PathBuf {
    if let Ok(p) = std::env::var("NORMWATCH_SHARED_DATA") {
        return PathBuf::from(p);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/data")
}

/// Every file under `dir` (recursively, in path order) for which `keep` holds.
pub fn files_under(dir: &Path, keep: &dyn Fn(&Path) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut entries: Vec<PathBuf> = rd.map(|e| e.expect("dir entry").path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            out.extend(files_under(&p, keep));
        } else if keep(&p) {
            out.push(p);
        }
    }
    out
}

/// A capture under `shared/data/captures`.
pub fn capture(rel: &str) -> PathBuf {
    shared_data().join("captures").join(rel)
}

/// Runs the flow table over `path` and returns every flow (flushed at the end) and the stats.
pub fn flows_of(
    path: &Path,
    cfg: FlowConfig,
) -> Result<(Vec<FlowRecord>, SensorStats), (Vec<FlowRecord>, CaptureError)> {
    let mut table = FlowTable::new(cfg);
    let mut out = Vec::new();
    let res = read_file(path, |f| {
        table.process_frame(f.link, f.data, f.wire_len, f.ts_ns, &mut out)
    });
    table.flush(&mut out);
    match res {
        Ok(_) => Ok((out, table.stats().clone())),
        Err(e) => Err((out, e)),
    }
}

/// Default settings with checksum verification on or off.
pub fn config(verify_checksums: bool) -> FlowConfig {
    let mut cfg = FlowConfig::default();
    cfg.checksums.verify = verify_checksums;
    cfg
}
