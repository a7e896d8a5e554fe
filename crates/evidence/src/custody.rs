//! The custody log (`custody.jsonl`): one canonical JSON object per line, each naming the
//! SHA-256 of the line before it, so removing, reordering or editing an entry breaks the chain.

use crate::canon::{jcs, sha256_hex};
use crate::keys::{PublicKey, SecretKey};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer};
use serde::{Deserialize, Serialize};

/// The `prev` of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What happened to the evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Captured,
    Derived,
    Packaged,
    Sent,
}

/// A file (or a record) the entry is about, by digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub name: String,
    pub sha256: String,
}

/// One custody event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    pub seq: u64,
    /// SHA-256 of the previous line's bytes (without its newline); [`GENESIS`] for the first.
    pub prev: String,
    pub action: Action,
    /// Who did it: a sensor id, the detector, the operator.
    pub actor: String,
    /// When, RFC 3339 UTC.
    pub at: String,
    pub tool: String,
    pub tool_version: String,
    pub subjects: Vec<Subject>,
    /// What it was, in words.
    pub note: String,
    /// Ed25519 signature (base64) over the canonical entry without this field. Entries
    /// appended after packaging (`sent`) carry one, since the manifest's signature cannot
    /// cover them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sig: Option<String>,
}

/// Builds a chain: each pushed entry is numbered and linked to the previous line.
#[derive(Debug, Default)]
pub struct Log {
    lines: Vec<Vec<u8>>,
}

/// The fields a caller supplies for an entry.
#[derive(Clone, Debug)]
pub struct Event {
    pub action: Action,
    pub actor: String,
    pub at: String,
    pub tool: String,
    pub tool_version: String,
    pub subjects: Vec<Subject>,
    pub note: String,
}

impl Log {
    /// Continues a log whose last line hashes to `prev` with `next_seq` lines before.
    pub fn push(&mut self, e: Event) -> Result<(), serde_json::Error> {
        let prev = self
            .lines
            .last()
            .map(|l| sha256_hex(l))
            .unwrap_or_else(|| GENESIS.to_string());
        let entry = Entry {
            seq: self.lines.len() as u64,
            prev,
            action: e.action,
            actor: e.actor,
            at: e.at,
            tool: e.tool,
            tool_version: e.tool_version,
            subjects: e.subjects,
            note: e.note,
            sig: None,
        };
        self.lines.push(jcs(&entry)?);
        Ok(())
    }

    /// The file's bytes: one line per entry, each ending in a newline.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for l in &self.lines {
            out.extend_from_slice(l);
            out.push(b'\n');
        }
        out
    }
}

/// Checks a custody log; returns its entries, or the first fault (1-based line number).
pub fn check(bytes: &[u8]) -> Result<Vec<Entry>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    if text.is_empty() {
        return Err("empty".into());
    }
    if !text.ends_with('\n') {
        return Err("last line is not terminated".into());
    }
    let mut prev = GENESIS.to_string();
    let mut entries = Vec::new();
    for (i, line) in text[..text.len() - 1].split('\n').enumerate() {
        let n = i + 1;
        let e: Entry = serde_json::from_str(line).map_err(|e| format!("line {n}: {e}"))?;
        // The line must be exactly the canonical form: its hash is what the next line names.
        if jcs(&e).map_err(|e| format!("line {n}: {e}"))? != line.as_bytes() {
            return Err(format!("line {n}: not in canonical form"));
        }
        if e.seq != i as u64 {
            return Err(format!("line {n}: seq is {}, expected {i}", e.seq));
        }
        if e.prev != prev {
            return Err(format!(
                "line {n}: chain broken (prev does not match the line before)"
            ));
        }
        prev = sha256_hex(line.as_bytes());
        entries.push(e);
    }
    Ok(entries)
}

/// Appends a signed entry (a delivery: `sent`) to an existing log; returns the new bytes.
pub fn append_signed(bytes: &[u8], e: Event, key: &SecretKey) -> Result<Vec<u8>, String> {
    let entries = check(bytes)?;
    let last = bytes[..bytes.len() - 1]
        .rsplit(|b| *b == b'\n')
        .next()
        .unwrap_or_default();
    let mut entry = Entry {
        seq: entries.len() as u64,
        prev: sha256_hex(last),
        action: e.action,
        actor: e.actor,
        at: e.at,
        tool: e.tool,
        tool_version: e.tool_version,
        subjects: e.subjects,
        note: e.note,
        sig: None,
    };
    let unsigned = jcs(&entry).map_err(|e| e.to_string())?;
    entry.sig = Some(B64.encode(key.key.sign(&unsigned).to_bytes()));
    let mut out = bytes.to_vec();
    out.extend_from_slice(&jcs(&entry).map_err(|e| e.to_string())?);
    out.push(b'\n');
    Ok(out)
}

/// The bytes of a one-entry log whose (first) entry `entry` is signed with `key`.
pub fn sign_first(entry: &Entry, key: &SecretKey) -> Result<Vec<u8>, String> {
    let unsigned = jcs(entry).map_err(|e| e.to_string())?;
    let mut e = entry.clone();
    e.sig = Some(B64.encode(key.key.sign(&unsigned).to_bytes()));
    let mut out = jcs(&e).map_err(|e| e.to_string())?;
    out.push(b'\n');
    Ok(out)
}

/// Whether `entry` carries a signature by `key` over its other fields.
pub fn signature_valid(entry: &Entry, key: &PublicKey) -> bool {
    let Some(sig) = entry.sig.as_deref() else {
        return false;
    };
    let Ok(sig) = B64.decode(sig) else {
        return false;
    };
    let Ok(sig) = <[u8; 64]>::try_from(sig.as_slice()) else {
        return false;
    };
    let mut unsigned = entry.clone();
    unsigned.sig = None;
    jcs(&unsigned).is_ok_and(|m| {
        key.key
            .verify_strict(&m, &Signature::from_bytes(&sig))
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(action: Action, actor: &str) -> Event {
        Event {
            action,
            actor: actor.into(),
            at: "2026-01-01T00:00:00Z".into(),
            tool: "t".into(),
            tool_version: "1".into(),
            subjects: vec![],
            note: String::new(),
        }
    }

    #[test]
    fn chain_verifies_and_edits_break_it() {
        let mut log = Log::default();
        log.push(ev(Action::Captured, "sensor-1")).unwrap();
        log.push(ev(Action::Derived, "detector")).unwrap();
        log.push(ev(Action::Packaged, "operator")).unwrap();
        let bytes = log.to_bytes();
        assert_eq!(check(&bytes).unwrap().len(), 3);
        let text = String::from_utf8(bytes).unwrap();
        let edited = text.replace("detector", "someone!");
        assert!(check(edited.as_bytes())
            .unwrap_err()
            .contains("line 3: chain broken"));
        let lines: Vec<&str> = text.lines().collect();
        let dropped = format!("{}\n{}\n", lines[0], lines[2]);
        assert!(check(dropped.as_bytes())
            .unwrap_err()
            .contains("line 2: seq"));
    }
}
