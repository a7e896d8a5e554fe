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

/// The first thing wrong with a package. Its text may quote names from the package (hostile
/// input): it is shown with control characters escaped, so a crafted file name cannot draw
/// on the terminal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", printable(.0))]
pub struct Fault(pub String);

/// `s` with control characters (escape sequences, carriage returns, newlines, bidi controls)
/// written as `\u{…}` escapes, for printing names taken from a package.
pub fn printable(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let bidi = matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() || bidi {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out
}

/// Files read whole (the manifest, the envelope, the custody log) may be at most this large;
/// every other file is hashed as it streams, never held in memory.
const MAX_READ_WHOLE: u64 = 64 << 20;

/// One file of a package: its size and SHA-256, and its bytes when they are needed whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub size: u64,
    pub sha256: String,
    pub bytes: Option<Vec<u8>>,
}

impl Content {
    pub fn of(bytes: Vec<u8>) -> Content {
        Content {
            size: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
            bytes: Some(bytes),
        }
    }
}

fn read_whole(name: &str) -> bool {
    name == MANIFEST || name == ENVELOPE || name == CUSTODY
}

/// Streams `r` (at most `limit` bytes) through SHA-256; keeps the bytes when `keep`.
fn stream(mut r: impl Read, name: &str, keep: bool, limit: u64) -> Result<Content, Fault> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut kept = Vec::new();
    let mut size: u64 = 0;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| Fault(format!("{name}: {e}")))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > limit {
            return fault(format!("{name}: larger than {limit} bytes"));
        }
        h.update(&buf[..n]);
        if keep {
            kept.extend_from_slice(&buf[..n]);
        }
    }
    let sha256 = h
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    Ok(Content {
        size,
        sha256,
        bytes: keep.then_some(kept),
    })
}

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
/// directory or an archive); links, FIFOs, devices and sockets inside a package are refused,
/// and so is a package path that is none of a directory or a regular file (a FIFO would block
/// the reader forever).
pub fn verify_path(path: &Path, key: &PublicKey) -> Result<Verified, Fault> {
    let shown = printable(&path.display().to_string());
    let meta = std::fs::metadata(path).map_err(|e| Fault(format!("{shown}: {e}")))?;
    let (files, dirs) = if meta.is_dir() {
        read_dir(path)?
    } else if meta.is_file() {
        let mut f = std::fs::File::open(path).map_err(|e| Fault(format!("{shown}: {e}")))?;
        let mut magic = [0u8; 6];
        let n = f
            .read(&mut magic)
            .map_err(|e| Fault(format!("{shown}: {e}")))?;
        if let Some(kind) = compressed(&magic[..n]) {
            return fault(format!(
                "{shown}: is a {kind}-compressed file; a package is a directory or a plain .tar \
                 (decompress it first, e.g. `tar -xf` or `gunzip`)"
            ));
        }
        let f = std::fs::File::open(path).map_err(|e| Fault(format!("{shown}: {e}")))?;
        read_tar_contents(f)?
    } else {
        return fault(format!(
            "{shown}: neither a directory nor a regular file (FIFO, device or socket)"
        ));
    };
    check_dirs(&files, &dirs)?;
    verify_contents(&files, key)
}

fn compressed(magic: &[u8]) -> Option<&'static str> {
    if magic.starts_with(&[0x1f, 0x8b]) {
        Some("gzip")
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some("zstd")
    } else if magic.starts_with(b"BZh") {
        Some("bzip2")
    } else {
        None
    }
}

/// Every directory of the package must hold a listed file: `stix/`, `misp/`, `evidence/`.
fn check_dirs(
    files: &BTreeMap<String, Content>,
    dirs: &std::collections::BTreeSet<String>,
) -> Result<(), Fault> {
    for d in dirs {
        let prefix = format!("{d}/");
        if !files.keys().any(|f| f.starts_with(&prefix)) {
            return fault(format!(
                "unexpected directory {d} (no file of the package is in it)"
            ));
        }
    }
    Ok(())
}

type Tree = (
    BTreeMap<String, Content>,
    std::collections::BTreeSet<String>,
);

fn read_dir(root: &Path) -> Result<Tree, Fault> {
    let mut out = BTreeMap::new();
    let mut dirs = std::collections::BTreeSet::new();
    let mut total: u64 = 0;
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
                dirs.insert(rel);
                stack.push(p);
            } else if ft.is_file() {
                let len = ent.metadata().map(|m| m.len()).unwrap_or(0);
                if len > MAX_FILE {
                    return fault(format!("{rel}: larger than {MAX_FILE} bytes"));
                }
                total = total.saturating_add(len);
                if total > MAX_TOTAL {
                    return fault(format!("package larger than {MAX_TOTAL} bytes"));
                }
                let f = std::fs::File::open(&p).map_err(|e| Fault(format!("{rel}: {e}")))?;
                // The type may have changed since the listing: check what was opened.
                let m = f.metadata().map_err(|e| Fault(format!("{rel}: {e}")))?;
                if !m.is_file() {
                    return fault(format!("{rel}: not a regular file"));
                }
                let whole = read_whole(&rel);
                let limit = if whole { MAX_READ_WHOLE } else { MAX_FILE };
                let c = stream(f, &rel, whole, limit)?;
                out.insert(rel, c);
            } else {
                return fault(format!(
                    "{rel}: not a regular file (FIFO, device or socket; not allowed in a package)"
                ));
            }
        }
    }
    Ok((out, dirs))
}

/// Reads a package `.tar` into memory (for callers that want the bytes): one top directory
/// holding regular files and directories only.
pub fn read_tar(r: impl Read) -> Result<BTreeMap<String, Vec<u8>>, Fault> {
    let (files, _) = read_tar_inner(r, true)?;
    Ok(files
        .into_iter()
        .map(|(k, c)| (k, c.bytes.unwrap_or_default()))
        .collect())
}

fn read_tar_contents(r: impl Read) -> Result<Tree, Fault> {
    read_tar_inner(r, false)
}

fn read_tar_inner(r: impl Read, keep_all: bool) -> Result<Tree, Fault> {
    let mut ar = tar::Archive::new(r);
    let mut out = BTreeMap::new();
    let mut dirs = std::collections::BTreeSet::new();
    let mut top: Option<String> = None;
    let mut total: u64 = 0;
    let entries = ar
        .entries()
        .map_err(|e| Fault(format!("not a tar archive: {e}")))?;
    for ent in entries {
        let ent = ent.map_err(|e| Fault(format!("damaged tar archive: {e}")))?;
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
            tar::EntryType::Directory => {
                if !rel.is_empty() {
                    dirs.insert(rel);
                }
                continue;
            }
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
        let whole = keep_all || read_whole(&rel);
        let limit = if whole && !keep_all {
            MAX_READ_WHOLE
        } else {
            MAX_FILE
        };
        let c = stream(ent, &rel, whole, limit)
            .map_err(|f| Fault(format!("damaged tar data: {}", f.0)))?;
        // Parent directories of a file are implied even without their own entries.
        dirs.extend(crate::package::parent_dirs(&rel).map(str::to_string));
        if out.insert(rel.clone(), c).is_some() {
            return fault(format!("{rel}: appears twice in the tar archive"));
        }
    }
    Ok((out, dirs))
}

/// Verifies a package given its files by relative path.
pub fn verify_files(files: &BTreeMap<String, Vec<u8>>, key: &PublicKey) -> Result<Verified, Fault> {
    let contents: BTreeMap<String, Content> = files
        .iter()
        .map(|(k, v)| (k.clone(), Content::of(v.clone())))
        .collect();
    verify_contents(&contents, key)
}

fn whole<'a>(files: &'a BTreeMap<String, Content>, name: &str) -> Option<&'a [u8]> {
    files.get(name).and_then(|c| c.bytes.as_deref())
}

/// Verifies a package given each file's size and digest (and the bytes of the manifest, the
/// envelope and the custody log).
pub fn verify_contents(
    files: &BTreeMap<String, Content>,
    key: &PublicKey,
) -> Result<Verified, Fault> {
    let Some(manifest_bytes) = whole(files, MANIFEST) else {
        return fault(format!("missing file {MANIFEST}"));
    };
    let Some(env_bytes) = whole(files, ENVELOPE) else {
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
    if files[MANIFEST].sha256 != signed_digest {
        return fault(format!(
            "{MANIFEST}: SHA-256 does not match the signed statement"
        ));
    }
    let m: Manifest = serde_json::from_slice(manifest_bytes)
        .map_err(|e| Fault(format!("{MANIFEST}: not a package manifest: {e}")))?;
    // The manifest's identifiers must be the ones signed: a package renamed or re-addressed
    // after signing is refused.
    for (field, value) in [("package_id", &m.package_id), ("recipient", &m.recipient)] {
        if st["predicate"][field].as_str() != Some(value.as_str()) {
            return fault(format!(
                "{MANIFEST}: {field} {value:?} differs from the signed statement's {}",
                st["predicate"][field]
            ));
        }
    }
    if m.format != FORMAT {
        return fault(format!(
            "{MANIFEST}: format {:?}, expected {FORMAT:?}",
            m.format
        ));
    }
    let canonical = serde_json::from_slice::<serde_json::Value>(manifest_bytes)
        .ok()
        .and_then(|v| jcs(&v).ok());
    if canonical.as_deref() != Some(manifest_bytes) {
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
        let c = &files[&f.path];
        if f.appendable {
            if f.path != CUSTODY {
                return fault(format!(
                    "{MANIFEST}: only {CUSTODY} may be appendable, not {}",
                    f.path
                ));
            }
            // What was signed is the prefix; anything after it is checked entry by entry.
            let bytes = c.bytes.as_deref().unwrap_or_default();
            let n = usize::try_from(f.size).unwrap_or(usize::MAX);
            if bytes.len() < n || (n > 0 && bytes[n - 1] != b'\n') {
                return fault(format!(
                    "{}: shorter than the signed log, or cut inside a line",
                    f.path
                ));
            }
            let prefix = &bytes[..n];
            custody_signed_lines = Some(prefix.iter().filter(|b| **b == b'\n').count());
            if sha256_hex(prefix) != f.sha256 {
                return fault(format!("{}: SHA-256 does not match the manifest", f.path));
            }
            continue;
        }
        if c.size != f.size {
            return fault(format!(
                "{}: size {} does not match the manifest ({})",
                f.path, c.size, f.size
            ));
        }
        if c.sha256 != f.sha256 {
            return fault(format!("{}: SHA-256 does not match the manifest", f.path));
        }
    }
    let Some(custody_bytes) = whole(files, CUSTODY) else {
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
            if let Some(c) = files.get(&s.name) {
                if c.sha256 != s.sha256 {
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
