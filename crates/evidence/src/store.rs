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
use crate::followup::{FollowUpKind, Watch};
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
CREATE TABLE IF NOT EXISTS packaged_alert (
    alert_id TEXT PRIMARY KEY
);
CREATE TABLE IF NOT EXISTS request (
    package_id TEXT PRIMARY KEY REFERENCES package(id),
    recipient TEXT NOT NULL,
    requested_ns INTEGER NOT NULL,
    deadline_ns INTEGER NOT NULL,
    closed INTEGER NOT NULL DEFAULT 0,
    watch TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS follow_up (
    id TEXT PRIMARY KEY REFERENCES package(id),
    request_id TEXT NOT NULL REFERENCES request(package_id),
    kind TEXT NOT NULL,
    at_ns INTEGER NOT NULL,
    status TEXT NOT NULL,
    active_sources INTEGER NOT NULL,
    total_sources INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS campaign_alert (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id TEXT NOT NULL UNIQUE,
    campaign_id TEXT NOT NULL,
    member TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS campaign_request (
    campaign_id TEXT NOT NULL,
    recipient TEXT NOT NULL,
    package_id TEXT NOT NULL,
    alert_id TEXT NOT NULL,
    PRIMARY KEY (campaign_id, recipient)
);
CREATE TABLE IF NOT EXISTS campaign_hold (
    alert_id TEXT PRIMARY KEY,
    until_ns INTEGER NOT NULL,
    held TEXT NOT NULL,
    flows BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS taxii_reply_cursor (
    channel TEXT PRIMARY KEY,
    added_after TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS reply (
    package_id TEXT NOT NULL REFERENCES package(id),
    channel_idx INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    received_ns INTEGER NOT NULL,
    file TEXT NOT NULL,
    verified INTEGER NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (package_id, sha256)
);
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

/// One follow-up in the ledger.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FollowUpRecord {
    pub id: String,
    pub kind: FollowUpKind,
    /// Event time it was decided at.
    pub at_ns: u64,
    pub status: String,
    pub active_sources: usize,
    pub total_sources: usize,
    /// Delivered over at least one channel.
    pub delivered: bool,
}

/// A recipient's reply to a package, as received.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Reply {
    pub package_id: String,
    pub channel_idx: u32,
    pub sha256: String,
    /// Wall-clock time it was found.
    pub received_ns: u64,
    pub file: String,
    /// Signed by the key the recipients directory gives for the State.
    pub verified: bool,
    pub text: String,
}

/// A request with everything the ledger knows of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub watch: Watch,
    /// Wall-clock time of the first successful delivery of the request.
    pub sent_ns: Option<u64>,
    pub follow_ups: Vec<FollowUpRecord>,
    /// Replies to the request, its follow-ups or its campaign updates.
    pub replies: Vec<Reply>,
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
        let known: Option<String> = self.value("SELECT id FROM package WHERE id = ?1", &pkg.id)?;
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

    /// The first column of the row `sql` selects for `key` (its `?1`), if there is one.
    fn value<T: rusqlite::types::FromSql>(
        &self,
        sql: &str,
        key: &str,
    ) -> rusqlite::Result<Option<T>> {
        self.conn.query_row(sql, [key], |r| r.get(0)).optional()
    }

    /// Whether every package of alert `alert_id` is stored (see [`Store::alert_packaged`]),
    /// or the alert is held, with its flows, for its campaign's request (packaged when the
    /// hold ends, also after a restart). An alert packaged only in part (the packager stopped
    /// between two of its packages) is not: packaging it again stores the missing ones and
    /// keeps the first build of the rest.
    pub fn has_alert(&self, alert_id: &str) -> Result<bool> {
        let found: Option<i64> = self.value(
            "SELECT 1 FROM packaged_alert WHERE alert_id = ?1
             UNION ALL SELECT 1 FROM campaign_hold WHERE alert_id = ?1",
            alert_id,
        )?;
        Ok(found.is_some())
    }

    /// Records that every package of alert `alert_id` is stored.
    pub fn alert_packaged(&mut self, alert_id: &str) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO packaged_alert (alert_id) VALUES (?1)",
            [alert_id],
        )?;
        Ok(())
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

    /// Checks the sent ledger against the stored packages' custody logs and the outbox: every
    /// ledger entry names a `sent` line present in its package's log, every `sent` line of a
    /// stored package is in the ledger, and every delivery the outbox records has its `sent`
    /// line. Returns the problems found (empty: consistent).
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
        // The outbox records every delivery too: a `sent` line removed from both a package's
        // log and the ledger's tail still leaves its outbox row.
        let mut st = self
            .conn
            .prepare("SELECT package_id, COUNT(*) FROM outbox WHERE state = 'sent' GROUP BY package_id ORDER BY package_id")?;
        let sent = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for (id, n) in sent {
            let prefix = format!("{id}/{}#", package::CUSTODY);
            let logged = seen.iter().filter(|(k, _)| k.starts_with(&prefix)).count();
            if usize::try_from(n).unwrap_or(usize::MAX) > logged {
                problems.push(format!(
                    "{id}: the outbox records {n} deliveries, its custody log {logged} sent entries"
                ));
            }
        }
        Ok(problems)
    }

    /// Every campaign member, in the order recorded.
    pub fn campaign_members(&self) -> Result<Vec<crate::campaign::Member>> {
        let mut st = self
            .conn
            .prepare("SELECT member FROM campaign_alert ORDER BY seq")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }

    /// Records an alert's campaign (an alert recorded before keeps its campaign).
    pub fn add_campaign_member(&mut self, m: &crate::campaign::Member) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO campaign_alert (alert_id, campaign_id, member) VALUES (?1, ?2, ?3)",
            params![m.alert_id, m.campaign_id, serde_json::to_string(m)?],
        )?;
        Ok(())
    }

    /// The campaign's request to `recipient`: its package and the alert it was built for.
    pub fn campaign_request(
        &self,
        campaign_id: &str,
        recipient: &str,
    ) -> Result<Option<(String, String)>> {
        Ok(self
            .conn
            .query_row(
                "SELECT package_id, alert_id FROM campaign_request WHERE campaign_id = ?1 AND recipient = ?2",
                [campaign_id, recipient],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// Records the campaign's request to `recipient` (the first one recorded stays).
    pub fn set_campaign_request(
        &mut self,
        campaign_id: &str,
        recipient: &str,
        package_id: &str,
        alert_id: &str,
    ) -> Result<()> {
        self.conn.execute(
            "INSERT OR IGNORE INTO campaign_request (campaign_id, recipient, package_id, alert_id) VALUES (?1, ?2, ?3, ?4)",
            params![campaign_id, recipient, package_id, alert_id],
        )?;
        Ok(())
    }

    /// Holds a closed alert (with its flows) for its campaign's request; an alert held
    /// before keeps its first hold.
    pub fn add_hold(&mut self, h: &crate::campaign::Held) -> Result<()> {
        let flows = postcard::to_stdvec(&h.flows)
            .map_err(|e| Error::Build(format!("cannot encode the held alert's flows: {e}")))?;
        self.conn.execute(
            "INSERT OR IGNORE INTO campaign_hold (alert_id, until_ns, held, flows) VALUES (?1, ?2, ?3, ?4)",
            params![h.alert.id, ns(h.until_ns), serde_json::to_string(h)?, flows],
        )?;
        Ok(())
    }

    /// Every alert held for a campaign request, in alert-id order.
    pub fn holds(&self) -> Result<Vec<crate::campaign::Held>> {
        let mut st = self
            .conn
            .prepare("SELECT held, flows FROM campaign_hold ORDER BY alert_id")?;
        let rows = st.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (held, flows) = row?;
            let mut h: crate::campaign::Held = serde_json::from_str(&held)?;
            h.flows = postcard::from_bytes(&flows).map_err(|e| {
                Error::Build(format!(
                    "the ledger's held flows of alert {} cannot be read: {e}",
                    h.alert.id
                ))
            })?;
            out.push(h);
        }
        Ok(out)
    }

    /// Ends the hold of alerts whose packages are all stored, in one transaction.
    pub fn release_holds(&mut self, alert_ids: &[String]) -> Result<()> {
        let tx = self.conn.transaction()?;
        for id in alert_ids {
            tx.execute("DELETE FROM campaign_hold WHERE alert_id = ?1", [id])?;
            tx.execute(
                "INSERT OR IGNORE INTO packaged_alert (alert_id) VALUES (?1)",
                [id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether alert `alert_id` is held for its campaign's request.
    pub fn is_held(&self, alert_id: &str) -> Result<bool> {
        let found: Option<i64> =
            self.value("SELECT 1 FROM campaign_hold WHERE alert_id = ?1", alert_id)?;
        Ok(found.is_some())
    }

    /// Registers a request to follow up; a request already registered is left as it is.
    pub fn add_request(&mut self, w: &Watch) -> Result<bool> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO request (package_id, recipient, requested_ns, deadline_ns, closed, watch)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                w.package_id,
                w.recipient,
                ns(w.requested_ns),
                ns(w.deadline_ns),
                w.closed,
                serde_json::to_string(w)?
            ],
        )?;
        Ok(n == 1)
    }

    /// Saves what is known of a watched request.
    pub fn save_watch(&mut self, w: &Watch) -> Result<()> {
        self.conn.execute(
            "UPDATE request SET watch = ?1, closed = ?2 WHERE package_id = ?3",
            params![serde_json::to_string(w)?, w.closed, w.package_id],
        )?;
        Ok(())
    }

    /// Requests still watched.
    pub fn open_watches(&self) -> Result<Vec<Watch>> {
        let mut st = self
            .conn
            .prepare("SELECT watch FROM request WHERE closed = 0 ORDER BY package_id")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }

    /// The recipient code of a stored package.
    pub fn recipient_of(&self, package_id: &str) -> Result<Option<String>> {
        Ok(self.value("SELECT recipient FROM package WHERE id = ?1", package_id)?)
    }

    /// Whether a package was delivered over at least one channel.
    pub fn delivered(&self, package_id: &str) -> Result<bool> {
        let n: i64 = self.conn.query_row(
            "SELECT COUNT(*) FROM outbox WHERE package_id = ?1 AND state = 'sent'",
            [package_id],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Stores a follow-up package and queues its deliveries (as [`Store::put`]), then records
    /// it (decided at the watch's event time, with `active_sources` of its hosts active) and
    /// the request's new state in one transaction. Repeated after a crash, the package
    /// first stored is kept and nothing is queued twice.
    pub fn put_follow_up(
        &mut self,
        pkg: &Package,
        recipient: &Recipient,
        w: &Watch,
        kind: FollowUpKind,
        active_sources: usize,
        now_ns: u64,
    ) -> Result<bool> {
        let at_ns = w.observed_ns;
        let new = self.put(pkg, recipient, now_ns)?;
        let tx = self.conn.transaction()?;
        tx.execute(
            "INSERT OR IGNORE INTO follow_up (id, request_id, kind, at_ns, status, active_sources, total_sources)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                pkg.id,
                w.package_id,
                kind.as_str(),
                ns(at_ns),
                w.status(),
                active_sources as i64,
                w.sources.len() as i64
            ],
        )?;
        tx.execute(
            "UPDATE request SET watch = ?1, closed = ?2 WHERE package_id = ?3",
            params![serde_json::to_string(w)?, w.closed, w.package_id],
        )?;
        tx.commit()?;
        Ok(new)
    }

    /// Records a reply (the same bytes once); whether it is new.
    pub fn record_reply(&mut self, reply: &Reply) -> Result<bool> {
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO reply (package_id, channel_idx, sha256, received_ns, file, verified, text)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                reply.package_id,
                i64::from(reply.channel_idx),
                reply.sha256,
                ns(reply.received_ns),
                reply.file,
                reply.verified,
                reply.text
            ],
        )?;
        Ok(n == 1)
    }

    /// Looks for replies on the channels that carry them: in a directory channel, a file
    /// `<package id>.reply.json` beside the delivered `.tar`, a DSSE envelope whose payload is
    /// `{"package_id": …, "text": …}`, checked against the State's `public_key` from the
    /// recipients directory (`key_of`); in a TAXII channel, a STIX `note` the recipient added
    /// to the collection whose `object_refs` name the report of a package delivered there
    /// (see [`Store::poll_taxii_replies`]). Returns the replies recorded now.
    pub fn poll_replies(
        &mut self,
        now_ns: u64,
        key_of: impl Fn(&str) -> Option<crate::keys::PublicKey>,
    ) -> Result<Vec<Reply>> {
        self.poll_replies_with(now_ns, key_of, None, Duration::from_secs(30))
            .map(|(r, _)| r)
    }

    /// [`Store::poll_replies`], also reading the TAXII collections packages were delivered to
    /// when `own_identity` is given (the STIX identity id of the notes this system writes, so
    /// its own request and follow-up notes are never taken for replies). A collection that
    /// cannot be read is skipped (the next poll tries again); its error is returned beside the
    /// replies.
    pub fn poll_replies_with(
        &mut self,
        now_ns: u64,
        key_of: impl Fn(&str) -> Option<crate::keys::PublicKey>,
        own_identity: Option<&str>,
        timeout: Duration,
    ) -> Result<(Vec<Reply>, Vec<String>)> {
        let mut st = self.conn.prepare(
            "SELECT o.package_id, o.channel_idx, o.channel, p.recipient FROM outbox o
             JOIN package p ON p.id = o.package_id
             WHERE o.state = 'sent' ORDER BY o.package_id, o.channel_idx",
        )?;
        let rows = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        drop(st);
        let mut found = Vec::new();
        // TAXII collections (by channel), with the reports of the packages delivered there.
        type Collections = std::collections::BTreeMap<String, (Channel, Vec<(String, u32)>)>;
        let mut collections: Collections = std::collections::BTreeMap::new();
        for (package_id, idx, channel, recipient) in rows {
            let parsed = serde_json::from_str::<Channel>(&channel);
            if let Ok(c @ Channel::Taxii { .. }) = &parsed {
                let key = match c {
                    Channel::Taxii {
                        url, collection, ..
                    } => format!("{}|{collection}", url.trim_end_matches('/')),
                    _ => String::new(),
                };
                collections
                    .entry(key)
                    .or_insert_with(|| (c.clone(), Vec::new()))
                    .1
                    .push((package_id, u32::try_from(idx).unwrap_or(u32::MAX)));
                continue;
            }
            let Ok(Channel::Directory { path }) = parsed else {
                continue;
            };
            let file = Path::new(&path).join(format!("{package_id}.reply.json"));
            let Ok(bytes) = std::fs::read(&file) else {
                continue;
            };
            let (verified, text) = read_reply(&bytes, &package_id, key_of(&recipient).as_ref());
            let reply = Reply {
                package_id,
                channel_idx: u32::try_from(idx).unwrap_or(u32::MAX),
                sha256: sha256_hex(&bytes),
                received_ns: now_ns,
                file: file.display().to_string(),
                verified,
                text,
            };
            if self.record_reply(&reply)? {
                found.push(reply);
            }
        }
        let mut errors = Vec::new();
        if let Some(own) = own_identity {
            for (key, (channel, packages)) in collections {
                match self.poll_taxii_replies(&key, &channel, &packages, own, now_ns, timeout) {
                    Ok(mut r) => found.append(&mut r),
                    Err(e) => errors.push(format!("{}: {e}", channel.describe())),
                }
            }
        }
        Ok((found, errors))
    }

    /// Reads the notes added to one TAXII collection since the last poll (`added_after`,
    /// kept per collection in the ledger) and records each note that names the report of a
    /// package delivered there as a reply to that package. A note carries no signature: it
    /// is recorded unverified, as what arrived, and trusted for nothing else. Notes this
    /// system wrote (created by `own_identity`) are not replies.
    pub fn poll_taxii_replies(
        &mut self,
        key: &str,
        channel: &Channel,
        packages: &[(String, u32)],
        own_identity: &str,
        now_ns: u64,
        timeout: Duration,
    ) -> std::result::Result<Vec<Reply>, String> {
        let after: Option<String> = self
            .value(
                "SELECT added_after FROM taxii_reply_cursor WHERE channel = ?1",
                key,
            )
            .map_err(|e| e.to_string())?;
        let (notes, last) =
            crate::deliver::taxii_notes(channel, after.as_deref(), timeout).map_err(|e| e.0)?;
        let reports: std::collections::BTreeMap<String, &(String, u32)> = packages
            .iter()
            .map(|p| {
                (
                    format!("report--{}", crate::stix::sdo_uuid(&p.0, "report")),
                    p,
                )
            })
            .collect();
        let mut found = Vec::new();
        for note in &notes {
            if note["created_by_ref"] == own_identity {
                continue;
            }
            let bytes = crate::canon::jcs(note).map_err(|e| e.to_string())?;
            let mut text = String::new();
            if let Some(a) = note["abstract"].as_str() {
                text.push_str(a);
                text.push_str("\n\n");
            }
            text.push_str(note["content"].as_str().unwrap_or_default());
            let text: String = text.chars().take(4000).collect();
            let mut named = std::collections::BTreeSet::new();
            for r in note["object_refs"].as_array().into_iter().flatten() {
                let Some((package_id, idx)) = r.as_str().and_then(|r| reports.get(r)).copied()
                else {
                    continue;
                };
                if !named.insert(package_id.clone()) {
                    continue;
                }
                let reply = Reply {
                    package_id: package_id.clone(),
                    channel_idx: *idx,
                    sha256: sha256_hex(&bytes),
                    received_ns: now_ns,
                    file: format!(
                        "TAXII note {} ({})",
                        note["id"].as_str().unwrap_or("?"),
                        channel.describe()
                    ),
                    verified: false,
                    text: text.clone(),
                };
                if self.record_reply(&reply).map_err(|e| e.to_string())? {
                    found.push(reply);
                }
            }
        }
        if let Some(last) = last {
            self.conn
                .execute(
                    "INSERT INTO taxii_reply_cursor (channel, added_after) VALUES (?1, ?2)
                     ON CONFLICT(channel) DO UPDATE SET added_after = excluded.added_after",
                    params![key, last],
                )
                .map_err(|e| e.to_string())?;
        }
        Ok(found)
    }

    /// Every request with its follow-ups and replies, in package-id order.
    pub fn requests(&self) -> Result<Vec<RequestRecord>> {
        let mut st = self
            .conn
            .prepare("SELECT watch FROM request ORDER BY requested_ns, package_id")?;
        let watches = st
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        let mut out = Vec::new();
        for w in watches {
            let watch: Watch = serde_json::from_str(&w)?;
            let sent_ns: Option<i64> = self.conn.query_row(
                "SELECT MIN(sent_ns) FROM outbox WHERE package_id = ?1 AND state = 'sent'",
                [&watch.package_id],
                |r| r.get(0),
            )?;
            let mut fu = self.conn.prepare(
                "SELECT f.id, f.kind, f.at_ns, f.status, f.active_sources, f.total_sources,
                        EXISTS (SELECT 1 FROM outbox o WHERE o.package_id = f.id AND o.state = 'sent')
                 FROM follow_up f WHERE f.request_id = ?1 ORDER BY f.at_ns, f.id",
            )?;
            let follow_ups = fu
                .query_map([&watch.package_id], |r| {
                    let kind: String = r.get(1)?;
                    Ok(FollowUpRecord {
                        id: r.get(0)?,
                        kind: if kind == "stopped" {
                            FollowUpKind::Stopped
                        } else {
                            FollowUpKind::Deadline
                        },
                        at_ns: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
                        status: r.get(3)?,
                        active_sources: usize::try_from(r.get::<_, i64>(4)?).unwrap_or(0),
                        total_sources: usize::try_from(r.get::<_, i64>(5)?).unwrap_or(0),
                        delivered: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            let mut rp = self.conn.prepare(
                "SELECT package_id, channel_idx, sha256, received_ns, file, verified, text FROM reply
                 WHERE package_id = ?1 OR package_id IN (SELECT id FROM follow_up WHERE request_id = ?1)
                    OR substr(package_id, 1, length(?1) + 4) = ?1 || '-UP-'
                 ORDER BY received_ns, package_id",
            )?;
            let replies = rp
                .query_map([&watch.package_id], |r| {
                    Ok(Reply {
                        package_id: r.get(0)?,
                        channel_idx: u32::try_from(r.get::<_, i64>(1)?).unwrap_or(u32::MAX),
                        sha256: r.get(2)?,
                        received_ns: u64::try_from(r.get::<_, i64>(3)?).unwrap_or(0),
                        file: r.get(4)?,
                        verified: r.get(5)?,
                        text: r.get(6)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            out.push(RequestRecord {
                watch,
                sent_ns: sent_ns.and_then(|t| u64::try_from(t).ok()),
                follow_ups,
                replies,
            });
        }
        Ok(out)
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

/// A reply file's text and whether its signature verifies with `key`. A file that is not a
/// DSSE envelope, names another package, or carries no valid signature is kept unverified,
/// with its bytes as text (the ledger records what arrived).
fn read_reply(
    bytes: &[u8],
    package_id: &str,
    key: Option<&crate::keys::PublicKey>,
) -> (bool, String) {
    let raw = || String::from_utf8_lossy(bytes).chars().take(4000).collect();
    let Ok(env) = serde_json::from_slice::<crate::dsse::Envelope>(bytes) else {
        return (false, raw());
    };
    let payload = match key {
        Some(k) => crate::dsse::verify(&env, k).ok(),
        None => None,
    };
    let verified = payload.is_some();
    let payload = payload.or_else(|| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(&env.payload)
            .ok()
    });
    let Some(v) = payload.and_then(|p| serde_json::from_slice::<serde_json::Value>(&p).ok()) else {
        return (false, raw());
    };
    let text = v["text"].as_str().unwrap_or_default().to_string();
    (verified && v["package_id"] == package_id, text)
}
