//! `verify` on hostile input: escaped names, special files, extra directories, identifiers
//! and keyid checked against the signature, compressed archives.

use super::{build_all, T};
use normwatch_evidence::canon::{jcs, sha256_hex};
use normwatch_evidence::dsse;
use normwatch_evidence::package::{ENVELOPE, MANIFEST};
use normwatch_evidence::verify::{printable, verify_files, verify_path, Fault};
use std::path::Path;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

/// Runs `verify_path` on a thread: a hang is a failure, not a stuck test.
fn verify_within(path: &Path, key: normwatch_evidence::keys::PublicKey) -> Result<String, Fault> {
    let (tx, rx) = mpsc::channel();
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(verify_path(&path, &key).map(|v| v.package_id));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("verify hung on hostile input")
}

fn mkfifo(p: &Path) {
    let ok = Command::new("mkfifo").arg(p).status().unwrap().success();
    assert!(ok, "mkfifo {}", p.display());
}

#[test]
fn a_crafted_file_name_is_printed_escaped() {
    let built = build_all(T);
    let tmp = tempfile::tempdir().unwrap();
    let dir = built.packages[0].write_dir(tmp.path()).unwrap();
    let evil = "\u{1b}[2K\r\u{1b}[32mok (package verified)\u{1b}[0m";
    std::fs::write(dir.join("stix").join(evil), "x").unwrap();
    let msg = verify_within(&dir, built.key.public())
        .unwrap_err()
        .to_string();
    assert!(!msg.contains('\u{1b}') && !msg.contains('\r'), "{msg:?}");
    assert!(msg.contains("\\u{1b}[32mok"), "{msg}");
    assert_eq!(printable("a\nb\u{202e}c"), "a\\u{a}b\\u{202e}c");
}

#[test]
fn a_fifo_as_the_package_or_inside_it_is_refused_without_hanging() {
    let built = build_all(T);
    let tmp = tempfile::tempdir().unwrap();
    let fifo = tmp.path().join("package.tar");
    mkfifo(&fifo);
    let msg = verify_within(&fifo, built.key.public())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("neither a directory nor a regular file"),
        "{msg}"
    );

    let dir = built.packages[0].write_dir(tmp.path()).unwrap();
    std::fs::remove_file(dir.join("request.md")).unwrap();
    mkfifo(&dir.join("request.md"));
    let msg = verify_within(&dir, built.key.public())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("request.md: not a regular file"), "{msg}");
}

#[test]
fn a_symlink_inside_a_package_is_refused() {
    let built = build_all(T);
    let tmp = tempfile::tempdir().unwrap();
    let dir = built.packages[0].write_dir(tmp.path()).unwrap();
    std::fs::remove_file(dir.join("request.md")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", dir.join("request.md")).unwrap();
    let msg = verify_within(&dir, built.key.public())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("request.md: is a symbolic link"), "{msg}");
}

#[test]
fn an_extra_directory_is_refused() {
    let built = build_all(T);
    let tmp = tempfile::tempdir().unwrap();
    let dir = built.packages[0].write_dir(tmp.path()).unwrap();
    std::fs::create_dir_all(dir.join("extra/deeper")).unwrap();
    let msg = verify_within(&dir, built.key.public())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("unexpected directory extra"), "{msg}");
}

#[test]
fn large_extra_files_are_refused_without_reading_them_whole() {
    let built = build_all(T);
    let tmp = tempfile::tempdir().unwrap();
    let dir = built.packages[0].write_dir(tmp.path()).unwrap();
    // A sparse 3 GiB file costs no disk; the verifier streams it (or refuses it by size)
    // and never holds it in memory.
    let f = std::fs::File::create(dir.join("evidence/huge.bin")).unwrap();
    f.set_len(3 << 30).unwrap();
    let msg = verify_within(&dir, built.key.public())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("huge.bin: larger than"), "{msg}");
}

/// Re-signs package files with a statement of our making (same key): only the identifiers
/// differ from what the manifest says.
fn resign(
    files: &mut std::collections::BTreeMap<String, Vec<u8>>,
    key: &normwatch_evidence::keys::SecretKey,
    edit: impl Fn(&mut serde_json::Value),
) {
    let env: dsse::Envelope = serde_json::from_slice(&files[ENVELOPE]).unwrap();
    let payload = dsse::verify(&env, &key.public()).unwrap();
    let mut st: serde_json::Value = serde_json::from_slice(&payload).unwrap();
    assert_eq!(
        st["subject"][0]["digest"]["sha256"],
        sha256_hex(&files[MANIFEST])
    );
    edit(&mut st);
    let env = dsse::sign(&jcs(&st).unwrap(), key);
    files.insert(ENVELOPE.into(), serde_json::to_vec(&env).unwrap());
}

#[test]
fn manifest_identifiers_must_match_the_signed_statement() {
    let built = build_all(T);
    let p = &built.packages[0];
    for (field, value) in [("recipient", "XX"), ("package_id", "EP-forged")] {
        let mut files = p.files.clone();
        resign(&mut files, &built.key, |st| {
            st["predicate"][field] = serde_json::json!(value);
        });
        let msg = verify_files(&files, &built.key.public())
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(&format!("manifest.json: {field}")) && msg.contains("signed statement"),
            "{msg}"
        );
    }
    // Unchanged, the re-signed package verifies: the check is on the identifiers alone.
    let mut files = p.files.clone();
    resign(&mut files, &built.key, |_| {});
    assert!(verify_files(&files, &built.key.public()).is_ok());
}

#[test]
fn an_envelope_whose_keyid_names_another_key_is_refused() {
    let built = build_all(T);
    let mut files = built.packages[0].files.clone();
    let mut env: serde_json::Value = serde_json::from_slice(&files[ENVELOPE]).unwrap();
    env["signatures"][0]["keyid"] = serde_json::json!("someone-else");
    files.insert(ENVELOPE.into(), serde_json::to_vec(&env).unwrap());
    let msg = verify_files(&files, &built.key.public())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("no signature names key"), "{msg}");
}

#[test]
fn a_compressed_tar_gets_a_clear_message() {
    let built = build_all(T);
    let tmp = tempfile::tempdir().unwrap();
    let tar = built.packages[0].write_tar(tmp.path()).unwrap();
    let gz = tmp.path().join("package.tar.gz");
    let ok = Command::new("gzip")
        .arg("-k")
        .arg(&tar)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    std::fs::rename(tar.with_extension("tar.gz"), &gz).unwrap();
    let msg = verify_within(&gz, built.key.public())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("is a gzip-compressed file") && msg.contains("plain .tar"),
        "{msg}"
    );
}
