//! Verification of a package, as a recipient runs it: the signature over the manifest, every
//! file's size and SHA-256, no missing and no extra file, and the custody chain. The first
//! fault found is returned, naming the file.

use crate::canon::{jcs, sha256_hex};
use crate::custody;
use crate::dsse::{self, Envelope};
use crate::keys::PublicKey;
use crate::package::{CUSTODY, ENVELOPE, FORMAT, MANIFEST};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Component, Path};

/// Largest file accepted in a package: a bound on memory for hostile input.
const MAX_FILE: u64 = 1 << 30;
/// Largest package accepted.
const MAX_TOTAL: u64 = 4 << 30;

/// The first thing wrong with a package.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Fault(pub String);

fn fault<T>(s: impl Into<String>) -> Result<T, Fault> {
    Err(Fault(s.into()))
}

/// What a verified package holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub package_id: String,
    pub recipient: String,
    pub files: usize,
    pub custody_entries: usize,
}

#[derive(Deserialize)]
struct ManifestFile {
    path: String,
    sha256: String,
    size: u64,
    #[serde(default)]
    appendable: bool,
}

#[derive(Deserialize)]
struct Manifest {
    format: String,
    package_id: String,
    recipient: String,
    files: Vec<ManifestFile>,
}

/// A relative path of normal components only, with `/` separators.
fn safe_rel(p: &str) -> bool {
    !p.is_empty()
        && !p.starts_with('/')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

/// Verifies a package directory or `.tar`. The package path itself may be a link (to a
/// directory or an archive); links inside a package directory are refused.
pub fn verify_path(path: &Path, key: &PublicKey) -> Result<Verified, Fault> {
    let meta = std::fs::metadata(path).map_err(|e| Fault(format!("{}: {e}", path.display())))?;
    let files = if meta.is_dir() {
        read_dir(path)?
    } else {
        let f = std::fs::File::open(path).map_err(|e| Fault(format!("{}: {e}", path.display())))?;
        read_tar(f)?
    };
    verify_files(&files, key)
}

fn read_dir(root: &Path) -> Result<BTreeMap<String, Vec<u8>>, Fault> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let rd = std::fs::read_dir(&dir).map_err(|e| Fault(format!("{}: {e}", dir.display())))?;
        for ent in rd {
            let ent = ent.map_err(|e| Fault(format!("{}: {e}", dir.display())))?;
            let p = ent.path();
            let rel = p
                .strip_prefix(root)
                .ok()
                .map(|r| {
                    r.components()
                        .map(|c| c.as_os_str().to_string_lossy().into_owned())
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .unwrap_or_default();
            let ft = ent.file_type().map_err(|e| Fault(format!("{rel}: {e}")))?;
            if ft.is_symlink() {
                return fault(format!(
                    "{rel}: is a symbolic link (not allowed in a package)"
                ));
            } else if ft.is_dir() {
                stack.push(p);
            } else if ft.is_file() {
                let len = ent.metadata().map(|m| m.len()).unwrap_or(0);
                if len > MAX_FILE {
                    return fault(format!("{rel}: larger than {MAX_FILE} bytes"));
                }
                let bytes = std::fs::read(&p).map_err(|e| Fault(format!("{rel}: {e}")))?;
                out.insert(rel, bytes);
            } else {
                return fault(format!("{rel}: not a regular file"));
            }
        }
    }
    Ok(out)
}

/// Reads a package `.tar`: one top directory holding regular files and directories only.
pub fn read_tar(r: impl Read) -> Result<BTreeMap<String, Vec<u8>>, Fault> {
    let mut ar = tar::Archive::new(r);
    let mut out = BTreeMap::new();
    let mut top: Option<String> = None;
    let mut total: u64 = 0;
    let entries = ar
        .entries()
        .map_err(|e| Fault(format!("not a tar archive: {e}")))?;
    for ent in entries {
        let mut ent = ent.map_err(|e| Fault(format!("damaged tar archive: {e}")))?;
        let path = ent
            .path()
            .map_err(|e| Fault(format!("damaged tar entry name: {e}")))?
            .into_owned();
        let mut parts = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(s) => parts.push(s.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => return fault(format!("{}: unsafe path in tar archive", path.display())),
            }
        }
        let Some((first, rest)) = parts.split_first() else {
            continue;
        };
        match &top {
            None => top = Some(first.clone()),
            Some(t) if t != first => {
                return fault(format!(
                    "{}: outside the package's top directory {t}",
                    path.display()
                ))
            }
            _ => {}
        }
        let rel = rest.join("/");
        match ent.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            other => {
                return fault(format!(
                    "{rel}: tar entry of type {other:?} (only files allowed)"
                ))
            }
        }
        if rel.is_empty() {
            return fault(format!(
                "{}: file at the top of the archive",
                path.display()
            ));
        }
        let size = ent.header().size().unwrap_or(u64::MAX);
        if size > MAX_FILE {
            return fault(format!("{rel}: larger than {MAX_FILE} bytes"));
        }
        total = total.saturating_add(size);
        if total > MAX_TOTAL {
            return fault(format!("archive larger than {MAX_TOTAL} bytes"));
        }
        // The header's size is the sender's claim: reserve little, let the read grow it.
        let mut buf = Vec::with_capacity(size.min(1 << 24) as usize);
        ent.read_to_end(&mut buf)
            .map_err(|e| Fault(format!("{rel}: damaged tar data: {e}")))?;
        if out.insert(rel.clone(), buf).is_some() {
            return fault(format!("{rel}: appears twice in the tar archive"));
        }
    }
    Ok(out)
}

/// Verifies a package given its files by relative path.
pub fn verify_files(files: &BTreeMap<String, Vec<u8>>, key: &PublicKey) -> Result<Verified, Fault> {
    let Some(manifest_bytes) = files.get(MANIFEST) else {
        return fault(format!("missing file {MANIFEST}"));
    };
    let Some(env_bytes) = files.get(ENVELOPE) else {
        return fault(format!("missing file {ENVELOPE} (the signature)"));
    };
    let env: Envelope = serde_json::from_slice(env_bytes)
        .map_err(|e| Fault(format!("{ENVELOPE}: not a DSSE envelope: {e}")))?;
    let payload = dsse::verify(&env, key)
        .map_err(|e| Fault(format!("{ENVELOPE}: signature invalid: {e}")))?;
    let st: serde_json::Value = serde_json::from_slice(&payload)
        .map_err(|e| Fault(format!("{ENVELOPE}: statement is not JSON: {e}")))?;
    if st["_type"] != dsse::STATEMENT_TYPE || st["predicateType"] != dsse::PREDICATE_TYPE {
        return fault(format!("{ENVELOPE}: not a normwatch in-toto Statement v1"));
    }
    let signed_digest = st["subject"]
        .as_array()
        .and_then(|s| s.iter().find(|x| x["name"] == MANIFEST))
        .and_then(|s| s["digest"]["sha256"].as_str())
        .ok_or_else(|| Fault(format!("{ENVELOPE}: statement has no subject {MANIFEST}")))?;
    if sha256_hex(manifest_bytes) != signed_digest {
        return fault(format!(
            "{MANIFEST}: SHA-256 does not match the signed statement"
        ));
    }
    let m: Manifest = serde_json::from_slice(manifest_bytes)
        .map_err(|e| Fault(format!("{MANIFEST}: not a package manifest: {e}")))?;
    if m.format != FORMAT {
        return fault(format!(
            "{MANIFEST}: format {:?}, expected {FORMAT:?}",
            m.format
        ));
    }
    let canonical = serde_json::from_slice::<serde_json::Value>(manifest_bytes)
        .ok()
        .and_then(|v| jcs(&v).ok());
    if canonical.as_deref() != Some(manifest_bytes.as_slice()) {
        return fault(format!("{MANIFEST}: not in RFC 8785 canonical form"));
    }
    let mut listed = BTreeMap::new();
    for f in &m.files {
        if !safe_rel(&f.path) || f.path == MANIFEST || f.path == ENVELOPE {
            return fault(format!("{MANIFEST}: bad path {:?}", f.path));
        }
        if listed.insert(f.path.as_str(), f).is_some() {
            return fault(format!("{MANIFEST}: {} listed twice", f.path));
        }
    }
    for f in &m.files {
        if !files.contains_key(&f.path) {
            return fault(format!("missing file {}", f.path));
        }
    }
    for p in files.keys() {
        if p != MANIFEST && p != ENVELOPE && !listed.contains_key(p.as_str()) {
            return fault(format!("unexpected file {p} (not in the manifest)"));
        }
    }
    let mut custody_signed_lines = None;
    for f in &m.files {
        let mut bytes = files[&f.path].as_slice();
        if f.appendable {
            if f.path != CUSTODY {
                return fault(format!(
                    "{MANIFEST}: only {CUSTODY} may be appendable, not {}",
                    f.path
                ));
            }
            // What was signed is the prefix; anything after it is checked entry by entry.
            let n = usize::try_from(f.size).unwrap_or(usize::MAX);
            if bytes.len() < n || (n > 0 && bytes[n - 1] != b'\n') {
                return fault(format!(
                    "{}: shorter than the signed log, or cut inside a line",
                    f.path
                ));
            }
            bytes = &bytes[..n];
            custody_signed_lines = Some(bytes.iter().filter(|b| **b == b'\n').count());
        }
        if bytes.len() as u64 != f.size {
            return fault(format!(
                "{}: size {} does not match the manifest ({})",
                f.path,
                bytes.len(),
                f.size
            ));
        }
        if sha256_hex(bytes) != f.sha256 {
            return fault(format!("{}: SHA-256 does not match the manifest", f.path));
        }
    }
    let Some(custody_bytes) = files.get(CUSTODY) else {
        return fault(format!("missing file {CUSTODY}"));
    };
    let entries = custody::check(custody_bytes).map_err(|e| Fault(format!("{CUSTODY}: {e}")))?;
    let signed = custody_signed_lines.unwrap_or(entries.len());
    for (i, e) in entries.iter().enumerate().skip(signed) {
        if e.action != custody::Action::Sent || !custody::signature_valid(e, key) {
            return fault(format!(
                "{CUSTODY}: line {}: entry added after packaging is not a 'sent' record signed by the key",
                i + 1
            ));
        }
    }
    for (i, e) in entries.iter().enumerate() {
        for s in &e.subjects {
            if let Some(b) = files.get(&s.name) {
                if sha256_hex(b) != s.sha256 {
                    return fault(format!(
                        "custody.jsonl: line {}: {} does not match its recorded SHA-256",
                        i + 1,
                        s.name
                    ));
                }
            }
        }
    }
    Ok(Verified {
        package_id: m.package_id,
        recipient: m.recipient,
        files: files.len(),
        custody_entries: entries.len(),
    })
}
