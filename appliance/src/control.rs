//! The control socket (`/run/pbxha/control.sock`, mode 0600): one JSON request per
//! connection, one JSON reply. `pbxha status`, `standby`, `online` and `switchover` are
//! clients of it; the daemon's main loop answers.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot, watch};

use crate::Error;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "kebab-case")]
pub enum Request {
    Status,
    Standby,
    Online,
    Switchover {
        now: bool,
    },
    /// DRBD's fence-peer handler: ask the peer to outdate its disk. Answered at once with a
    /// [`crate::fence::FenceVerdict`] in `status`; the handler polls while it is pending.
    FencePeer {
        resource: String,
    },
    /// DRBD's split-brain handler: `report` has this side's DRBD state.
    SplitBrain {
        resource: String,
        report: String,
    },
    /// The fingerprint of the config this daemon runs with, in `status`.
    Fingerprint,
    /// Passes `ask` to the peer's daemon over the heartbeat links; its answer in `status`.
    AskPeer {
        ask: crate::membership::ask::Ask,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
    /// The daemon's status (for `status`, and after admin requests so the client can
    /// follow the move).
    pub status: Option<serde_json::Value>,
}

/// A request on its way to the main loop, with the way back to the client.
pub type Pending = (Request, oneshot::Sender<Reply>);

/// Requests larger than this are not ours.
const MAX_REQUEST: u64 = 4096;
/// A client that does not finish its request in this time is dropped.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the socket, replacing a stale one left by a crashed daemon but refusing to steal a
/// live one.
pub async fn bind(path: &Path) -> Result<UnixListener, Error> {
    let err = |message: String| Error::Control { path: path.to_path_buf(), message };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(err("another pbxha daemon is already listening here".into()));
        }
        std::fs::remove_file(path).map_err(|e| err(format!("cannot remove the stale socket: {e}")))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| err(format!("cannot bind: {e}")))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| err(format!("cannot set mode 0600: {e}")))?;
    Ok(listener)
}

/// Accepts clients forever, forwarding each request to `requests`.
pub async fn serve(listener: UnixListener, requests: mpsc::Sender<Pending>, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = crate::stopped(&mut stop) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let requests = requests.clone();
        tokio::spawn(async move {
            if let Err(e) = tokio::time::timeout(CLIENT_TIMEOUT * 12, answer(stream, requests)).await {
                tracing::debug!(error = %e, "control client timed out");
            }
        });
    }
}

async fn answer(stream: UnixStream, requests: mpsc::Sender<Pending>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let read = tokio::time::timeout(CLIENT_TIMEOUT, BufReader::new(read.take(MAX_REQUEST)).read_line(&mut line)).await;
    let reply = match (read, serde_json::from_str::<Request>(line.trim())) {
        (Ok(Ok(_)), Ok(request)) => {
            let (tx, rx) = oneshot::channel();
            if requests.send((request, tx)).await.is_err() {
                return;
            }
            match rx.await {
                Ok(reply) => reply,
                Err(_) => return,
            }
        }
        (_, Err(e)) => Reply { ok: false, message: format!("bad request: {e}"), status: None },
        (Ok(Err(_)) | Err(_), _) => return,
    };
    if let Ok(mut text) = serde_json::to_string(&reply) {
        text.push('\n');
        let _ = write.write_all(text.as_bytes()).await;
    }
}

/// Sends one request to the daemon. A missing or dead socket becomes the one clear line
/// "pbxha is not running".
pub async fn call(path: &Path, request: &Request) -> Result<Reply, Error> {
    let not_running = |why: &str| Error::Control {
        path: path.to_path_buf(),
        message: format!("pbxha is not running ({why}); start it with `systemctl start pbxha` or `pbxha run`"),
    };
    let stream = match UnixStream::connect(path).await {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_running("no socket")),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Err(not_running("nobody listens")),
        Err(e) => return Err(Error::Control { path: path.to_path_buf(), message: e.to_string() }),
    };
    let io = |e: std::io::Error| Error::Control { path: path.to_path_buf(), message: e.to_string() };
    let (read, mut write) = stream.into_split();
    let mut text = serde_json::to_string(request)
        .map_err(|e| Error::Control { path: path.to_path_buf(), message: e.to_string() })?;
    text.push('\n');
    write.write_all(text.as_bytes()).await.map_err(io)?;
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(10), BufReader::new(read).read_line(&mut line))
        .await
        .map_err(|_| Error::Control {
            path: path.to_path_buf(),
            message: "the daemon did not answer within 10 s".into(),
        })?
        .map_err(io)?;
    serde_json::from_str(&line)
        .map_err(|e| Error::Control { path: path.to_path_buf(), message: format!("unreadable reply: {e}") })
}

/// The socket path named by a config file (even an invalid one), or the default.
pub fn socket_for(config: &Path) -> PathBuf {
    crate::config::lenient_path(config, "paths", "control-socket", crate::config::DEFAULT_CONTROL_SOCKET)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn request_and_reply_round_trip_and_socket_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/control.sock");
        let listener = bind(&path).await.unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let (tx, mut rx) = mpsc::channel::<Pending>(4);
        let (stop, stopped) = watch::channel(false);
        let served = tokio::spawn(serve(listener, tx, stopped));
        tokio::spawn(async move {
            while let Some((req, reply)) = rx.recv().await {
                let _ = reply.send(Reply { ok: true, message: format!("{req:?}"), status: None });
            }
        });
        let r = call(&path, &Request::Switchover { now: true }).await.unwrap();
        assert_eq!(r.message, "Switchover { now: true }");
        // A second daemon must not steal the socket.
        let err = bind(&path).await.unwrap_err();
        assert!(err.to_string().contains("already listening"), "{err}");
        // Told to stop, the accept loop ends and the socket no longer answers.
        stop.send_replace(true);
        tokio::time::timeout(Duration::from_secs(5), served).await.unwrap().unwrap();
        assert!(call(&path, &Request::Status).await.is_err());
    }

    #[tokio::test]
    async fn garbage_requests_get_an_error_reply_and_the_server_goes_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let (tx, mut rx) = mpsc::channel::<Pending>(4);
        let (_stop, stopped) = watch::channel(false);
        tokio::spawn(serve(bind(&path).await.unwrap(), tx, stopped));
        tokio::spawn(async move {
            while let Some((_, reply)) = rx.recv().await {
                let _ = reply.send(Reply { ok: true, message: "fine".into(), status: None });
            }
        });
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(b"{\"command\":\"reboot\"}\n").await.unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).await.unwrap();
        assert!(line.contains("bad request"), "{line}");
        assert_eq!(call(&path, &Request::Status).await.unwrap().message, "fine");
    }

    #[tokio::test]
    async fn a_missing_daemon_is_one_clear_line() {
        let err = call(Path::new("/nonexistent/pbxha.sock"), &Request::Status).await.unwrap_err();
        assert!(err.to_string().contains("pbxha is not running (no socket)"), "{err}");
    }
}
