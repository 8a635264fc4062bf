//! The crate's one error type.

use std::path::PathBuf;

/// Everything that can go wrong in the replica crate, with the file, command or resource at
/// fault in its fields.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    #[error(transparent)]
    Command(#[from] pbxha_runner::RunError),
    #[error("cannot parse {what}: {message}")]
    Parse { what: String, message: String },
    #[error("DRBD config for resource `{resource}`: {message}")]
    DrbdConfig { resource: String, message: String },
    #[error("DRBD resource `{resource}`: {message}")]
    Drbd { resource: String, message: String },
    #[error("DRBD resource `{resource}`: refusing to promote: {reason}")]
    PromotionRefused { resource: String, reason: String },
    #[error("DRBD resource `{resource}`: split brain; {report}")]
    SplitBrain { resource: String, report: String },
    #[error("filesystem on {mount_point}: {message}")]
    Filesystem { mount_point: PathBuf, message: String },
    #[error("{path}: {message}")]
    Migrate { path: PathBuf, message: String },
    #[error("migration refused:\n{}", problems.join("\n"))]
    PlanRefused { problems: Vec<String> },
    #[error("MySQL server {server}: {message}")]
    Mysql { server: String, message: String },
    #[error("MySQL server {server}: {setting}: {message}")]
    MysqlSetting { server: String, setting: String, message: String },
}

impl Error {
    /// An I/O error with what was being done when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    pub(crate) fn migrate(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Migrate { path: path.into(), message: message.into() }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
