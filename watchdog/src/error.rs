//! The watchdog crate's one error type. Each variant names the file, server, check or device
//! at fault.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SQLite state database (outbox, check history) could not be opened or written.
    #[error("state database {path}: {message}")]
    Db { path: PathBuf, message: String },
    /// A secret file is missing, unreadable or readable by others.
    #[error("password file {path}: {message}")]
    Secret { path: PathBuf, message: String },
    /// A mail could not be built from the configured addresses and the notice.
    #[error("cannot build the mail: {0}")]
    Message(String),
    /// The watchdog device refused an operation.
    #[error("watchdog device {path}: {op}: {source}")]
    Device { path: PathBuf, op: &'static str, source: std::io::Error },
}

impl Error {
    /// A database error on `path`; SQLite's "database or disk is full" keeps its own words so
    /// an operator sees the disk is the problem.
    pub fn db(path: &std::path::Path, e: impl std::fmt::Display) -> Self {
        Error::Db { path: path.to_path_buf(), message: e.to_string() }
    }
}
