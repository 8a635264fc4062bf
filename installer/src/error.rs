//! The crate's one error type; each variant names the file, key, step or command at fault.

use std::path::PathBuf;

use crate::answers::Problem;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {message}", path.display())]
    File { path: PathBuf, message: String },
    #[error("{}: {} problem(s):\n{}", path.display(), problems.len(), lines(problems))]
    Answers { path: PathBuf, problems: Vec<Problem> },
    #[error("{} answer(s) missing, and none is ever filled in with a default unasked: {}", keys.len(), keys.join(", "))]
    Missing { keys: Vec<String> },
    #[error("preflight: {failed} check(s) FAIL; nothing was changed")]
    Preflight { failed: usize },
    #[error("the generated {path} does not pass check-config:\n{}", problems.join("\n"))]
    Config { path: PathBuf, problems: Vec<String> },
    #[error("step {number} ({id}): {message}")]
    Step { number: usize, id: String, message: String },
    #[error("install journal {}: {message}", path.display())]
    Journal { path: PathBuf, message: String },
    #[error("another `pbxha install` is running (it holds the lock on {}); wait for it or stop it", path.display())]
    Locked { path: PathBuf },
    #[error("{0}")]
    Refused(String),
    /// A join that did not happen, in the one line the joining node prints.
    #[error("join: {0}")]
    Join(String),
    #[error(transparent)]
    Command(#[from] pbxha_runner::RunError),
    #[error(transparent)]
    Replica(#[from] pbxha_replica::Error),
}

fn lines(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n")
}

impl Error {
    pub fn file(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::File { path: path.into(), message: message.to_string() }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
