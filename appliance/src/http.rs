//! `[http]`: a read-only HTTP/1.1 endpoint serving `/` (the status page), `/metrics` and
//! `/status.json`, on the daemon's runtime.
//!
//! It never touches the heartbeat path: the daemon loop publishes a [`Snapshot`] on a
//! watch channel once a second, and a request only clones the latest one (the journal's
//! failovers for the page are read on a blocking thread, read-only). No lock the heartbeat
//! tasks or the daemon loop hold is ever taken here.
//!
//! The server is hand-rolled rather than hyper: three GET routes, no bodies, one request per
//! connection, so what matters is the limits, and they are all here in a few lines: a
//! request head of at most [`MAX_HEAD`] bytes read within [`HEAD_TIMEOUT`], a response
//! written within [`WRITE_TIMEOUT`], at most [`MAX_CONNECTIONS`] at once (the rest get a
//! 503 without being read), and clients outside loopback and `allow` closed unanswered.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::config::{Cidr, HttpConfig};
use crate::status::Snapshot;
use crate::Error;

/// A request head larger than this is refused (431): a GET needs a few hundred bytes.
pub const MAX_HEAD: usize = 8 * 1024;
/// A client that has not sent its whole head by then is dropped (slowloris).
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// A client that does not read its response by then is dropped.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; each holds at most a head buffer and one response.
pub const MAX_CONNECTIONS: usize = 32;
/// How many failovers the page draws.
const PAGE_FAILOVERS: usize = 5;

/// Binds `listen` early, so a port in use stops the daemon at start with the key named.
pub async fn bind(config: &HttpConfig) -> Result<TcpListener, Error> {
    TcpListener::bind(config.listen)
        .await
        .map_err(|e| Error::io(format!("http.listen: cannot listen on {}", config.listen), e))
}

/// Serves until the daemon says `stop`.
pub async fn serve(
    listener: TcpListener,
    allow: Vec<Cidr>,
    snapshots: watch::Receiver<Arc<Snapshot>>,
    state_db: PathBuf,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let shared = Arc::new(Shared { allow, state_db });
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(got) => got,
                Err(e) => {
                    // EMFILE and friends: pause rather than spin.
                    tracing::warn!("http: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = crate::stopped(&mut stop) => return,
        };
        if !shared.allowed(peer.ip()) {
            tracing::debug!(%peer, "http: client not in http.allow, closed");
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: answer without reading, so a flood of idle clients costs one write each.
            let _ = stream.try_write(&response(503, "text/plain", b"busy\n", false));
            continue;
        };
        let (snapshots, shared) = (snapshots.clone(), shared.clone());
        tokio::spawn(async move {
            if let Err(why) = handle(stream, &snapshots, &shared).await {
                tracing::debug!(%peer, "http: {why}");
            }
            drop(slot);
        });
    }
}

struct Shared {
    allow: Vec<Cidr>,
    state_db: PathBuf,
}

impl Shared {
    fn allowed(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        ip.is_loopback() || self.allow.iter().any(|c| c.contains(ip))
    }
}

async fn handle(
    mut stream: TcpStream,
    snapshots: &watch::Receiver<Arc<Snapshot>>,
    shared: &Shared,
) -> Result<(), String> {
    let head = match tokio::time::timeout(HEAD_TIMEOUT, read_head(&mut stream)).await {
        Err(_) => return Err("request head not complete in time".into()),
        Ok(Err(e)) => return Err(format!("reading the request: {e}")),
        Ok(Ok(head)) => head,
    };
    let reply = match head.as_deref().map(parse_head) {
        None => response(431, "text/plain", b"request head too large\n", false),
        Some(Err(status)) => response(status, "text/plain", b"bad request\n", false),
        Some(Ok(req)) => {
            // Cloned at once: the watch channel's lock is never held across an await.
            let snap = snapshots.borrow().clone();
            let (ctype, body) = route(&req.path, &snap, shared).await;
            let status = if ctype.is_empty() { 404 } else { 200 };
            let ctype = if ctype.is_empty() { "text/plain" } else { ctype };
            response(status, ctype, body.as_bytes(), req.head_only)
        }
    };
    match tokio::time::timeout(WRITE_TIMEOUT, stream.write_all(&reply)).await {
        Err(_) => Err("client did not read the response in time".into()),
        Ok(Err(e)) => Err(format!("writing the response: {e}")),
        Ok(Ok(())) => Ok(()),
    }
}

/// The content type and body for `path`; an empty content type is a 404.
async fn route(path: &str, snap: &Snapshot, shared: &Shared) -> (&'static str, String) {
    let now = Instant::now();
    match path {
        "/metrics" => (crate::metrics::CONTENT_TYPE, crate::metrics::render(snap, now)),
        "/status.json" => {
            let json = serde_json::to_string_pretty(&snap.status).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
            ("application/json", json + "\n")
        }
        "/" => {
            let db = shared.state_db.clone();
            let failovers = tokio::task::spawn_blocking(move || {
                crate::journal::history(&db, PAGE_FAILOVERS).map_err(|e| e.to_string())
            })
            .await
            .unwrap_or_else(|e| Err(format!("journal reader failed: {e}")));
            ("text/html; charset=utf-8", crate::page::render(snap, &failovers, now))
        }
        _ => ("", "not found: try /, /metrics or /status.json\n".into()),
    }
}

/// Reads up to the blank line ending the head; `None` when it exceeds [`MAX_HEAD`].
async fn read_head(stream: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before the end of the head"));
        }
        // Searched from just before the new bytes, in case the terminator straddles reads.
        let from = buf.len().saturating_sub(3);
        buf.extend_from_slice(&chunk[..n]);
        if buf[from..].windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(Some(buf));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
    }
}

/// A parsed request line; headers are not needed by any route.
#[derive(Debug, PartialEq, Eq)]
struct Request {
    path: String,
    head_only: bool,
}

/// `GET /path?query HTTP/1.1`: the path, or the status to refuse it with.
fn parse_head(head: &[u8]) -> Result<Request, u16> {
    let text = std::str::from_utf8(head).map_err(|_| 400u16)?;
    let line = text.split("\r\n").next().unwrap_or("");
    let mut parts = line.split(' ');
    let (method, target, version) = match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(m), Some(t), Some(v), None) => (m, t, v),
        _ => return Err(400),
    };
    if !version.starts_with("HTTP/1.") {
        return Err(505);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        // Read-only: nothing here changes cluster state, so nothing takes a body.
        _ => return Err(405),
    };
    let path = target.split('?').next().unwrap_or("");
    if !path.starts_with('/') {
        return Err(400);
    }
    Ok(Request { path: path.to_string(), head_only })
}

fn response(status: u16, content_type: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "HTTP Version Not Supported",
    };
    let allow = if status == 405 { "Allow: GET, HEAD\r\n" } else { "" };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{allow}\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines() {
        let ok = |path: &str, head_only| Ok(Request { path: path.into(), head_only });
        assert_eq!(parse_head(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), ok("/metrics", false));
        assert_eq!(parse_head(b"HEAD /?refresh=1 HTTP/1.0\r\n\r\n"), ok("/", true));
        assert_eq!(parse_head(b"POST / HTTP/1.1\r\n\r\n"), Err(405));
        assert_eq!(parse_head(b"GET / HTTP/2\r\n\r\n"), Err(505));
        assert_eq!(parse_head(b"GET  / HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(parse_head(b"GET http://x/ HTTP/1.1\r\n\r\n"), Err(400));
        assert_eq!(parse_head(b"\xff\xfe\r\n\r\n"), Err(400));
    }

    #[test]
    fn loopback_and_allowed_networks_only() {
        let shared = Shared { allow: vec!["198.51.100.0/24".parse().unwrap()], state_db: PathBuf::new() };
        for (ip, ok) in [
            ("127.0.0.1", true),
            ("::1", true),
            ("198.51.100.7", true),
            ("::ffff:198.51.100.7", true),
            ("203.0.113.5", false),
        ] {
            assert_eq!(shared.allowed(ip.parse().unwrap()), ok, "{ip}");
        }
    }

    #[test]
    fn responses_close_and_say_their_length() {
        let r = String::from_utf8(response(405, "text/plain", b"no\n", false)).unwrap();
        assert!(r.starts_with("HTTP/1.1 405 Method Not Allowed\r\n") && r.contains("Allow: GET, HEAD\r\n"), "{r}");
        assert!(
            r.contains("Content-Length: 3\r\n") && r.contains("Connection: close\r\n") && r.ends_with("\r\n\r\nno\n"),
            "{r}"
        );
        let head = String::from_utf8(response(200, "text/html", b"<html>", true)).unwrap();
        assert!(head.ends_with("\r\n\r\n") && head.contains("Content-Length: 6\r\n"), "{head}");
    }
}
