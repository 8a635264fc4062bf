//! The install journal in SQLite: the plan as it was confirmed, each step's state, and the
//! originals of everything a step changed, recorded before the change. A rerun resumes at
//! the first unfinished step; `--undo` walks the steps in reverse, itself resumable.
//!
//! A second `pbxha install` finds the [`Lock`] (flock on /run/pbxha/install.lock) held and
//! stops before reading anything else.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use rusqlite::{params, Connection, OptionalExtension};

use crate::error::{Error, Result};
use crate::plan::Step;

/// Where the journal lives (below `--root`).
pub const JOURNAL_PATH: &str = "/var/lib/pbxha/install.db";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Started,
    Done,
    Undoing,
    Undone,
    /// Undo ran but something could not be reversed; a rerun of `--undo` retries.
    UndoFailed,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Started => "started",
            State::Done => "done",
            State::Undoing => "undoing",
            State::Undone => "undone",
            State::UndoFailed => "undo-failed",
        }
    }

    fn parse(s: &str) -> Option<State> {
        [State::Pending, State::Started, State::Done, State::Undoing, State::Undone, State::UndoFailed]
            .into_iter()
            .find(|st| st.as_str() == s)
    }
}

/// What a path was before a step touched it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Original {
    /// A file with these bytes and mode.
    File(Vec<u8>, u32),
    /// Nothing was there: undo removes what the step made.
    Absent,
    /// A directory the step had to create: undo removes it when empty.
    CreatedDir,
}

pub const LOCK_PATH: &str = "/run/pbxha/install.lock";

/// The install lock, held until dropped (the kernel drops it when the process dies).
pub struct Lock {
    _held: Flock<File>,
}

impl Lock {
    pub fn take(path: &Path) -> Result<Lock> {
        Lock::held(path)?.ok_or_else(|| Error::Locked { path: path.to_path_buf() })
    }

    /// A lock of another job than the install's; `busy` says what holds it.
    pub fn take_named(path: &Path, busy: &str) -> Result<Lock> {
        Lock::held(path)?.ok_or_else(|| Error::Refused(format!("{busy} (it holds the lock on {})", path.display())))
    }

    /// The lock, or `None` when another process holds it.
    fn held(path: &Path) -> Result<Option<Lock>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| Error::file(path, format!("cannot open: {e}")))?;
        Ok(Flock::lock(file, FlockArg::LockExclusiveNonblock).ok().map(|f| Lock { _held: f }))
    }
}

pub struct Journal {
    conn: Connection,
    path: PathBuf,
}

fn db(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Journal { path: path.to_path_buf(), message: e.to_string() }
}

impl Journal {
    /// Opens the journal, creating it (and its directory) when `create` is set.
    pub fn open(path: &Path, create: bool) -> Result<Option<Journal>> {
        if !create && !path.exists() {
            return Ok(None);
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::file(dir, format!("cannot create: {e}")))?;
        }
        let conn = Connection::open(path).map_err(|e| db(path, e))?;
        // The originals it keeps include PBX configs with SIP secrets; SQLite gives its
        // rollback journal the database file's mode.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| db(path, e))?;
        conn.execute_batch(
            "PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS install (id INTEGER PRIMARY KEY CHECK (id = 1), answers TEXT NOT NULL, plan TEXT NOT NULL, made_dirs TEXT NOT NULL);
             CREATE TABLE IF NOT EXISTS step (idx INTEGER PRIMARY KEY, id TEXT NOT NULL, state TEXT NOT NULL, note TEXT);
             CREATE TABLE IF NOT EXISTS original (idx INTEGER NOT NULL, path TEXT NOT NULL, kind TEXT NOT NULL, bytes BLOB, mode INTEGER,
                                                  seq INTEGER PRIMARY KEY AUTOINCREMENT, UNIQUE (idx, path));",
        )
        .map_err(|e| db(path, e))?;
        Ok(Some(Journal { conn, path: path.to_path_buf() }))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The confirmed plan and the answers it was made from, if an install began.
    pub fn plan(&self) -> Result<Option<(String, Vec<Step>)>> {
        let row: Option<(String, String)> = self
            .conn
            .query_row("SELECT answers, plan FROM install WHERE id = 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(|e| db(&self.path, e))?;
        row.map(|(answers, plan)| {
            Ok((answers, serde_json::from_str(&plan).map_err(|e| db(&self.path, format!("unreadable plan: {e}")))?))
        })
        .transpose()
    }

    /// Records a confirmed plan, every step pending, in one transaction. `made_dirs` are the
    /// directories the journal itself needed, removed with it after a complete undo.
    pub fn begin(&mut self, answers: &str, steps: &[Step], made_dirs: &[PathBuf]) -> Result<()> {
        let plan = serde_json::to_string(steps).map_err(|e| db(&self.path, e))?;
        let dirs = serde_json::to_string(made_dirs).map_err(|e| db(&self.path, e))?;
        let tx = self.conn.transaction().map_err(|e| db(&self.path, e))?;
        tx.execute(
            "INSERT INTO install (id, answers, plan, made_dirs) VALUES (1, ?1, ?2, ?3)",
            params![answers, plan, dirs],
        )
        .map_err(|e| db(&self.path, e))?;
        for (i, s) in steps.iter().enumerate() {
            tx.execute("INSERT INTO step (idx, id, state) VALUES (?1, ?2, 'pending')", params![i as i64, s.id])
                .map_err(|e| db(&self.path, e))?;
        }
        tx.commit().map_err(|e| db(&self.path, e))
    }

    pub fn made_dirs(&self) -> Result<Vec<PathBuf>> {
        let text: String = self
            .conn
            .query_row("SELECT made_dirs FROM install WHERE id = 1", [], |r| r.get(0))
            .map_err(|e| db(&self.path, e))?;
        serde_json::from_str(&text).map_err(|e| db(&self.path, e))
    }

    /// Removes the journal after a complete undo, with the directories made for it.
    pub fn remove(self) -> Result<()> {
        let dirs = self.made_dirs()?;
        let path = self.path.clone();
        drop(self.conn);
        for p in [path.clone(), PathBuf::from(format!("{}-journal", path.display()))] {
            match std::fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::file(&p, format!("cannot remove: {e}"))),
            }
        }
        for d in dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        Ok(())
    }

    pub fn state(&self, idx: usize) -> Result<State> {
        let s: String = self
            .conn
            .query_row("SELECT state FROM step WHERE idx = ?1", [idx as i64], |r| r.get(0))
            .map_err(|e| db(&self.path, e))?;
        State::parse(&s).ok_or_else(|| db(&self.path, format!("unknown step state `{s}`")))
    }

    pub fn states(&self) -> Result<Vec<(String, State, Option<String>)>> {
        let mut stmt =
            self.conn.prepare("SELECT id, state, note FROM step ORDER BY idx").map_err(|e| db(&self.path, e))?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?)))
            .map_err(|e| db(&self.path, e))?;
        rows.map(|r| {
            let (id, s, note) = r.map_err(|e| db(&self.path, e))?;
            Ok((id, State::parse(&s).unwrap_or(State::Pending), note))
        })
        .collect()
    }

    pub fn set(&self, idx: usize, state: State, note: Option<&str>) -> Result<()> {
        self.conn
            .execute("UPDATE step SET state = ?2, note = ?3 WHERE idx = ?1", params![idx as i64, state.as_str(), note])
            .map(|_| ())
            .map_err(|e| db(&self.path, e))
    }

    /// Records what `path` was before step `idx`; a later call for the same path keeps the
    /// first record, so a resumed step never mistakes its own half-done work for the original.
    pub fn remember(&self, idx: usize, path: &Path, original: &Original) -> Result<()> {
        let (kind, bytes, mode) = match original {
            Original::File(b, m) => ("file", Some(b.as_slice()), Some(*m)),
            Original::Absent => ("absent", None, None),
            Original::CreatedDir => ("created-dir", None, None),
        };
        self.conn
            .execute(
                "INSERT OR IGNORE INTO original (idx, path, kind, bytes, mode) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![idx as i64, path.display().to_string(), kind, bytes, mode],
            )
            .map(|_| ())
            .map_err(|e| db(&self.path, e))
    }

    /// Step `idx`'s originals, newest first (the order undo needs: files before their dirs).
    pub fn originals(&self, idx: usize) -> Result<Vec<(PathBuf, Original)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, kind, bytes, mode FROM original WHERE idx = ?1 ORDER BY seq DESC")
            .map_err(|e| db(&self.path, e))?;
        let rows = stmt
            .query_map([idx as i64], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<Vec<u8>>>(2)?,
                    r.get::<_, Option<u32>>(3)?,
                ))
            })
            .map_err(|e| db(&self.path, e))?;
        rows.map(|r| {
            let (path, kind, bytes, mode) = r.map_err(|e| db(&self.path, e))?;
            let original = match kind.as_str() {
                "file" => Original::File(bytes.unwrap_or_default(), mode.unwrap_or(0o644)),
                "created-dir" => Original::CreatedDir,
                _ => Original::Absent,
            };
            Ok((PathBuf::from(path), original))
        })
        .collect()
    }
}
