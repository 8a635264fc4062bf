//! The durable mail outbox in SQLite (`state.db`, shared with the journal).
//!
//! A mail is written here before any attempt to send it, and leaves the `pending` state only
//! when a server answered 250 to its DATA (or when it was folded into a digest that was). So a
//! crash, a restart or a dead relay loses nothing: the next daemon picks up where this one
//! stopped. Each mail carries a dedup key (the same event queued twice is one mail) and a
//! stable Message-ID (a mail re-sent after the server took it but the 250 got lost is
//! recognisable as the same mail). Time is an argument everywhere, so tests set it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};

use crate::Error;

/// How long a write waits for another process holding the database (the journal writer).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The flood-control window: "N mails a minute".
pub const FLOOD_WINDOW_MS: u64 = 60_000;

/// Sent mails are kept this long so a late duplicate of the same event is still recognised.
const KEEP_SENT_MS: u64 = 7 * 24 * 3_600_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    dedup_key TEXT NOT NULL UNIQUE,
    message_id TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL,
    last_error TEXT,
    sent_ms INTEGER,
    response TEXT,
    digest INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_state ON outbox(state, next_attempt_ms);
";

/// One mail in the outbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedMail {
    pub id: i64,
    pub dedup_key: String,
    /// Without angle brackets; stable across retries.
    pub message_id: String,
    /// When the event happened (the mail's Date header).
    pub created_ms: u64,
    pub subject: String,
    pub body: String,
    pub attempts: u32,
    pub next_attempt_ms: u64,
    /// The last failure, as shown by `pbxha mail queue` and `pbxha status`.
    pub last_error: Option<String>,
}

/// A mail to queue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewMail {
    /// Same key, same mail: e.g. `failover:42` or `check:uplink:down:1712345678000`.
    pub dedup_key: String,
    pub subject: String,
    pub body: String,
}

/// What to do with the mails that are due now under the flood limit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloodPlan {
    /// Send these one by one.
    pub send: Vec<i64>,
    /// Fold these into one digest mail.
    pub digest: Vec<i64>,
}

/// Pure flood control: with `sent_in_window` mails already sent this minute and `limit` a
/// minute, the due mails (oldest first) go out one by one while there is room; when they
/// would not fit, all but the room for one go out individually and the rest as one digest.
/// A full window sends nothing: the mails wait, still queued.
pub fn plan_flood(due: &[i64], sent_in_window: usize, limit: usize) -> FloodPlan {
    let room = limit.saturating_sub(sent_in_window);
    if due.len() <= room {
        return FloodPlan { send: due.to_vec(), digest: Vec::new() };
    }
    if room == 0 {
        return FloodPlan { send: Vec::new(), digest: Vec::new() };
    }
    let (send, digest) = due.split_at(room - 1);
    FloodPlan { send: send.to_vec(), digest: digest.to_vec() }
}

/// Exponential backoff: `min` after the first failure, doubling, capped at `max`.
pub fn backoff(attempts: u32, min: Duration, max: Duration) -> Duration {
    let factor = 1u32.checked_shl(attempts.saturating_sub(1).min(20)).unwrap_or(u32::MAX);
    min.saturating_mul(factor).min(max)
}

/// Makes the state database at `path` readable by its owner only, creating it empty (mode
/// 0600) if it is missing: it holds alert bodies and the journal. SQLite gives the `-wal`
/// and `-shm` files it creates the main file's mode, so it must be right before the first
/// open; those left by an older, looser database are tightened too. Returns the files
/// whose mode was tightened, with their old mode, for a log line.
pub fn make_private(path: &Path) -> std::io::Result<Vec<(PathBuf, u32)>> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    std::fs::OpenOptions::new().write(true).create(true).truncate(false).mode(0o600).open(path)?;
    let mut tightened = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let file = PathBuf::from(format!("{}{suffix}", path.display()));
        let Ok(meta) = std::fs::metadata(&file) else { continue };
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode & 0o7700))?;
            tightened.push((file, mode));
        }
    }
    Ok(tightened)
}

/// The outbox on one SQLite connection.
pub struct Outbox {
    conn: Connection,
    path: PathBuf,
    /// Used in Message-IDs so they are unique across nodes.
    host: String,
}

impl Outbox {
    /// Opens (creating if needed) the outbox in the database at `path`.
    pub fn open(path: &Path, host: &str) -> Result<Self, Error> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::db(path, format!("cannot create {}: {e}", dir.display())))?;
        }
        for (file, mode) in
            make_private(path).map_err(|e| Error::db(path, format!("cannot make it private (0600): {e}")))?
        {
            tracing::warn!(file = %file.display(), "had mode {mode:04o}, open to other users; now 0600");
        }
        let conn = Connection::open(path).map_err(|e| Error::db(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| Error::db(path, e))?;
        conn.execute_batch(SCHEMA).map_err(|e| Error::db(path, e))?;
        Ok(Outbox { conn, path: path.to_path_buf(), host: host.to_string() })
    }

    /// Opens an existing outbox read-only, for `pbxha mail queue` beside a running daemon.
    pub fn open_read_only(path: &Path) -> Result<Self, Error> {
        let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .map_err(|e| Error::db(path, e))?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(|e| Error::db(path, e))?;
        Ok(Outbox { conn, path: path.to_path_buf(), host: String::new() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw connection, so a test can make the disk "full" (`PRAGMA max_page_count`).
    #[doc(hidden)]
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Queues a mail; `Ok(false)` when a mail with the same dedup key exists already.
    pub fn enqueue(&self, mail: &NewMail, now_ms: u64) -> Result<bool, Error> {
        insert(&self.conn, &self.host, &self.path, mail, now_ms)
    }

    /// Queues mails, each with its own time, in one transaction: all or none. Returns how
    /// many were new.
    pub fn enqueue_all<'a>(&mut self, mails: impl IntoIterator<Item = &'a (NewMail, u64)>) -> Result<usize, Error> {
        let path = self.path.clone();
        let tx = self.conn.transaction().map_err(|e| Error::db(&path, e))?;
        let mut new = 0;
        for (mail, at) in mails {
            new += usize::from(insert(&tx, &self.host, &path, mail, *at)?);
        }
        tx.commit().map_err(|e| Error::db(&path, e))?;
        Ok(new)
    }

    /// Every pending mail, oldest first.
    pub fn pending(&self) -> Result<Vec<QueuedMail>, Error> {
        self.select("state = 'pending' ORDER BY id", params![])
    }

    /// Pending mails whose next attempt is due at `now_ms`, oldest first.
    pub fn due(&self, now_ms: u64) -> Result<Vec<QueuedMail>, Error> {
        self.select("state = 'pending' AND next_attempt_ms <= ?1 ORDER BY id", params![now_ms as i64])
    }

    /// When the next pending mail is due, if any.
    pub fn next_due_ms(&self) -> Result<Option<u64>, Error> {
        self.conn
            .query_row("SELECT MIN(next_attempt_ms) FROM outbox WHERE state = 'pending'", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map(|v| v.map(|v| v.max(0) as u64))
            .map_err(|e| Error::db(&self.path, e))
    }

    /// Mails (and digests) a server accepted within the flood window before `now_ms`.
    pub fn sent_in_window(&self, now_ms: u64) -> Result<usize, Error> {
        let since = now_ms.saturating_sub(FLOOD_WINDOW_MS) as i64;
        self.conn
            .query_row("SELECT COUNT(*) FROM outbox WHERE state = 'sent' AND sent_ms > ?1", [since], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as usize)
            .map_err(|e| Error::db(&self.path, e))
    }

    /// Records the server's acceptance.
    pub fn mark_sent(&self, id: i64, response: &str, now_ms: u64) -> Result<(), Error> {
        self.conn
            .execute(
                "UPDATE outbox SET state = 'sent', sent_ms = ?2, response = ?3, attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                params![id, now_ms as i64, response],
            )
            .map_err(|e| Error::db(&self.path, e))?;
        // Digested mails went out inside this one.
        self.conn
            .execute("UPDATE outbox SET sent_ms = ?2 WHERE digest = ?1", params![id, now_ms as i64])
            .map_err(|e| Error::db(&self.path, e))?;
        Ok(())
    }

    /// Records a failed attempt and schedules the next one.
    pub fn mark_failed(&self, id: i64, error: &str, now_ms: u64, min: Duration, max: Duration) -> Result<(), Error> {
        let attempts: u32 = self
            .conn
            .query_row("SELECT attempts FROM outbox WHERE id = ?1", [id], |r| r.get(0))
            .map_err(|e| Error::db(&self.path, e))?;
        let next = now_ms + backoff(attempts + 1, min, max).as_millis() as u64;
        self.conn
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_attempt_ms = ?3 WHERE id = ?1",
                params![id, error, next as i64],
            )
            .map_err(|e| Error::db(&self.path, e))?;
        Ok(())
    }

    /// Folds `ids` into one new digest mail, atomically; returns the digest's id.
    pub fn make_digest(&mut self, ids: &[i64], now_ms: u64) -> Result<Option<i64>, Error> {
        let path = self.path.clone();
        let db = |e: rusqlite::Error| Error::db(&path, e);
        let tx = self.conn.transaction().map_err(db)?;
        let mut parts = Vec::new();
        for id in ids {
            let row: Option<(String, String, i64)> = tx
                .query_row(
                    "SELECT subject, body, created_ms FROM outbox WHERE id = ?1 AND state = 'pending'",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(db)?;
            parts.extend(row.map(|(s, b, at)| (*id, s, b, at)));
        }
        if parts.is_empty() {
            return Ok(None);
        }
        let subject = format!("{} notifications (flood limit reached)", parts.len());
        let mut body = String::from(
            "More notifications arrived in one minute than [mail] flood-limit allows; here they are together.\n",
        );
        for (_, s, b, at) in &parts {
            body.push_str(&format!("\n=== {} — {s}\n{b}\n", format_ms(*at as u64)));
        }
        let key = format!("digest:{}-{}", parts[0].0, parts[parts.len() - 1].0);
        let message_id = format!("pbxha.{}.{}@{}", now_ms, sanitize(&key), self.host);
        tx.execute(
            "INSERT INTO outbox (dedup_key, message_id, created_ms, subject, body, next_attempt_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?3)",
            params![key, message_id, now_ms as i64, subject, body],
        )
        .map_err(db)?;
        let digest = tx.last_insert_rowid();
        for (id, ..) in &parts {
            tx.execute("UPDATE outbox SET state = 'digested', digest = ?2 WHERE id = ?1", params![id, digest])
                .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(Some(digest))
    }

    /// Forgets sent mails older than a week; their dedup keys go with them.
    pub fn prune(&self, now_ms: u64) -> Result<usize, Error> {
        let before = now_ms.saturating_sub(KEEP_SENT_MS) as i64;
        self.conn
            .execute("DELETE FROM outbox WHERE state != 'pending' AND sent_ms < ?1", [before])
            .map_err(|e| Error::db(&self.path, e))
    }

    fn select(&self, filter: &str, args: impl rusqlite::Params) -> Result<Vec<QueuedMail>, Error> {
        let sql = format!(
            "SELECT id, dedup_key, message_id, created_ms, subject, body, attempts, next_attempt_ms, last_error FROM outbox WHERE {filter}"
        );
        let db = |e: rusqlite::Error| Error::db(&self.path, e);
        let mut stmt = self.conn.prepare(&sql).map_err(db)?;
        let rows = stmt
            .query_map(args, |r| {
                Ok(QueuedMail {
                    id: r.get(0)?,
                    dedup_key: r.get(1)?,
                    message_id: r.get(2)?,
                    created_ms: r.get::<_, i64>(3)?.max(0) as u64,
                    subject: r.get(4)?,
                    body: r.get(5)?,
                    attempts: r.get(6)?,
                    next_attempt_ms: r.get::<_, i64>(7)?.max(0) as u64,
                    last_error: r.get(8)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }
}

/// One `INSERT OR IGNORE`; whether the mail was new.
fn insert(conn: &Connection, host: &str, path: &Path, mail: &NewMail, now_ms: u64) -> Result<bool, Error> {
    let message_id = format!("pbxha.{}.{}@{}", now_ms, sanitize(&mail.dedup_key), host);
    let n = conn
        .execute(
            "INSERT OR IGNORE INTO outbox (dedup_key, message_id, created_ms, subject, body, next_attempt_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?3)",
            params![mail.dedup_key, message_id, now_ms as i64, mail.subject, mail.body],
        )
        .map_err(|e| Error::db(path, format!("cannot queue mail `{}`: {e}", mail.subject)))?;
    Ok(n == 1)
}

/// Keeps what is legal in a Message-ID's left part (RFC 5322 dot-atom text).
fn sanitize(key: &str) -> String {
    key.chars().map(|c| if c.is_ascii_alphanumeric() || "-_".contains(c) { c } else { '-' }).collect()
}

/// `2024-03-05 10:07:00 UTC` from milliseconds since the epoch.
pub fn format_ms(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: Duration = Duration::from_secs(10);
    const MAX: Duration = Duration::from_secs(600);

    fn mail(key: &str) -> NewMail {
        NewMail { dedup_key: key.into(), subject: format!("subject {key}"), body: format!("body {key}") }
    }

    #[test]
    fn flood_plan_keeps_within_the_limit() {
        assert_eq!(plan_flood(&[1, 2, 3], 0, 10), FloodPlan { send: vec![1, 2, 3], digest: vec![] });
        assert_eq!(plan_flood(&[1, 2, 3, 4, 5], 7, 10), FloodPlan { send: vec![1, 2], digest: vec![3, 4, 5] });
        assert_eq!(plan_flood(&[1, 2], 10, 10), FloodPlan { send: vec![], digest: vec![] });
        assert_eq!(plan_flood(&[1, 2, 3], 0, 1), FloodPlan { send: vec![], digest: vec![1, 2, 3] });
    }

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1, MIN, MAX), MIN);
        assert_eq!(backoff(2, MIN, MAX), MIN * 2);
        assert_eq!(backoff(4, MIN, MAX), MIN * 8);
        assert_eq!(backoff(40, MIN, MAX), MAX);
    }

    #[test]
    fn queue_dedup_retry_and_send_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let o = Outbox::open(&path, "node-a").unwrap();
            assert!(o.enqueue(&mail("failover:1"), 1000).unwrap());
            assert!(!o.enqueue(&mail("failover:1"), 2000).unwrap(), "same key is one mail");
            assert!(o.enqueue(&mail("check:x"), 1500).unwrap());
            let due = o.due(1500).unwrap();
            assert_eq!(due.len(), 2);
            assert_eq!(due[0].message_id, "pbxha.1000.failover-1@node-a");
            o.mark_failed(due[0].id, "TCP connect to 127.0.0.1:1: refused", 1500, MIN, MAX).unwrap();
        }
        // A new daemon opens the same file.
        let o = Outbox::open(&path, "node-a").unwrap();
        let pending = o.pending().unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].attempts, 1);
        assert_eq!(pending[0].next_attempt_ms, 11_500);
        assert!(pending[0].last_error.as_deref().unwrap().contains("refused"));
        assert_eq!(o.due(5000).unwrap().len(), 1, "the failed one waits for its backoff");
        assert_eq!(o.next_due_ms().unwrap(), Some(1500));
        o.mark_sent(pending[0].id, "250 OK", 12_000).unwrap();
        assert_eq!(o.sent_in_window(12_001).unwrap(), 1);
        assert_eq!(o.sent_in_window(72_001).unwrap(), 0);
        assert!(!o.enqueue(&mail("failover:1"), 13_000).unwrap(), "sent keys are remembered");
        assert_eq!(o.pending().unwrap().len(), 1);
    }

    #[test]
    fn digest_folds_mails_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = Outbox::open(&dir.path().join("s.db"), "a").unwrap();
        for k in ["a", "b", "c"] {
            o.enqueue(&mail(k), 1000).unwrap();
        }
        let ids: Vec<i64> = o.pending().unwrap().iter().map(|m| m.id).collect();
        let d = o.make_digest(&ids[1..], 2000).unwrap().unwrap();
        let pending = o.pending().unwrap();
        assert_eq!(pending.iter().map(|m| m.dedup_key.as_str()).collect::<Vec<_>>(), ["a", "digest:2-3"]);
        assert!(pending[1].body.contains("subject b") && pending[1].body.contains("body c"));
        o.mark_sent(d, "250 OK", 3000).unwrap();
        assert_eq!(o.sent_in_window(3000).unwrap(), 1, "a digest counts as one mail");
    }

    #[test]
    fn a_full_disk_is_a_clear_error_and_loses_nothing_queued() {
        let dir = tempfile::tempdir().unwrap();
        let o = Outbox::open(&dir.path().join("s.db"), "a").unwrap();
        o.enqueue(&mail("first"), 1000).unwrap();
        // SQLite reports a database that may not grow as a full disk (SQLITE_FULL).
        let pages: i64 = o.connection().query_row("PRAGMA page_count", [], |r| r.get(0)).unwrap();
        o.connection().query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(())).unwrap();
        let big = NewMail { dedup_key: "big".into(), subject: "big".into(), body: "x".repeat(100_000) };
        let err = o.enqueue(&big, 2000).unwrap_err().to_string();
        assert!(err.contains("s.db") && err.contains("full"), "{err}");
        assert_eq!(o.pending().unwrap().len(), 1);
    }
}
