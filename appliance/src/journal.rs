//! The event journal in SQLite (`/var/lib/pbxha/state.db`) and the failover timelines read
//! back from it.
//!
//! Writes go through a bounded channel to one thread that owns the connection, so the async
//! daemon never waits on the disk. A journal that cannot be written is not a reason to stop
//! managing the cluster: the daemon falls back to [`Journal::disabled`] and logs why.
//!
//! A failover timeline starts at an entry of kind `FailoverBegin` and ends at the next
//! `FailoverEnd`; every entry in between carries the failover's id. The suspicion that led
//! to the decision comes before it, so when a timeline opens it also takes every entry since
//! the first recent `Suspicion` that belongs to no timeline yet.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension};
use serde::Serialize;

use crate::fsm::RecordKind;
use crate::Error;

/// How long a write waits for another process holding the database (the outbox and check
/// history share the file).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Entries waiting for the writer. At a handful of entries per second this is minutes of
/// disk stall; past it entries are dropped (and counted) rather than blocking the daemon.
const QUEUE: usize = 1024;

/// Suspicions recorded at most this long before a `FailoverBegin` open its timeline.
/// heartbeat's deadtime is rarely configured above 30 s; twice that still excludes a link
/// flap from an unrelated earlier hour.
const SUSPICION_LOOKBACK_MS: u64 = 60_000;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS failover (
    id INTEGER PRIMARY KEY,
    node TEXT NOT NULL,
    began_ms INTEGER NOT NULL,
    ended_ms INTEGER
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    node TEXT NOT NULL,
    kind TEXT NOT NULL,
    resource TEXT,
    action TEXT,
    duration_ms INTEGER,
    ok INTEGER,
    message TEXT NOT NULL,
    failover INTEGER REFERENCES failover(id)
);
CREATE INDEX IF NOT EXISTS journal_failover ON journal(failover);
CREATE TABLE IF NOT EXISTS drill (
    id INTEGER PRIMARY KEY,
    at_ms INTEGER NOT NULL,
    node TEXT NOT NULL,
    passed INTEGER NOT NULL,
    summary TEXT NOT NULL,
    report TEXT NOT NULL
);
";

pub use crate::resources::ResourceAction;

/// Every record kind, for reading names back. Extend it with [`record_kind_name`].
const RECORD_KINDS: [RecordKind; 11] = [
    RecordKind::RoleChange,
    RecordKind::Peer,
    RecordKind::Link,
    RecordKind::Health,
    RecordKind::Admin,
    RecordKind::Suspicion,
    RecordKind::FailoverBegin,
    RecordKind::FailoverEnd,
    RecordKind::SplitBrain,
    RecordKind::FirstAnswer,
    RecordKind::Calls,
];

/// The name stored in the database; the same as `RecordKind`'s serde name.
fn record_kind_name(kind: RecordKind) -> &'static str {
    match kind {
        RecordKind::RoleChange => "role-change",
        RecordKind::Peer => "peer",
        RecordKind::Link => "link",
        RecordKind::Health => "health",
        RecordKind::Admin => "admin",
        RecordKind::Suspicion => "suspicion",
        RecordKind::FailoverBegin => "failover-begin",
        RecordKind::FailoverEnd => "failover-end",
        RecordKind::SplitBrain => "split-brain",
        RecordKind::FirstAnswer => "first-answer",
        RecordKind::Calls => "calls",
    }
}

/// Stored in `journal.kind` for resource entries.
const RESOURCE_KIND: &str = "resource";

/// What an entry is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A record the fsm asked for.
    Record(RecordKind),
    /// A resource action's outcome, with how long it took.
    Resource { resource: String, action: ResourceAction, duration_ms: u64, ok: bool },
}

/// One journal line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Wall clock, unix milliseconds.
    pub at_ms: u64,
    /// The node that wrote it (both nodes' journals may be read side by side).
    pub node: String,
    pub kind: Kind,
    pub message: String,
}

impl Entry {
    /// An entry stamped with the current wall clock.
    pub fn now(node: &str, kind: Kind, message: impl Into<String>) -> Entry {
        let at_ms = crate::unix_ms();
        Entry { at_ms, node: node.to_string(), kind, message: message.into() }
    }
}

/// One failover read back: its entries in the order they were written.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failover {
    pub id: i64,
    pub node: String,
    /// When `FailoverEnd` was written; none if it never was (still running, or the daemon
    /// stopped during it).
    pub ended_ms: Option<u64>,
    pub entries: Vec<Entry>,
}

/// The write side. Dropping it writes what is queued, then closes the database.
pub struct Journal {
    inner: Option<Writer>,
}

struct Writer {
    path: PathBuf,
    queue: SyncSender<Entry>,
    thread: std::thread::JoinHandle<()>,
    /// Entries lost to a full queue.
    dropped: AtomicU64,
}

fn journal_error(path: &Path, e: rusqlite::Error) -> Error {
    let message = match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            format!("is not an SQLite database ({e}); move it aside and a new one is created")
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            format!("is locked by another process ({e}); is another pbxha running?")
        }
        _ => e.to_string(),
    };
    Error::Journal { path: path.to_path_buf(), message }
}

fn open_writable(path: &Path, busy: Duration) -> Result<Connection, Error> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::Journal {
            path: path.to_path_buf(),
            message: format!("cannot create directory {}: {e}", parent.display()),
        })?;
    }
    let setup = |conn: &Connection| -> rusqlite::Result<()> {
        conn.busy_timeout(busy)?;
        // The first statement reads the header, so a file that is not a database fails
        // here rather than on the first write. WAL lets `pbxha status` read while the
        // daemon writes.
        conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
        conn.execute_batch(SCHEMA)
    };
    let tightened = pbxha_watchdog::outbox::make_private(path).map_err(|e| Error::Journal {
        path: path.to_path_buf(),
        message: format!("cannot make it private (0600): {e}"),
    })?;
    for (file, mode) in tightened {
        tracing::warn!(file = %file.display(), "had mode {mode:04o}, open to other users; now 0600");
    }
    let conn = Connection::open(path).map_err(|e| journal_error(path, e))?;
    setup(&conn).map_err(|e| journal_error(path, e))?;
    Ok(conn)
}

impl Journal {
    /// Opens (creating it and its directory if needed) the database at `path` and starts
    /// the writer thread.
    pub fn open(path: &Path) -> Result<Journal, Error> {
        Journal::start(path, open_writable(path, BUSY_TIMEOUT)?)
    }

    fn start(path: &Path, conn: Connection) -> Result<Journal, Error> {
        let (queue, entries) = sync_channel(QUEUE);
        let writer_path = path.to_path_buf();
        let thread = std::thread::Builder::new()
            .name("pbxha-journal".into())
            .spawn(move || write_all(conn, &writer_path, entries))
            .map_err(|e| Error::Journal {
                path: path.to_path_buf(),
                message: format!("cannot start the writer thread: {e}"),
            })?;
        Ok(Journal { inner: Some(Writer { path: path.to_path_buf(), queue, thread, dropped: AtomicU64::new(0) }) })
    }

    /// A journal that drops every entry: what the daemon runs with when the database cannot
    /// be opened.
    pub fn disabled() -> Journal {
        Journal { inner: None }
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues `entry` for writing; never blocks.
    pub fn record(&self, entry: Entry) {
        let Some(writer) = &self.inner else { return };
        match writer.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let dropped = writer.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(path = %writer.path.display(), dropped, "journal queue full, entry dropped");
            }
            Err(TrySendError::Disconnected(_)) => {
                tracing::warn!(path = %writer.path.display(), "journal writer stopped, entry dropped");
            }
        }
    }
}

impl std::ops::Drop for Journal {
    fn drop(&mut self) {
        if let Some(Writer { queue, thread, path, .. }) = self.inner.take() {
            drop(queue);
            if thread.join().is_err() {
                tracing::error!(path = %path.display(), "journal writer thread panicked");
            }
        }
    }
}

/// The writer thread: one transaction per entry, until the queue closes.
fn write_all(mut conn: Connection, path: &Path, entries: Receiver<Entry>) {
    let mut open_failover = None;
    for entry in entries {
        if let Err(e) = write_one(&mut conn, &mut open_failover, &entry) {
            tracing::error!(path = %path.display(), error = %e, message = %entry.message, "journal write failed, entry lost");
        }
    }
}

fn write_one(conn: &mut Connection, open_failover: &mut Option<i64>, entry: &Entry) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let (kind, resource, action, duration_ms, ok) = match &entry.kind {
        Kind::Record(k) => (record_kind_name(*k), None, None, None, None),
        Kind::Resource { resource, action, duration_ms, ok } => {
            (RESOURCE_KIND, Some(resource.as_str()), Some(action.as_str()), Some(*duration_ms), Some(*ok))
        }
    };
    let mut failover = *open_failover;
    if entry.kind == Kind::Record(RecordKind::FailoverBegin) {
        // A begin while one is open means the earlier one never finished; it stays open-ended.
        tx.execute("INSERT INTO failover (node, began_ms) VALUES (?1, ?2)", params![entry.node, entry.at_ms])?;
        let id = tx.last_insert_rowid();
        tx.execute(
            "UPDATE journal SET failover = ?1 WHERE failover IS NULL AND id >= (
                 SELECT min(id) FROM journal WHERE failover IS NULL AND kind = ?2 AND at_ms >= ?3)",
            params![id, record_kind_name(RecordKind::Suspicion), entry.at_ms.saturating_sub(SUSPICION_LOOKBACK_MS)],
        )?;
        failover = Some(id);
    }
    tx.execute(
        "INSERT INTO journal (at_ms, node, kind, resource, action, duration_ms, ok, message, failover)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![entry.at_ms, entry.node, kind, resource, action, duration_ms, ok, entry.message, failover],
    )?;
    if entry.kind == Kind::Record(RecordKind::FailoverEnd) {
        if let Some(id) = failover {
            tx.execute("UPDATE failover SET ended_ms = ?1 WHERE id = ?2", params![entry.at_ms, id])?;
        }
        failover = None;
    }
    tx.commit()?;
    *open_failover = failover;
    Ok(())
}

/// The last `last` failovers in the database at `path`, oldest first. Opens it read-only, so
/// it works while the daemon writes.
pub fn history(path: &Path, last: usize) -> Result<Vec<Failover>, Error> {
    let fail = |message: String| Error::Journal { path: path.to_path_buf(), message };
    if !path.exists() {
        return Err(fail("does not exist; the daemon creates it when it starts".into()));
    }
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| journal_error(path, e))?;
    read_history(&conn, last).map_err(|e| match e {
        ReadError::Sql(e) => journal_error(path, e),
        ReadError::Row(message) => fail(message),
    })
}

enum ReadError {
    Sql(rusqlite::Error),
    Row(String),
}

impl From<rusqlite::Error> for ReadError {
    fn from(e: rusqlite::Error) -> Self {
        ReadError::Sql(e)
    }
}

/// Whether the database has the table `name` (another process may have made the file).
pub fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    let query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1";
    Ok(conn.query_row(query, [name], |_| Ok(())).optional()?.is_some())
}

fn read_history(conn: &Connection, last: usize) -> Result<Vec<Failover>, ReadError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    if !has_table(conn, "failover")? {
        // The database exists (the outbox made it) but no failover was ever written.
        return Ok(Vec::new());
    }
    let limit = i64::try_from(last).unwrap_or(i64::MAX);
    let mut failovers = conn
        .prepare("SELECT id, node, ended_ms FROM failover ORDER BY id DESC LIMIT ?1")?
        .query_map([limit], |r| {
            Ok(Failover { id: r.get(0)?, node: r.get(1)?, ended_ms: r.get(2)?, entries: Vec::new() })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    failovers.reverse();
    let mut select = conn.prepare(
        "SELECT id, at_ms, node, kind, resource, action, duration_ms, ok, message
         FROM journal WHERE failover = ?1 ORDER BY id",
    )?;
    for failover in &mut failovers {
        let rows = select.query_map([failover.id], |r| {
            Ok(Row {
                id: r.get(0)?,
                at_ms: r.get(1)?,
                node: r.get(2)?,
                kind: r.get(3)?,
                resource: r.get(4)?,
                action: r.get(5)?,
                duration_ms: r.get(6)?,
                ok: r.get(7)?,
                message: r.get(8)?,
            })
        })?;
        for row in rows {
            failover.entries.push(row?.into_entry().map_err(ReadError::Row)?);
        }
    }
    Ok(failovers)
}

/// A `journal` row as stored.
struct Row {
    id: i64,
    at_ms: u64,
    node: String,
    kind: String,
    resource: Option<String>,
    action: Option<String>,
    duration_ms: Option<u64>,
    ok: Option<bool>,
    message: String,
}

impl Row {
    fn into_entry(self) -> Result<Entry, String> {
        let kind = if self.kind == RESOURCE_KIND {
            let action = self.action.as_deref().and_then(|a| ResourceAction::ALL.into_iter().find(|x| x.as_str() == a));
            match (self.resource, action, self.duration_ms, self.ok) {
                (Some(resource), Some(action), Some(duration_ms), Some(ok)) => {
                    Kind::Resource { resource, action, duration_ms, ok }
                }
                _ => return Err(format!("journal row {}: incomplete resource entry", self.id)),
            }
        } else {
            match RECORD_KINDS.into_iter().find(|k| record_kind_name(*k) == self.kind) {
                Some(k) => Kind::Record(k),
                None => {
                    return Err(format!(
                        "journal row {}: unknown kind `{}` (written by a newer pbxha?)",
                        self.id, self.kind
                    ))
                }
            }
        };
        Ok(Entry { at_ms: self.at_ms, node: self.node, kind, message: self.message })
    }
}

/// One `pbxha drill` as journaled: its one-line summary and the whole report as JSON.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DrillEntry {
    pub at_ms: u64,
    pub node: String,
    pub passed: bool,
    pub summary: String,
    pub report: String,
}

/// Writes a drill into the database at `path`. The drill runs outside the daemon, so this
/// is its own short connection (the writer thread belongs to the daemon); SQLite's busy
/// timeout lets the two take turns.
pub fn record_drill(path: &Path, drill: &DrillEntry) -> Result<(), Error> {
    let conn = open_writable(path, BUSY_TIMEOUT)?;
    conn.execute(
        "INSERT INTO drill (at_ms, node, passed, summary, report) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![drill.at_ms, drill.node, drill.passed, drill.summary, drill.report],
    )
    .map(|_| ())
    .map_err(|e| journal_error(path, e))
}

/// The last `last` drills, oldest first; none in a database without the table.
pub fn drills(path: &Path, last: usize) -> Result<Vec<DrillEntry>, Error> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| journal_error(path, e))?;
    let read = || -> rusqlite::Result<Vec<DrillEntry>> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if !has_table(&conn, "drill")? {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(last).unwrap_or(i64::MAX);
        let mut drills = conn
            .prepare("SELECT at_ms, node, passed, summary, report FROM drill ORDER BY id DESC LIMIT ?1")?
            .query_map([limit], |r| {
                Ok(DrillEntry {
                    at_ms: r.get(0)?,
                    node: r.get(1)?,
                    passed: r.get(2)?,
                    summary: r.get(3)?,
                    report: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        drills.reverse();
        Ok(drills)
    };
    read().map_err(|e| journal_error(path, e))
}

/// The drills, one line each.
pub fn render_drills(drills: &[DrillEntry]) -> String {
    drills
        .iter()
        .map(|d| {
            let verdict = if d.passed { "PASS" } else { "FAIL" };
            format!("drill on {}, {}: {verdict}: {}\n", d.node, utc(d.at_ms), d.summary)
        })
        .collect()
}

/// The failovers as plain-text timelines, offsets from each one's first entry.
pub fn render_history(failovers: &[Failover]) -> String {
    if failovers.is_empty() {
        return "no failover recorded\n".into();
    }
    let mut out = String::new();
    for f in failovers {
        let start = f.entries.first().map_or(0, |e| e.at_ms);
        let took = match f.ended_ms {
            Some(end) => format!("took {} ms", end.saturating_sub(start)),
            None => "did not finish".into(),
        };
        out.push_str(&format!("failover #{} on {}, {}, {took}\n", f.id, f.node, utc(start)));
        let width = f.entries.iter().map(|e| e.at_ms.saturating_sub(start).to_string().len()).max().unwrap_or(0).max(4);
        for e in &f.entries {
            let text = match &e.kind {
                Kind::Record(k) => format!("{}: {}", record_kind_name(*k), e.message),
                Kind::Resource { resource, action, duration_ms, ok } => {
                    let mut t = format!("resource {resource} {} ({duration_ms} ms)", action.outcome(*ok));
                    if !e.message.is_empty() {
                        t.push_str(&format!(": {}", e.message));
                    }
                    t
                }
            };
            out.push_str(&format!("  +{:>width$} ms  {text}\n", e.at_ms.saturating_sub(start)));
        }
    }
    out
}

/// `2024-05-01 12:00:00.123 UTC` from unix milliseconds, without a date library: days to
/// civil date after Howard Hinnant's `civil_from_days` (proleptic Gregorian).
pub fn utc(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_714_564_800_000; // 2024-05-01 12:00:00 UTC

    fn rec(at_ms: u64, kind: RecordKind, message: &str) -> Entry {
        Entry { at_ms, node: "b".into(), kind: Kind::Record(kind), message: message.into() }
    }

    fn res(at_ms: u64, resource: &str, action: ResourceAction, duration_ms: u64, ok: bool, message: &str) -> Entry {
        Entry {
            at_ms,
            node: "b".into(),
            kind: Kind::Resource { resource: resource.into(), action, duration_ms, ok },
            message: message.into(),
        }
    }

    fn write(path: &Path, entries: &[Entry]) {
        let journal = Journal::open(path).unwrap();
        assert!(journal.is_enabled());
        for e in entries {
            journal.record(e.clone());
        }
        // Dropping flushes the queue.
    }

    /// The permission bits of `path` and its `-wal`/`-shm` siblings that exist.
    fn modes(path: &Path) -> Vec<(String, u32)> {
        use std::os::unix::fs::PermissionsExt;
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|s| {
                let meta = std::fs::metadata(format!("{}{s}", path.display())).ok()?;
                Some((s.to_string(), meta.permissions().mode() & 0o777))
            })
            .collect()
    }

    #[test]
    fn the_state_database_is_private_new_or_old() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        // New: journal and outbox, with the WAL files SQLite adds.
        let path = dir.path().join("new/state.db");
        let journal = Journal::open(&path).unwrap();
        journal.record(rec(T0, RecordKind::Admin, "standby"));
        drop(journal);
        let _outbox = pbxha_watchdog::outbox::Outbox::open(&path, "b").unwrap();
        let got = modes(&path);
        assert!(got.len() == 3 && got.iter().all(|(_, m)| *m == 0o600), "{got:?}");

        // Old: a 0644 database left by an earlier version, written while its WAL is kept
        // open, so the -wal and -shm files exist too.
        let old = dir.path().join("old.db");
        let holder = Connection::open(&old).unwrap();
        holder.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(())).unwrap();
        holder.execute_batch("CREATE TABLE keep (v TEXT); INSERT INTO keep VALUES ('x');").unwrap();
        for (s, _) in modes(&old) {
            let file = format!("{}{s}", old.display());
            std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        assert_eq!(modes(&old).len(), 3, "the WAL files exist while a connection is open");
        let outbox = pbxha_watchdog::outbox::Outbox::open(&old, "b").unwrap();
        let got = modes(&old);
        assert!(got.iter().all(|(_, m)| *m == 0o600), "{got:?}");
        drop(outbox);
        // And nothing in it was lost.
        let v: String = holder.query_row("SELECT v FROM keep", [], |r| r.get(0)).unwrap();
        assert_eq!(v, "x");
        drop(holder);
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o644)).unwrap();
        write(&old, &[rec(T0, RecordKind::Admin, "online")]);
        assert_eq!(modes(&old)[0], (String::new(), 0o600), "the journal tightens it too");
    }

    #[test]
    fn entries_round_trip_into_a_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/lib/pbxha/state.db");
        let timeline = vec![
            rec(T0, RecordKind::Suspicion, "peer a silent on link hb"),
            rec(T0 + 300, RecordKind::Link, "link hb down"),
            rec(T0 + 1000, RecordKind::FailoverBegin, "peer a dead on every link"),
            res(T0 + 1374, "vip", ResourceAction::Start, 38, true, ""),
            res(T0 + 1412, "pbx", ResourceAction::Start, 5000, false, "timed out"),
            rec(T0 + 1500, RecordKind::FailoverEnd, "group running"),
        ];
        write(&path, &timeline);
        write(&path, &[rec(T0 + 9000, RecordKind::Admin, "standby")]);

        let got = history(&path, 10).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].node, "b");
        assert_eq!(got[0].ended_ms, Some(T0 + 1500));
        assert_eq!(got[0].entries, timeline);

        let mode: String = Connection::open(&path).unwrap().query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn timelines_are_grouped_and_stale_suspicions_left_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let later = T0 + 3_600_000;
        write(
            &path,
            &[
                rec(T0, RecordKind::Suspicion, "stale: an hour before"),
                rec(T0 + 10, RecordKind::Peer, "peer a back"),
                rec(later, RecordKind::Suspicion, "peer a silent on link hb"),
                rec(later + 1000, RecordKind::FailoverBegin, "first"),
                rec(later + 1100, RecordKind::FailoverEnd, "done"),
                rec(later + 2000, RecordKind::Health, "between failovers"),
                rec(later + 5000, RecordKind::FailoverBegin, "second"),
                res(later + 5050, "vip", ResourceAction::Start, 40, true, ""),
            ],
        );
        // The daemon restarted during the second failover: it stays open, and new entries
        // do not join it.
        write(&path, &[rec(later + 9000, RecordKind::RoleChange, "starting")]);

        // Read while a writer has the database open, as `pbxha status` does.
        let writer = Journal::open(&path).unwrap();
        let all = history(&path, 10).unwrap();
        drop(writer);
        let messages = |f: &Failover| f.entries.iter().map(|e| e.message.clone()).collect::<Vec<_>>();
        assert_eq!(all.len(), 2);
        assert_eq!(messages(&all[0]), ["peer a silent on link hb", "first", "done"]);
        assert_eq!(messages(&all[1]), ["second", ""]);
        assert_eq!(all[1].ended_ms, None);
        let last = history(&path, 1).unwrap();
        assert_eq!(last, all[1..].to_vec());
    }

    #[test]
    fn a_corrupt_file_gives_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        std::fs::write(&path, "this is a text file, not a database\n".repeat(50)).unwrap();
        for err in [Journal::open(&path).err().unwrap(), history(&path, 5).unwrap_err()] {
            let msg = err.to_string();
            assert!(matches!(err, Error::Journal { .. }), "{err:?}");
            assert!(msg.contains(&path.display().to_string()) && msg.contains("not an SQLite database"), "{msg}");
        }
    }

    #[test]
    fn a_locked_file_gives_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let holder = Connection::open(&path).unwrap();
        holder.execute_batch("CREATE TABLE t (x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);").unwrap();
        let msg = open_writable(&path, Duration::from_millis(100)).err().unwrap().to_string();
        assert!(msg.contains(&path.display().to_string()) && msg.contains("locked"), "{msg}");
    }

    #[test]
    fn missing_or_never_written_databases() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        assert!(history(&path, 5).unwrap_err().to_string().contains("does not exist"));
        Connection::open(&path).unwrap().execute_batch("CREATE TABLE outbox (x)").unwrap();
        assert_eq!(history(&path, 5).unwrap(), []);
    }

    #[test]
    fn disabled_journal_takes_entries_and_writes_nothing() {
        let journal = Journal::disabled();
        assert!(!journal.is_enabled());
        journal.record(rec(T0, RecordKind::Admin, "dropped"));
    }

    #[test]
    fn renders_timelines_with_offsets() {
        let failovers = vec![
            Failover {
                id: 3,
                node: "b".into(),
                ended_ms: Some(T0 + 1500),
                entries: vec![
                    rec(T0, RecordKind::Suspicion, "peer a silent on link hb"),
                    rec(T0 + 1000, RecordKind::FailoverBegin, "peer a dead"),
                    res(T0 + 1412, "vip", ResourceAction::Start, 38, true, ""),
                    res(T0 + 1450, "pbx", ResourceAction::Monitor, 12, false, "no SIP answer"),
                ],
            },
            Failover {
                id: 4,
                node: "b".into(),
                ended_ms: None,
                entries: vec![rec(T0 + 86_400_123, RecordKind::FailoverBegin, "x")],
            },
        ];
        let want = "\
failover #3 on b, 2024-05-01 12:00:00.000 UTC, took 1500 ms
  +   0 ms  suspicion: peer a silent on link hb
  +1000 ms  failover-begin: peer a dead
  +1412 ms  resource vip started (38 ms)
  +1450 ms  resource pbx monitor failed (12 ms): no SIP answer
failover #4 on b, 2024-05-02 12:00:00.123 UTC, did not finish
  +   0 ms  failover-begin: x
";
        assert_eq!(render_history(&failovers), want);
        assert_eq!(render_history(&[]), "no failover recorded\n");
    }

    #[test]
    fn stored_kind_names_are_the_serde_names() {
        for kind in RECORD_KINDS {
            assert_eq!(serde_json::to_value(kind).unwrap(), record_kind_name(kind));
        }
        for action in ResourceAction::ALL {
            assert_eq!(serde_json::to_value(action).unwrap(), action.as_str());
        }
    }

    #[test]
    fn utc_dates_across_leap_years() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000 UTC");
        assert_eq!(utc(4_107_542_399_999), "2100-02-28 23:59:59.999 UTC");
    }
}
