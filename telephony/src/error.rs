//! The telephony crate's one error type. Each variant names the peer or address at fault.

use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket operation failed; `context` says which and with whom.
    #[error("{context}: {source}")]
    Io { context: String, source: std::io::Error },
    /// No final response arrived before the probe's deadline.
    #[error("no final SIP response from {target} ({transport}) within {after:?}")]
    Timeout { target: SocketAddr, transport: &'static str, after: Duration },
    /// The peer closed a TCP connection before a final response arrived.
    #[error("{target} closed the TCP connection before a final SIP response")]
    Closed { target: SocketAddr },
    /// The configured Request-URI does not parse.
    #[error("request URI `{uri}`: {message}")]
    RequestUri { uri: String, message: String },
    /// A TCP peer sent bytes that cannot be framed as a SIP message.
    #[error("{target} sent an unframeable SIP stream: {message}")]
    Framing { target: SocketAddr, message: String },
    /// A PBX or service command could not be run, timed out or exited non-zero.
    #[error(transparent)]
    Command(#[from] pbxha_runner::RunError),
    /// A PBX command ran but its output says it failed or cannot be understood.
    #[error("`{command}`: {message}")]
    Pbx { command: String, message: String },
}

impl Error {
    /// An I/O error with what was being done when it happened.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}
