//! The configuration crate through its public API: every file shipped in `config/` loads, and
//! a file with many mistakes reports them all, each under its file and key.

use normwatch_config::norms::{load_norms, Framework, ALERT_KINDS};
use normwatch_config::{load, parse, ConfigError};
use normwatch_model::Role;
use std::path::{Path, PathBuf};

/// Every `*.toml` under `dir`, recursively, sorted.
fn toml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            toml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
    out.sort();
}

#[test]
fn every_file_in_config_dir_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let mut files = Vec::new();
    toml_files(&dir, &mut files);
    assert!(!files.is_empty(), "no *.toml in {}", dir.display());
    for path in &files {
        if path.file_name().is_some_and(|n| n == "norms.toml") {
            load_norms(path).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        if path.file_name().is_some_and(|n| n == "reflectors.toml") {
            normwatch_config::reflectors::load_reflectors(path).unwrap_or_else(|e| panic!("{e}"));
            continue;
        }
        // Recipients directories belong to the evidence stage, whose tests load them.
        if path.file_name().is_some_and(|n| n == "recipients.toml") {
            continue;
        }
        let cfg = load(path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.source.as_deref(), Some(path.as_path()));
    }
}

#[test]
fn shipped_example_has_assets_across_sectors() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
    let cfg = load(&dir.join("normwatch.toml")).unwrap();
    assert!(cfg.assets.assets().len() >= 5);
    let cfg = load(&dir.join("minimal.toml")).unwrap();
    assert_eq!(cfg.assets.assets().len(), 1);
}

#[test]
fn unreadable_file_is_an_io_error_naming_it() {
    let err = load(Path::new("/nonexistent/normwatch.toml")).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }));
    assert!(err.to_string().contains("/nonexistent/normwatch.toml"));
}

#[test]
fn independent_mistakes_are_all_reported_with_their_key_paths() {
    let text = r#"
[sensor]
id = "edge-1"
verbose = true

[sensor.timeouts]
tcp_idle = "5 minutes please"

[[asset]]
id = "grid-scada"
name = "Grid"
operator = "Example Power Co"
sector = "power"
service = "electricity"
cidrs = ["10.10.10.0/24"]

[[asset]]
id = "water"
name = "Water"
operator = "Example Water"
sector = "water"
service = "drinking water"
cidrs = ["198.51.100.0/26", "10.20.0.5/22"]

[[asset]]
id = "grid-scada"
name = "Grid backup"
operator = "Example Power Co"
sector = "energy"
service = "electricity"
cidrs = ["192.0.2.0/24"]

[alerts]
to = "soc@example.org"
"#;
    let Err(ConfigError::Invalid(d)) = parse(text, Path::new("site.toml")) else {
        panic!("expected diagnostics")
    };
    let keys: Vec<&str> = d.iter().map(|x| x.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "alerts",
            "sensor.verbose",
            "sensor.timeouts.tcp_idle",
            "asset[0].sector",
            "asset[1].cidrs[1]",
            "asset[2].id",
        ]
    );
    let lines: Vec<String> = d.to_string().lines().map(String::from).collect();
    assert_eq!(lines.len(), 6);
    assert!(lines.iter().all(|l| l.starts_with("site.toml: ")));
    assert!(lines[1].contains("unknown field `verbose`, expected one of `id`, `max_flows`"));
    assert!(lines[4].contains("10.20.0.5/22 has host bits set; did you mean 10.20.0.0/22?"));
    assert!(lines[5].contains("asset[0]") && lines[5].contains("asset[2].id"));
}

#[test]
fn syntax_error_gives_line_and_column() {
    let Err(ConfigError::Invalid(d)) = parse("[sensor\nid = 1\n", Path::new("x.toml")) else {
        panic!("expected diagnostics")
    };
    assert_eq!(d.len(), 1);
    let line = d.to_string();
    assert!(
        line.starts_with("x.toml: TOML syntax error at line 1, column "),
        "{line}"
    );
}

#[test]
fn same_prefix_on_two_assets_is_rejected() {
    let asset = |id: &str| {
        format!(
            "[[asset]]\nid = \"{id}\"\nname = \"n\"\noperator = \"o\"\nsector = \"health\"\nservice = \"s\"\ncidrs = [\"2001:db8:1::/48\"]\n"
        )
    };
    let Err(ConfigError::Invalid(d)) = parse(&(asset("a") + &asset("b")), Path::new("x.toml"))
    else {
        panic!("expected diagnostics")
    };
    let all: Vec<_> = d.iter().collect();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].key, "asset[1].cidrs[0]");
    assert!(all[0].message.contains("2001:db8:1::/48"));
}

#[test]
fn shipped_norm_catalogue_is_complete() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/norms.toml");
    let c = load_norms(&path).unwrap_or_else(|e| panic!("{e}"));
    let count = |f: Framework| c.norms().iter().filter(|n| n.framework == f).count();
    assert_eq!(count(Framework::UnGge2015), 11, "A/70/174 para 13 (a)-(k)");
    assert_eq!(count(Framework::Us2015), 4);
    assert_eq!(count(Framework::OsceCbm), 16, "PC.DEC/1106 and 1202");
    for l in 'a'..='k' {
        assert!(c.get(&format!("ungge2015.13{l}")).is_some(), "13({l})");
    }
    for kind in ALERT_KINDS {
        let n = c.for_alert(kind, &[Role::PublicService]).unwrap();
        assert!(
            n.caveats.contains(&"ungge2015.13b".to_string()),
            "{kind}: 13(b) caveat"
        );
        assert!(
            n.request_basis.contains(&"ungge2015.13c".to_string()),
            "{kind}: requests rest on 13(c)"
        );
    }
    let flood = c.for_alert("syn_flood", &[Role::Ot]).unwrap();
    assert!(flood.violated.contains(&"ungge2015.13f".to_string()));
    assert!(flood.request_basis.contains(&"ungge2015.13h".to_string()));
    assert!(!flood.violated.contains(&"ungge2015.13k".to_string()));
    let on_csirt = c.for_alert("syn_flood", &[Role::Csirt]).unwrap();
    assert!(on_csirt.violated.contains(&"ungge2015.13k".to_string()));
    let theft = c.for_alert("bulk_exfiltration", &[Role::HoldsIp]).unwrap();
    assert_eq!(theft.violated, ["us2015.no-ip-theft"]);
}
