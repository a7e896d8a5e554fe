//! Every configuration file shipped in `config/` loads without a problem.

use std::path::Path;

#[test]
fn every_file_in_config_dir_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let cfg = normwatch_config::load(&path).unwrap_or_else(|e| panic!("{e}"));
            assert!(!cfg.assets.is_empty(), "{} has no assets", path.display());
            n += 1;
        }
    }
    assert!(n >= 2, "found {n} config files in {}", dir.display());
}

#[test]
fn unreadable_file_is_an_io_error_naming_it() {
    let err = normwatch_config::load(Path::new("/nonexistent/normwatch.toml")).unwrap_err();
    assert!(matches!(err, normwatch_config::ConfigError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/normwatch.toml"));
}
