//! The checks engine: run one check of any kind, debounce results with rise/fall
//! (`pbxha_telephony::Hysteresis`, the same as ping targets and SIP probes), keep the history in SQLite for `pbxha checks`, and report state
//! changes on a channel the notifier listens to.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pbxha_runner::{Cmd, Runner};
use pbxha_telephony::{Health, Hysteresis};
use rusqlite::{params, Connection};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use crate::config::{CheckConfig, CheckKind};
use crate::smtp::now_ms;
use crate::Error;

/// One check result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub ok: bool,
    /// What was seen, for history and mails ("connect to 198.51.100.1:80: refused").
    pub detail: String,
}

fn outcome(ok: bool, detail: impl Into<String>) -> Outcome {
    Outcome { ok, detail: detail.into() }
}

/// Runs one check once, within `timeout`.
pub async fn run_check(kind: &CheckKind, timeout: Duration, runner: &dyn Runner) -> Outcome {
    match tokio::time::timeout(timeout, run_inner(kind, timeout, runner)).await {
        Ok(o) => o,
        Err(_) => outcome(false, format!("no result within {timeout:?}")),
    }
}

async fn run_inner(kind: &CheckKind, timeout: Duration, runner: &dyn Runner) -> Outcome {
    match kind {
        CheckKind::Ping { host } => {
            let secs = timeout.as_secs().max(1).to_string();
            let cmd = Cmd::new(["ping", "-n", "-q", "-c", "1", "-W", &secs, &host.to_string()]).timeout(timeout);
            command_outcome(runner, &cmd, |out| {
                out.stdout.lines().find(|l| l.contains("packets transmitted")).unwrap_or("").to_string()
            })
            .await
        }
        CheckKind::Tcp { address } => match tokio::net::TcpStream::connect(address).await {
            Ok(_) => outcome(true, format!("connected to {address}")),
            Err(e) => outcome(false, format!("connect to {address}: {e}")),
        },
        CheckKind::Sip { target, tcp } => {
            let probe = if *tcp {
                pbxha_telephony::Probe::tcp(*target, timeout)
            } else {
                pbxha_telephony::Probe::udp(*target, timeout)
            };
            let result = pbxha_telephony::probe(&probe).await;
            match pbxha_telephony::verdict(&result, pbxha_telephony::Policy::default()) {
                v if v.is_healthy() => outcome(true, format!("{target} answered OPTIONS: {v:?}")),
                pbxha_telephony::Verdict::Failed { reason } => outcome(false, reason),
                v => outcome(false, format!("{v:?}")),
            }
        }
        CheckKind::Http { address, host, path } => http_get(*address, host, path).await,
        CheckKind::Disk { path, min_free_percent } => match disk_free_percent(path) {
            Ok(free) if free >= f64::from(*min_free_percent) => {
                outcome(true, format!("{}: {free:.1}% free", path.display()))
            }
            Ok(free) => {
                outcome(false, format!("{}: only {free:.1}% free (minimum {min_free_percent}%)", path.display()))
            }
            Err(e) => outcome(false, format!("statvfs {}: {e}", path.display())),
        },
        CheckKind::Drbd { resource } => {
            let cstate = Cmd::new(["drbdadm", "cstate", resource.as_str()]).timeout(timeout);
            let dstate = Cmd::new(["drbdadm", "dstate", resource.as_str()]).timeout(timeout);
            match (runner.run_ok(&cstate).await, runner.run_ok(&dstate).await) {
                (Ok(c), Ok(d)) => {
                    let (c, d) = (c.stdout.trim().to_string(), d.stdout.trim().to_string());
                    let ok = c == "Connected" && !d.is_empty() && d.split('/').all(|s| s == "UpToDate");
                    outcome(ok, format!("{resource}: {c}, {d}"))
                }
                (Err(e), _) | (_, Err(e)) => outcome(false, e.to_string()),
            }
        }
        CheckKind::MysqlReplication { argv } => {
            let cmd = Cmd::new(argv.iter().cloned()).timeout(timeout);
            match runner.run_ok(&cmd).await {
                Ok(out) => match replication_status(&out.stdout) {
                    Ok(detail) => outcome(true, detail),
                    Err(detail) => outcome(false, detail),
                },
                Err(e) => outcome(false, e.to_string()),
            }
        }
        CheckKind::Command { argv } | CheckKind::Drill { argv } => {
            let cmd = Cmd::new(argv.iter().cloned()).timeout(timeout);
            command_outcome(runner, &cmd, |out| out.stdout.trim().lines().last().unwrap_or("").to_string()).await
        }
    }
}

async fn command_outcome(runner: &dyn Runner, cmd: &Cmd, summary: impl Fn(&pbxha_runner::Output) -> String) -> Outcome {
    match runner.run(cmd).await {
        Ok(out) if out.success() => outcome(true, summary(&out)),
        Ok(out) => outcome(false, format!("`{cmd}` exited {}: {}", out.code, out.stderr.trim())),
        Err(e) => outcome(false, e.to_string()),
    }
}

/// Judges `SHOW SLAVE STATUS\G` output: both threads must run. Empty output means this
/// server is not a replica at all, which is a failure for a replication check.
pub fn replication_status(text: &str) -> Result<String, String> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(name).and_then(|r| r.strip_prefix(':')).map(|v| v.trim().to_string()))
    };
    let (Some(io), Some(sql)) = (field("Slave_IO_Running"), field("Slave_SQL_Running")) else {
        return Err("SHOW SLAVE STATUS is empty: replication is not configured".into());
    };
    let lag = field("Seconds_Behind_Master").unwrap_or_else(|| "NULL".into());
    if io == "Yes" && sql == "Yes" {
        return Ok(format!("IO and SQL threads running, {lag} s behind"));
    }
    let error =
        field("Last_IO_Error").filter(|e| !e.is_empty()).or_else(|| field("Last_SQL_Error").filter(|e| !e.is_empty()));
    Err(format!(
        "Slave_IO_Running: {io}, Slave_SQL_Running: {sql}{}",
        error.map(|e| format!(": {e}")).unwrap_or_default()
    ))
}

/// Free space for unprivileged users, in percent of the filesystem.
pub fn disk_free_percent(path: &Path) -> Result<f64, nix::Error> {
    let s = nix::sys::statvfs::statvfs(path)?;
    let total = s.blocks() as f64;
    Ok(if total == 0.0 { 0.0 } else { s.blocks_available() as f64 * 100.0 / total })
}

/// A minimal HTTP/1.0 GET: 2xx and 3xx are up.
async fn http_get(address: SocketAddr, host: &str, path: &str) -> Outcome {
    let mut stream = match tokio::net::TcpStream::connect(address).await {
        Ok(s) => s,
        Err(e) => return outcome(false, format!("connect to {address}: {e}")),
    };
    let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: pbxha\r\nConnection: close\r\n\r\n");
    if let Err(e) = stream.write_all(request.as_bytes()).await {
        return outcome(false, format!("send to {address}: {e}"));
    }
    let mut head = vec![0u8; 512];
    let n = match stream.read(&mut head).await {
        Ok(n) => n,
        Err(e) => return outcome(false, format!("read from {address}: {e}")),
    };
    let text = String::from_utf8_lossy(&head[..n]);
    let status_line = text.lines().next().unwrap_or("").to_string();
    match status_line.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok()) {
        Some(code) if (200..400).contains(&code) => outcome(true, status_line),
        Some(_) => outcome(false, format!("http://{host}{path}: {status_line}")),
        None => outcome(false, format!("http://{host}{path}: not an HTTP answer: `{status_line}`")),
    }
}

/// A state change, for the notifier.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub check: String,
    pub from: Health,
    pub to: Health,
    pub detail: String,
    pub at_ms: u64,
}

const HISTORY_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS check_history (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    state TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS check_history_name ON check_history(name, at_ms);
";

/// Results kept per check: a day of once-a-minute checks.
const HISTORY_KEEP: i64 = 1440;

/// One row of check history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryRow {
    pub name: String,
    pub at_ms: u64,
    pub ok: bool,
    pub state: String,
    pub detail: String,
}

/// Check history in the state database.
pub struct History {
    conn: Connection,
    path: PathBuf,
}

impl History {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let conn = Connection::open(path).map_err(|e| Error::db(path, e))?;
        conn.busy_timeout(Duration::from_secs(5)).map_err(|e| Error::db(path, e))?;
        conn.execute_batch(HISTORY_SCHEMA).map_err(|e| Error::db(path, e))?;
        Ok(History { conn, path: path.to_path_buf() })
    }

    pub fn record(&self, name: &str, at_ms: u64, o: &Outcome, state: Health) -> Result<(), Error> {
        let db = |e| Error::db(&self.path, e);
        self.conn
            .execute(
                "INSERT INTO check_history (name, at_ms, ok, state, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![name, at_ms as i64, o.ok, state.as_str(), o.detail],
            )
            .map_err(db)?;
        self.conn
            .execute(
                "DELETE FROM check_history WHERE name = ?1 AND id <= (SELECT id FROM check_history WHERE name = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
                params![name, HISTORY_KEEP],
            )
            .map_err(db)?;
        Ok(())
    }

    /// The last `per_check` results of every check, newest first within a check.
    pub fn recent(&self, per_check: usize) -> Result<Vec<HistoryRow>, Error> {
        let db = |e| Error::db(&self.path, e);
        let mut stmt = self
            .conn
            .prepare(
                "SELECT name, at_ms, ok, state, detail FROM check_history h WHERE id IN
                 (SELECT id FROM check_history WHERE name = h.name ORDER BY id DESC LIMIT ?1) ORDER BY name, id DESC",
            )
            .map_err(db)?;
        let rows = stmt
            .query_map([per_check as i64], |r| {
                Ok(HistoryRow {
                    name: r.get(0)?,
                    at_ms: r.get::<_, i64>(1)?.max(0) as u64,
                    ok: r.get(2)?,
                    state: r.get(3)?,
                    detail: r.get(4)?,
                })
            })
            .map_err(db)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(db)
    }
}

/// Runs every check on its schedule until `shutdown` turns true (or its sender is gone),
/// recording history in `db` and sending state changes on `changes`.
pub async fn run_checks(
    checks: Vec<CheckConfig>,
    runner: Arc<dyn Runner>,
    db: PathBuf,
    changes: mpsc::Sender<Transition>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    let mut tasks = Vec::new();
    for check in checks {
        let history = History::open(&db)?;
        let (runner, changes, mut shutdown) = (runner.clone(), changes.clone(), shutdown.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = Hysteresis::new(check.rise, check.fall);
            loop {
                let now = chrono::Local::now();
                let Some(next) = check.schedule.next_after(&now) else {
                    tracing::warn!(check = %check.name, schedule = %check.schedule, "schedule never fires again");
                    return;
                };
                let wait = (next - now).to_std().unwrap_or_default();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    // As the daemon's tasks all wait (pbxha's `stopped`): true, or no sender left.
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
                let o = run_check(&check.kind, check.timeout, runner.as_ref()).await;
                let before = h.health();
                let changed = h.observe(o.ok);
                let at_ms = now_ms();
                if let Err(e) = crate::off_the_workers(|| history.record(&check.name, at_ms, &o, h.health())) {
                    tracing::warn!(check = %check.name, error = %e, "check history not written");
                }
                if let Some(to) = changed {
                    let t = Transition { check: check.name.clone(), from: before, to, detail: o.detail.clone(), at_ms };
                    if changes.send(t).await.is_err() {
                        return;
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pbxha_runner::{Output, ScriptedRunner};

    // Field layout as printed by MariaDB 10.11 `SHOW SLAVE STATUS\G` (MariaDB KB,
    // "SHOW REPLICA STATUS"), trimmed to the fields read.
    const RUNNING: &str = "*************************** 1. row ***************************
                Slave_IO_State: Waiting for master to send event
                   Master_Host: 198.51.100.12
              Slave_IO_Running: Yes
             Slave_SQL_Running: Yes
                 Last_IO_Error: 
         Seconds_Behind_Master: 0
";

    #[test]
    fn replication_status_reads_both_threads() {
        assert_eq!(replication_status(RUNNING).unwrap(), "IO and SQL threads running, 0 s behind");
        let broken = RUNNING.replace("Slave_IO_Running: Yes", "Slave_IO_Running: Connecting").replace(
            "Last_IO_Error: ",
            "Last_IO_Error: error connecting to master 'repl@198.51.100.12:3306' - retry-time: 60",
        );
        let e = replication_status(&broken).unwrap_err();
        assert!(e.contains("Connecting") && e.contains("error connecting to master"), "{e}");
        assert!(replication_status("").unwrap_err().contains("not configured"));
    }

    #[tokio::test]
    async fn drbd_and_command_checks_go_through_the_runner() {
        let r = ScriptedRunner::new();
        r.on(["drbdadm", "cstate"], Output::ok("Connected\n"));
        r.on(["drbdadm", "dstate"], Output::ok("UpToDate/Inconsistent\n"));
        r.on(["/usr/local/bin/check-trunk"], Output::failed(2, "trunk unregistered"));
        let t = Duration::from_secs(5);
        let d = run_check(&CheckKind::Drbd { resource: "r0".into() }, t, &r).await;
        assert_eq!(d, outcome(false, "r0: Connected, UpToDate/Inconsistent"));
        let c = run_check(&CheckKind::Command { argv: vec!["/usr/local/bin/check-trunk".into()] }, t, &r).await;
        assert!(!c.ok && c.detail.contains("exited 2: trunk unregistered"), "{c:?}");
    }

    #[tokio::test]
    async fn tcp_http_and_disk_checks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let mut buf = [0u8; 256];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\n").await;
            }
        });
        let t = Duration::from_secs(5);
        let r = ScriptedRunner::new();
        assert!(run_check(&CheckKind::Tcp { address }, t, &r).await.ok);
        let http = CheckKind::Http { address, host: address.to_string(), path: "/health".into() };
        let o = run_check(&http, t, &r).await;
        assert!(!o.ok && o.detail.ends_with("/health: HTTP/1.0 503 Service Unavailable"), "{o:?}");
        let disk = run_check(&CheckKind::Disk { path: "/".into(), min_free_percent: 0 }, t, &r).await;
        assert!(disk.ok && disk.detail.contains("% free"), "{disk:?}");
        let gone = run_check(&CheckKind::Disk { path: "/nonexistent/pbxha".into(), min_free_percent: 0 }, t, &r).await;
        assert!(!gone.ok && gone.detail.starts_with("statvfs /nonexistent/pbxha"), "{gone:?}");
    }

    #[test]
    fn history_keeps_recent_results_per_check() {
        let dir = tempfile::tempdir().unwrap();
        let h = History::open(&dir.path().join("s.db")).unwrap();
        for i in 0..3 {
            h.record("uplink", i, &outcome(i != 1, format!("r{i}")), Health::Up).unwrap();
        }
        h.record("web", 9, &outcome(false, "503"), Health::Down).unwrap();
        let rows = h.recent(2).unwrap();
        let got: Vec<(&str, &str)> = rows.iter().map(|r| (r.name.as_str(), r.detail.as_str())).collect();
        assert_eq!(got, [("uplink", "r2"), ("uplink", "r1"), ("web", "503")]);
    }
}
