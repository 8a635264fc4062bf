//! The appliance's one error type. Variants carry the context an operator needs to act:
//! the file, the key, the command, the address.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {message}")]
    ConfigFile { path: PathBuf, message: String },
    #[error("{count} problem(s) in {path}")]
    ConfigInvalid { path: PathBuf, count: usize },
    #[error("auth key file {path}: {message}")]
    AuthKey { path: PathBuf, message: String },
    #[error("resource `{resource}`: {message}")]
    Resource { resource: String, message: String },
    #[error(
        "resource `{resource}`: VIP {vip} is already answered by {holder} — refusing to take it (split-brain guard)"
    )]
    VipConflict { resource: String, vip: String, holder: String },
    #[error("resource `{resource}`: {source}")]
    Command { resource: String, source: pbxha_runner::RunError },
    #[error("link `{link}`: {message}")]
    Link { link: String, message: String },
    #[error("journal {path}: {message}")]
    Journal { path: PathBuf, message: String },
    #[error("control socket {path}: {message}")]
    Control { path: PathBuf, message: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// The watchdog crate's errors (device, outbox, check history) name their file already.
    #[error(transparent)]
    Watchdog(#[from] pbxha_watchdog::Error),
}

impl Error {
    /// An I/O error with what was being done when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}
