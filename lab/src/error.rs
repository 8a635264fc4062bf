//! The lab's one error type.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("lab: {message}")]
    Lab { message: String },
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// A node's daemon could not be asked, as [`crate::Daemons`] words it (the control
    /// socket's path and what went wrong).
    #[error("{0}")]
    Unreachable(String),
}

impl Error {
    /// An I/O error with what was being done when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}
