//! The evidence store: package directories and `.tar`s under `ROOT/packages/`, and an SQLite
//! ledger (`ROOT/ledger.sqlite3`, bundled SQLite) of the packages and the outbox of their
//! deliveries, one row per package and channel.
//!
//! A package is written to disk before its ledger rows exist, and an outbox row is marked sent
//! only after its delivery succeeded; a crash anywhere therefore leaves either nothing to do or
//! a delivery to repeat, and every channel is idempotent (see [`crate::deliver`]), so each
//! package reaches each channel once in effect.

use crate::canon::sha256_hex;
use crate::custody;
use crate::deliver::{deliver, DeliveryError};
use crate::error::{Error, Result};
use crate::keys::SecretKey;
use crate::package::{self, Package, MANIFEST};
use crate::recipients::{Channel, Recipient};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// First retry delay; doubled per failed attempt up to [`MAX_BACKOFF_NS`].
pub const FIRST_BACKOFF_NS: u64 = 30_000_000_000;
/// Longest retry delay: one hour.
pub const MAX_BACKOFF_NS: u64 = 3_600_000_000_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS package (
    id TEXT PRIMARY KEY,
    alert_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    stored_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    package_id TEXT NOT NULL REFERENCES package(id),
    channel_idx INTEGER NOT NULL,
    channel TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('pending', 'sent')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ns INTEGER NOT NULL,
    last_error TEXT,
    sent_ns INTEGER,
    receipt TEXT,
    PRIMARY KEY (package_id, channel_idx)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_attempt_ns);
";

/// One delivery to make.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxItem {
    pub package_id: String,
    /// The recipient's ISO code (whose directory entry the channel came from).
    pub recipient: String,
    pub channel_idx: u32,
    pub channel: Channel,
    pub attempts: u32,
}

/// The state of one delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryState {
    pub channel_idx: u32,
    pub sent: bool,
    pub attempts: u32,
    pub next_attempt_ns: u64,
    pub last_error: Option<String>,
    pub receipt: Option<String>,
}

/// What one pass of the delivery worker did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub sent: usize,
    pub failed: Vec<(String, DeliveryError)>,
}

/// The store.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    conn: Connection,
}

fn ns(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating if needed) the store at `root`.
    pub fn open(root: &Path) -> Result<Store> {
        let packages = root.join("packages");
        std::fs::create_dir_all(&packages).map_err(|e| Error::io(&packages, e))?;
        let conn = Connection::open(root.join("ledger.sqlite3"))?;
        // WAL with full sync: a committed outbox change survives a crash or power loss.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.execute_batch(SCHEMA)?;
        Ok(Store {
            root: root.to_path_buf(),
            conn,
        })
    }

    /// The package directory of `id`.
    pub fn package_dir(&self, id: &str) -> PathBuf {
        self.root.join("packages").join(id)
    }

    /// The package archive of `id`.
    pub fn package_tar(&self, id: &str) -> PathBuf {
        self.root.join("packages").join(format!("{id}.tar"))
    }

    /// Stores a package and queues one delivery per channel of `recipient`. A package already
    /// stored is left as it is (its first build wins) and `false` is returned.
    pub fn put(&mut self, pkg: &Package, recipient: &Recipient, now_ns: u64) -> Result<bool> {
        let known: Option<String> = self
            .conn
            .query_row("SELECT id FROM package WHERE id = ?1", [&pkg.id], |r| {
                r.get(0)
            })
            .optional()?;
        if known.is_some() {
            return Ok(false);
        }
        let packages = self.root.join("packages");
        let dir = self.package_dir(&pkg.id);
        if !dir.exists() {
            // Built under a hidden name and renamed: a directory with the package's name is
            // always complete.
            let tmp_parent = packages.join(format!(".building-{}", pkg.id));
            if tmp_parent.exists() {
                std::fs::remove_dir_all(&tmp_parent).map_err(|e| Error::io(&tmp_parent, e))?;
            }
            std::fs::create_dir(&tmp_parent).map_err(|e| Error::io(&tmp_parent, e))?;
            let built = pkg.write_dir(&tmp_parent)?;
            pkg.write_tar(&tmp_parent)?;
            std::fs::rename(
                tmp_parent.join(format!("{}.tar", pkg.id)),
                self.package_tar(&pkg.id),
            )
            .map_err(|e| Error::io(&dir, e))?;
            std::fs::rename(&built, &dir).map_err(|e| Error::io(&dir, e))?;
            std::fs::remove_dir(&tmp_parent).map_err(|e| Error::io(&tmp_parent, e))?;
        }
        let manifest = std::fs::read(dir.join(MANIFEST)).map_err(|e| Error::io(&dir, e))?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT INTO package (id, alert_id, recipient, manifest_sha256, stored_ns) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![pkg.id, alert_id(&manifest), recipient.code, sha256_hex(&manifest), ns(now_ns)],
        )?;
        for (i, c) in recipient.channels.iter().enumerate() {
            tx.execute(
                "INSERT INTO outbox (package_id, channel_idx, channel, state, next_attempt_ns) VALUES (?1, ?2, ?3, 'pending', ?4)",
                params![pkg.id, i as i64, serde_json::to_string(c)?, ns(now_ns)],
            )?;
        }
        tx.commit()?;
        Ok(true)
    }

    /// Deliveries due at `now_ns`, oldest first.
    pub fn due(&self, now_ns: u64, limit: usize) -> Result<Vec<OutboxItem>> {
        let mut st = self.conn.prepare(
            "SELECT o.package_id, o.channel_idx, o.channel, o.attempts, p.recipient
             FROM outbox o JOIN package p ON p.id = o.package_id
             WHERE o.state = 'pending' AND o.next_attempt_ns <= ?1
             ORDER BY o.next_attempt_ns, o.package_id, o.channel_idx LIMIT ?2",
        )?;
        let rows = st.query_map(params![ns(now_ns), limit as i64], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (package_id, idx, channel, attempts, recipient) = row?;
            out.push(OutboxItem {
                package_id,
                recipient,
                channel_idx: u32::try_from(idx).unwrap_or(u32::MAX),
                channel: serde_json::from_str(&channel)?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            });
        }
        Ok(out)
    }

    /// Deliveries not yet made.
    pub fn pending(&self) -> Result<usize> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE state = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// The deliveries of one package.
    pub fn deliveries(&self, package_id: &str) -> Result<Vec<DeliveryState>> {
        let mut st = self.conn.prepare(
            "SELECT channel_idx, state, attempts, next_attempt_ns, last_error, receipt FROM outbox
             WHERE package_id = ?1 ORDER BY channel_idx",
        )?;
        let rows = st.query_map([package_id], |r| {
            Ok(DeliveryState {
                channel_idx: u32::try_from(r.get::<_, i64>(0)?).unwrap_or(u32::MAX),
                sent: r.get::<_, String>(1)? == "sent",
                attempts: u32::try_from(r.get::<_, i64>(2)?).unwrap_or(u32::MAX),
                next_attempt_ns: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                last_error: r.get(4)?,
                receipt: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }

    /// Records a successful delivery: first in the package's custody log (signed `sent`
    /// entry), then in the ledger.
    pub fn mark_sent(
        &mut self,
        item: &OutboxItem,
        now_ns: u64,
        receipt: &str,
        key: &SecretKey,
        actor: &str,
    ) -> Result<()> {
        let dir = self.package_dir(&item.package_id);
        package::record_sent(
            &dir,
            key,
            actor,
            &item.channel.describe_for_custody(),
            now_ns,
        )?;
        self.witness_sent(&item.package_id, key, actor, now_ns)?;
        self.conn.execute(
            "UPDATE outbox SET state = 'sent', sent_ns = ?1, receipt = ?2, attempts = attempts + 1, last_error = NULL
             WHERE package_id = ?3 AND channel_idx = ?4",
            params![ns(now_ns), receipt, item.package_id, i64::from(item.channel_idx)],
        )?;
        Ok(())
    }

    /// Whether any package of alert `alert_id` is stored.
    pub fn has_alert(&self, alert_id: &str) -> Result<bool> {
        let found: Option<i64> = self
            .conn
            .query_row(
                "SELECT 1 FROM package WHERE alert_id = ?1 LIMIT 1",
                [alert_id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Ids of every stored package.
    pub fn package_ids(&self) -> Result<Vec<String>> {
        let mut st = self.conn.prepare("SELECT id FROM package ORDER BY id")?;
        let ids = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(ids)
    }

    /// The store-wide sent ledger: one chained, signed entry per delivery naming the package's
    /// `sent` line by digest. A `sent` line removed from a package's log (the log may only
    /// grow after signing, so its end cannot be sealed by the manifest) no longer matches the
    /// ledger; removing the ledger's own tail orphans every later package's `sent` line.
    pub fn sent_ledger_path(&self) -> PathBuf {
        self.root.join("sent-ledger.jsonl")
    }

    fn witness_sent(
        &self,
        package_id: &str,
        key: &SecretKey,
        actor: &str,
        now_ns: u64,
    ) -> Result<()> {
        let log_path = self.package_dir(package_id).join(package::CUSTODY);
        let log = std::fs::read(&log_path).map_err(|e| Error::io(&log_path, e))?;
        let entries = custody::check(&log)
            .map_err(|e| Error::Build(format!("{}: {e}", log_path.display())))?;
        let last = log[..log.len() - 1]
            .rsplit(|b| *b == b'\n')
            .next()
            .unwrap_or_default();
        let path = self.sent_ledger_path();
        let ledger = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let event = custody::Event {
            action: custody::Action::Sent,
            actor: actor.to_string(),
            at: crate::canon::rfc3339_ms(now_ns),
            tool: crate::TOOL_NAME.into(),
            tool_version: crate::TOOL_VERSION.into(),
            subjects: vec![custody::Subject {
                name: format!("{package_id}/{}#{}", package::CUSTODY, entries.len() - 1),
                sha256: sha256_hex(last),
            }],
            note: format!("sent entry of package {package_id}"),
        };
        let out = if ledger.is_empty() {
            let mut l = custody::Log::default();
            l.push(event)?;
            // The first entry is signed too, like every later one.
            let bytes = l.to_bytes();
            let e = custody::check(&bytes).map_err(Error::Build)?.remove(0);
            let mut signed = e.clone();
            signed.sig = None;
            custody::sign_first(&signed, key).map_err(Error::Build)?
        } else {
            custody::append_signed(&ledger, event, key).map_err(Error::Build)?
        };
        let tmp = self.root.join(".sent-ledger.tmp");
        std::fs::write(&tmp, &out).map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        Ok(())
    }

    /// Checks the sent ledger against the stored packages' custody logs: every ledger entry
    /// names a `sent` line present in its package's log, and every `sent` line of a stored
    /// package is in the ledger. Returns the problems found (empty: consistent).
    pub fn audit_sent(&self, key: &crate::keys::PublicKey) -> Result<Vec<String>> {
        let mut problems = Vec::new();
        let path = self.sent_ledger_path();
        let ledger = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut witnessed = std::collections::BTreeSet::new();
        if !ledger.is_empty() {
            match custody::check(&ledger) {
                Err(e) => problems.push(format!("sent ledger: {e}")),
                Ok(entries) => {
                    for (i, e) in entries.iter().enumerate() {
                        if !custody::signature_valid(e, key) {
                            problems.push(format!(
                                "sent ledger: line {}: not signed by the key",
                                i + 1
                            ));
                        }
                        for s in &e.subjects {
                            witnessed.insert((s.name.clone(), s.sha256.clone()));
                        }
                    }
                }
            }
        }
        let mut seen = std::collections::BTreeSet::new();
        for id in self.package_ids()? {
            let log_path = self.package_dir(&id).join(package::CUSTODY);
            let Ok(log) = std::fs::read(&log_path) else {
                continue;
            };
            let text = String::from_utf8_lossy(&log).into_owned();
            for (i, line) in text.lines().enumerate() {
                let Ok(e) = serde_json::from_str::<custody::Entry>(line) else {
                    continue;
                };
                if e.action != custody::Action::Sent {
                    continue;
                }
                let k = (
                    format!("{id}/{}#{i}", package::CUSTODY),
                    sha256_hex(line.as_bytes()),
                );
                if !witnessed.contains(&k) {
                    problems.push(format!(
                        "{id}: sent entry {} is not in the sent ledger",
                        i + 1
                    ));
                }
                seen.insert(k);
            }
        }
        for (name, _) in witnessed.iter().filter(|k| !seen.contains(*k)) {
            problems.push(format!(
                "sent ledger names {name}, which the package's custody log no longer holds"
            ));
        }
        Ok(problems)
    }

    /// Records a failed attempt and schedules the next with exponential backoff; returns when.
    pub fn mark_failed(&mut self, item: &OutboxItem, now_ns: u64, error: &str) -> Result<u64> {
        let shift = item.attempts.min(20);
        let delay = FIRST_BACKOFF_NS
            .saturating_mul(1u64 << shift)
            .min(MAX_BACKOFF_NS);
        let next = now_ns.saturating_add(delay);
        self.conn.execute(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_ns = ?1, last_error = ?2
             WHERE package_id = ?3 AND channel_idx = ?4",
            params![
                ns(next),
                error,
                item.package_id,
                i64::from(item.channel_idx)
            ],
        )?;
        Ok(next)
    }

    /// One pass of the delivery worker: every due delivery is attempted once, over the
    /// channel as it was when the package was queued.
    pub fn deliver_due(
        &mut self,
        now_ns: u64,
        key: &SecretKey,
        actor: &str,
        timeout: Duration,
    ) -> Result<PassReport> {
        self.deliver_due_with(now_ns, key, actor, timeout, |_| None)
    }

    /// As [`Store::deliver_due`], but `current` may give the channel's present definition
    /// (the recipients directory edited since: a new URL, a CA file added), which is then
    /// used instead of the queued one.
    pub fn deliver_due_with(
        &mut self,
        now_ns: u64,
        key: &SecretKey,
        actor: &str,
        timeout: Duration,
        current: impl Fn(&OutboxItem) -> Option<Channel>,
    ) -> Result<PassReport> {
        let mut report = PassReport::default();
        for mut item in self.due(now_ns, 1000)? {
            if let Some(c) = current(&item) {
                item.channel = c;
            }
            let dir = self.package_dir(&item.package_id);
            let tar = self.package_tar(&item.package_id);
            match deliver(&item.channel, &item.package_id, &dir, &tar, timeout) {
                Ok(receipt) => {
                    self.mark_sent(&item, now_ns, &receipt, key, actor)?;
                    report.sent += 1;
                }
                Err(e) => {
                    self.mark_failed(&item, now_ns, &e.0)?;
                    report.failed.push((item.package_id.clone(), e));
                }
            }
        }
        Ok(report)
    }
}

fn alert_id(manifest: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(manifest)
        .ok()
        .and_then(|v| v["alert_id"].as_str().map(str::to_string))
        .unwrap_or_default()
}
