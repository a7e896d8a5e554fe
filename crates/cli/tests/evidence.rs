//! `normwatch keygen` and `normwatch verify`, run as a recipient runs them: a key pair from
//! keygen signs real packages (built from MaxMind's test databases), verify accepts them as a
//! directory and as a `.tar`, and rejects every kind of tampering naming the fault.

use normwatch_config::norms::parse_norms;
use normwatch_evidence::attribution::{GeoDb, GeoPaths};
use normwatch_evidence::keys::SecretKey;
use normwatch_evidence::package::{self, BuildInput, Operator, Package, RequestSettings};
use normwatch_evidence::recipients;
use normwatch_evidence::sample;
use normwatch_evidence::tlp::Tlp;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn normwatch(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_normwatch"))
        .args(args)
        .output()
        .expect("run normwatch")
}

fn run(args: &[&dyn AsRef<std::ffi::OsStr>]) -> (i32, String, String) {
    let a: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    let o = normwatch(&a);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

fn geoip(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/data/geoip")
        .join(name)
}

/// keygen into `dir`, then the packages of the sample alert signed with that key.
fn setup(dir: &Path) -> (PathBuf, Vec<Package>) {
    let key_path = dir.join("signing.key");
    let (code, out, err) = run(&[&"keygen", &"--out", &key_path]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("key id:"), "{out}");
    let key = SecretKey::load(&key_path).unwrap();
    let db = GeoDb::open(&GeoPaths {
        country: geoip("GeoLite2-Country-Test.mmdb"),
        asn: Some(geoip("GeoLite2-ASN-Test.mmdb")),
        anonymous_ip: None,
    })
    .unwrap();
    let sources: Vec<(IpAddr, bool)> = [
        ("89.160.20.112", false),
        ("89.160.20.130", true),
        ("2.125.160.216", false),
    ]
    .iter()
    .map(|(a, r)| (a.parse().unwrap(), *r))
    .collect();
    let alert = sample::alert(&sources);
    let flows = sample::flows(&alert, 2);
    let attributions: BTreeMap<_, _> = alert
        .top_sources
        .iter()
        .map(|s| (s.addr, db.lookup(s.addr).unwrap()))
        .collect();
    let directory = sample::directory();
    let plan = recipients::plan(&alert, &attributions, &[], &directory, "NL", Tlp::Amber).unwrap();
    let norms = parse_norms(
        include_str!("../../../config/norms.toml"),
        Path::new("norms.toml"),
    )
    .unwrap();
    let packages = plan
        .packages
        .iter()
        .map(|p| {
            package::build(
                BuildInput {
                    alert: &alert,
                    flows: &flows,
                    planned: p,
                    requester: directory.get("NL").unwrap(),
                    operator: &Operator {
                        name: "Example Grid Operator".into(),
                        email: None,
                    },
                    asset_operator: None,
                    settings: &RequestSettings::default(),
                    norms: &norms,
                    geo: &db.provenance(),
                    packaged_at_ns: sample::START_NS + 7_200_000_000_000,
                    flows_received_ns: None,
                },
                &key,
            )
            .unwrap()
        })
        .collect();
    (
        PathBuf::from(format!("{}.pub", key_path.display())),
        packages,
    )
}

#[test]
fn keygen_writes_a_private_key_only_its_owner_can_read_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("k");
    let (code, _, err) = run(&[&"keygen", &"--out", &key]);
    assert_eq!(code, 0, "{err}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(tmp.path().join("k.pub").exists());
    let before = std::fs::read(&key).unwrap();
    let (code, _, err) = run(&[&"keygen", &"--out", &key]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), before);
    // A private key others can read is refused when loaded for signing.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    let e = SecretKey::load(&key).unwrap_err().to_string();
    assert!(
        e.contains("accessible by group or others (mode 0640)"),
        "{e}"
    );
}

#[test]
fn verify_accepts_intact_packages_as_directory_and_tar() {
    let tmp = tempfile::tempdir().unwrap();
    let (pubkey, packages) = setup(tmp.path());
    assert_eq!(packages.len(), 2);
    for p in &packages {
        let dir = p.write_dir(tmp.path()).unwrap();
        let tar = p.write_tar(tmp.path()).unwrap();
        for target in [&dir, &tar] {
            let (code, out, err) = run(&[&"verify", target, &"--key", &pubkey]);
            assert_eq!(code, 0, "{out}{err}");
            assert!(out.contains(&format!("ok (package {}", p.id)), "{out}");
        }
    }
}

fn flip_byte(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

/// Expects `verify` to exit 1 with `want` in its message.
fn expect_fault(pkg: &Path, pubkey: &Path, want: &str) {
    let (code, out, err) = run(&[&"verify", &pkg, &"--key", &pubkey]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("verification failed") && err.contains(want),
        "want {want:?}, got {err}"
    );
}

#[test]
fn verify_names_the_fault_for_every_kind_of_tampering() {
    let tmp = tempfile::tempdir().unwrap();
    let (pubkey, packages) = setup(tmp.path());
    let p = &packages[0];
    let fresh = |n: usize| {
        let parent = tmp.path().join(format!("case{n}"));
        std::fs::create_dir(&parent).unwrap();
        p.write_dir(&parent).unwrap()
    };
    let mut n = 0;
    for name in p.files.keys() {
        n += 1;
        let dir = fresh(n);
        flip_byte(&dir.join(name));
        let want = match name.as_str() {
            "manifest.json" => {
                "manifest.json: SHA-256 does not match the signed statement".to_string()
            }
            "manifest.intoto.dsse.json" => "manifest.intoto.dsse.json".to_string(),
            other => format!("{other}: SHA-256 does not match the manifest"),
        };
        expect_fault(&dir, &pubkey, &want);
    }

    let dir = fresh(100);
    std::fs::remove_file(dir.join("evidence/flows.jsonl")).unwrap();
    expect_fault(&dir, &pubkey, "missing file evidence/flows.jsonl");

    let dir = fresh(101);
    std::fs::write(dir.join("evidence/extra.pcap"), b"\xd4\xc3\xb2\xa1").unwrap();
    expect_fault(&dir, &pubkey, "unexpected file evidence/extra.pcap");

    // Editing the custody log: dropping its last entry, then rewriting an actor.
    let dir = fresh(102);
    let custody = dir.join("custody.jsonl");
    let text = std::fs::read_to_string(&custody).unwrap();
    let kept: Vec<&str> = text.lines().take(3).collect();
    std::fs::write(&custody, kept.join("\n") + "\n").unwrap();
    expect_fault(&dir, &pubkey, "custody.jsonl: shorter than the signed log");
    let dir = fresh(103);
    let custody = dir.join("custody.jsonl");
    let text = std::fs::read_to_string(&custody).unwrap();
    std::fs::write(
        &custody,
        text.replace("Example Grid Operator", "Example Grid 0perator"),
    )
    .unwrap();
    expect_fault(
        &dir,
        &pubkey,
        "custody.jsonl: SHA-256 does not match the manifest",
    );

    // Another signer's key; a tar with a byte flipped in the bundle.
    let other = tmp.path().join("other.key");
    assert_eq!(run(&[&"keygen", &"--out", &other]).0, 0);
    let dir = fresh(104);
    expect_fault(
        &dir,
        &PathBuf::from(format!("{}.pub", other.display())),
        "signature invalid",
    );
    let tar = p.write_tar(tmp.path()).unwrap();
    let bytes = std::fs::read(&tar).unwrap();
    let needle = b"\"type\":\"bundle\"";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .unwrap();
    let mut bad = bytes.clone();
    bad[at + 2] ^= 0x01;
    std::fs::write(&tar, bad).unwrap();
    expect_fault(
        &tar,
        &pubkey,
        "stix/bundle.json: SHA-256 does not match the manifest",
    );

    // Bad usage: no such package, a key file that is not a key.
    let (code, _, err) = run(&[&"verify", &tmp.path().join("nope"), &"--key", &pubkey]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&[&"verify", &tar, &"--key", &tar]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no valid Ed25519 public key"), "{err}");
}
