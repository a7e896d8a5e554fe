//! Helpers shared by the binary's integration tests.

use std::path::{Path, PathBuf};

/// The package directories an evidence store holds (not the half-built ones), sorted.
pub fn package_dirs(root: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("packages"))
        .map(|d| {
            d.map(|e| e.unwrap().path())
                .filter(|p| {
                    p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.')
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}
