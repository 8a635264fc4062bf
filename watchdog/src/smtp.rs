//! Sending one mail over SMTP with lettre, step by step, so a failure names the step:
//! DNS, TCP connect, TLS, STARTTLS, AUTH, sender, a rejected recipient, or DATA.
//!
//! lettre's transport would hide the step behind one error; driving its connection by hand
//! gives `pbxha mail test` the precise answer an operator needs ("AUTH rejected: 535 5.7.8
//! Username and Password not accepted" rather than "permanent error").

use std::fmt;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, Certificate, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;

use crate::config::{MailConfig, Security};
use crate::outbox::QueuedMail;
use crate::Error;

/// The SMTP step that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// Building the message or reading the password: nothing was sent.
    Local,
    Dns,
    Tcp,
    Tls,
    /// The greeting or EHLO was refused.
    Greeting,
    StartTls,
    Auth,
    Sender,
    Recipient,
    Data,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Local => "preparing",
            Stage::Dns => "DNS",
            Stage::Tcp => "TCP connect",
            Stage::Tls => "TLS",
            Stage::Greeting => "greeting/EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::Sender => "MAIL FROM",
            Stage::Recipient => "RCPT TO",
            Stage::Data => "DATA",
        })
    }
}

/// Why a mail was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendError {
    pub stage: Stage,
    /// The server, as `host:port`.
    pub server: String,
    pub message: String,
}

impl fmt::Display for SendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} failed with {}: {}", self.stage, self.server, self.message)
    }
}

impl std::error::Error for SendError {}

/// Builds the RFC 5322 message for a queued mail with the configured addresses.
pub fn build_message(config: &MailConfig, mail: &QueuedMail, cluster: &str) -> Result<Message, Error> {
    let mut b = Message::builder()
        .from(config.from.clone())
        .subject(mail.subject.clone())
        .message_id(Some(format!("<{}>", mail.message_id)))
        .date(UNIX_EPOCH + Duration::from_millis(mail.created_ms))
        .header(ContentType::TEXT_PLAIN);
    if let Some(r) = &config.reply_to {
        b = b.reply_to(r.clone());
    }
    for to in &config.to {
        b = b.to(to.clone());
    }
    b = b.user_agent(format!("pbxha {} (cluster {cluster})", env!("CARGO_PKG_VERSION")));
    b.body(mail.body.clone()).map_err(|e| Error::Message(e.to_string()))
}

/// Reads the SMTP password, refusing a file others can read (like the heartbeat key).
pub fn read_password(path: &Path) -> Result<String, Error> {
    let secret = |message: String| Error::Secret { path: path.to_path_buf(), message };
    let meta = std::fs::metadata(path).map_err(|e| secret(format!("cannot read: {e}")))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(secret(format!("mode is {mode:04o}; it must not be readable by group or others (chmod 600)")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| secret(format!("cannot read: {e}")))?;
    // Google shows app passwords in groups of four; the spaces are not part of it.
    let password = text.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        return Err(secret("is empty".into()));
    }
    Ok(password)
}

/// Sends `message` to every configured recipient; on success returns the server's answer
/// to DATA (e.g. `250 2.0.0 Ok: queued as 4Xy`).
pub async fn send(config: &MailConfig, message: &Message, hello: &str) -> Result<String, SendError> {
    let server = format!("{}:{}", config.server, config.port);
    let fail = |stage: Stage, message: String| SendError { stage, server: server.clone(), message };
    let lettre_err = |stage: Stage, e: lettre::transport::smtp::Error| fail(stage, describe(&e));

    let credentials = match (&config.username, &config.password_file) {
        (Some(user), Some(file)) => {
            Some(Credentials::new(user.clone(), read_password(file).map_err(|e| fail(Stage::Local, e.to_string()))?))
        }
        _ => None,
    };
    let tls = match config.security {
        Security::None => None,
        _ => Some(tls_parameters(config).map_err(|m| fail(Stage::Local, m))?),
    };

    let addrs: Vec<SocketAddr> = tokio::time::timeout(config.timeout, tokio::net::lookup_host(server.as_str()))
        .await
        .map_err(|_| fail(Stage::Dns, format!("no answer within {:?}", config.timeout)))?
        .map_err(|e| fail(Stage::Dns, format!("cannot resolve `{}`: {e}", config.server)))?
        .collect();
    let Some(addr) = addrs.first().copied() else {
        return Err(fail(Stage::Dns, format!("`{}` has no address", config.server)));
    };

    let hello = ClientId::Domain(hello.to_string());
    let implicit = if config.security == Security::Tls { tls.clone() } else { None };
    let connect = AsyncSmtpConnection::connect_tokio1(addr, Some(config.timeout), &hello, implicit, None);
    let mut conn = match tokio::time::timeout(config.timeout * 2, connect).await {
        Err(_) => return Err(fail(Stage::Tcp, format!("no greeting from {addr} within {:?}", config.timeout * 2))),
        Ok(Err(e)) if e.is_tls() => return Err(lettre_err(Stage::Tls, e)),
        Ok(Err(e)) if e.is_response() || e.is_permanent() || e.is_transient() => {
            return Err(lettre_err(Stage::Greeting, e))
        }
        Ok(Err(e)) if config.security == Security::Tls && is_tls_handshake(&e) => {
            return Err(lettre_err(Stage::Tls, e))
        }
        Ok(Err(e)) => return Err(lettre_err(Stage::Tcp, e)),
        Ok(Ok(c)) => c,
    };

    if config.security == Security::StartTls {
        if !conn.can_starttls() {
            conn.abort().await;
            return Err(fail(
                Stage::StartTls,
                "the server does not offer STARTTLS; set security = \"tls\" (port 465) or \"none\" for a local relay"
                    .into(),
            ));
        }
        if let Some(params) = tls.clone() {
            if let Err(e) = conn.starttls(params, &hello).await {
                // No QUIT here: after a failed handshake lettre's stream is gone, and writing to
                // it panics. Dropping the connection closes the socket.
                let stage =
                    if e.is_response() || e.is_permanent() || e.is_transient() { Stage::StartTls } else { Stage::Tls };
                return Err(lettre_err(stage, e));
            }
        }
    }

    if let Some(creds) = &credentials {
        if let Err(e) = conn.auth(&[Mechanism::Plain, Mechanism::Login], creds).await {
            conn.abort().await;
            return Err(lettre_err(Stage::Auth, e));
        }
    }

    let envelope = message.envelope();
    if let Err(e) = conn.command(Mail::new(envelope.from().cloned(), vec![])).await {
        conn.abort().await;
        return Err(lettre_err(Stage::Sender, e));
    }
    for to in envelope.to() {
        if let Err(e) = conn.command(Rcpt::new(to.clone(), vec![])).await {
            conn.abort().await;
            return Err(fail(Stage::Recipient, format!("<{to}> rejected: {}", describe(&e))));
        }
    }
    if let Err(e) = conn.command(Data).await {
        conn.abort().await;
        return Err(lettre_err(Stage::Data, e));
    }
    let response = match conn.message(&message.formatted()).await {
        Ok(r) => r,
        Err(e) => {
            conn.abort().await;
            return Err(lettre_err(Stage::Data, e));
        }
    };
    // The mail is accepted; a failing QUIT changes nothing.
    let _ = conn.quit().await;
    Ok(format!("{} {}", response.code(), response.message().collect::<Vec<_>>().join(" ")))
}

fn tls_parameters(config: &MailConfig) -> Result<TlsParameters, String> {
    let mut builder = TlsParameters::builder(config.server.clone());
    if let Some(path) = &config.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("ca-file {}: {e}", path.display()))?;
        let cert = Certificate::from_pem(&pem).map_err(|e| format!("ca-file {}: {e}", path.display()))?;
        builder = builder.add_root_certificate(cert);
    }
    builder.build_rustls().map_err(|e| format!("TLS setup for {}: {e}", config.server))
}

/// A rustls failure during an implicit-TLS connect surfaces as a network error.
fn is_tls_handshake(e: &lettre::transport::smtp::Error) -> bool {
    let text = describe(e).to_ascii_lowercase();
    ["certificate", "tls", "handshake", "alert"].iter().any(|w| text.contains(w))
}

/// lettre's error with its whole source chain (the chain holds the io/rustls reason).
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Milliseconds since the epoch, the outbox's clock.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
