//! `pbxha drill`: a failover rehearsal run from one node. Health rows first (heartbeats on
//! every link, the peer's config, DRBD, MySQL, SIP on the VIP, the outbox), then a real
//! switchover to the peer and back, each measured by a SIP OPTIONS probe every 20 ms sent
//! from the node that receives the group ([`probe`]). The peer's side (its config
//! fingerprint, its probe, a switchover started there) is asked of its daemon over the
//! heartbeat links ([`crate::membership::ask`]), through this node's daemon.
//!
//! [`run`] returns a typed [`DrillReport`]; the `pbxha drill` command prints, journals and
//! mails it, and the installer can call it the same way.

pub mod canary;
pub mod probe;
pub mod rows;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Fingerprint};
use crate::control::{self, Reply, Request};
use crate::membership::ask::{Answer, Ask};
use crate::status::DaemonStatus;
use crate::summary::{GroupPhase, Role};
use crate::Error;

/// What to run.
#[derive(Clone, Copy, Debug, Default)]
pub struct DrillOptions {
    /// Skip the call drain of each move.
    pub now: bool,
    /// Move the group once and leave it there.
    pub one_way: bool,
    /// The health rows only.
    pub dry_run: bool,
}

/// One checked thing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Row {
    pub name: String,
    pub passed: bool,
    pub detail: String,
    /// How long the check took.
    pub took_ms: u64,
}

/// One move of the group as a caller saw it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub from: String,
    pub to: String,
    /// First unanswered probe to the first answered one after the move; 0 when none was
    /// missed; none when the new holder never answered.
    pub outage_ms: Option<u64>,
    /// From the switchover request to the new holder's group running.
    pub took_ms: u64,
    pub probes: u64,
    pub answered: u64,
}

/// The whole drill.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillReport {
    pub passed: bool,
    /// The node the drill ran on.
    pub node: String,
    pub started_ms: u64,
    pub took_ms: u64,
    pub rows: Vec<Row>,
    pub moves: Vec<Move>,
}

impl DrillReport {
    /// The report as text: one line per row, then the moves.
    pub fn render(&self) -> String {
        let mut out = format!(
            "drill on {} at {}: {}\n",
            self.node,
            crate::journal::utc(self.started_ms),
            if self.passed { "PASS" } else { "FAIL" }
        );
        for r in &self.rows {
            let verdict = if r.passed { "PASS" } else { "FAIL" };
            out += &format!("  {verdict}  {:<24} {:>6} ms  {}\n", r.name, r.took_ms, r.detail);
        }
        for m in &self.moves {
            let outage = m.outage_ms.map_or("never answered".into(), |ms| format!("outage {ms} ms"));
            out += &format!(
                "  move {} -> {}: {outage} ({} of {} probes answered), moved in {} ms\n",
                m.from, m.to, m.answered, m.probes, m.took_ms
            );
        }
        out
    }

    /// One line: the verdict's reasons and the outages.
    pub fn summary(&self) -> String {
        let failed: Vec<&str> = self.rows.iter().filter(|r| !r.passed).map(|r| r.name.as_str()).collect();
        let moves: Vec<String> = self
            .moves
            .iter()
            .map(|m| {
                format!(
                    "{} -> {} {}",
                    m.from,
                    m.to,
                    m.outage_ms.map_or("never answered".into(), |ms| format!("{ms} ms"))
                )
            })
            .collect();
        let rows = if failed.is_empty() {
            format!("{} rows passed", self.rows.len())
        } else {
            format!("failed: {}", failed.join(", "))
        };
        if moves.is_empty() {
            rows
        } else {
            format!("{rows}; {}", moves.join(", "))
        }
    }

    /// The first failed row, for "what to look at".
    pub fn first_failure(&self) -> Option<&Row> {
        self.rows.iter().find(|r| !r.passed)
    }
}

/// How long a move may take beyond its drain.
const MOVE_LIMIT: Duration = Duration::from_secs(30);
/// How long the new holder has to answer SIP once its group runs.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);
/// How long a group still starting may take to run before the drill moves it.
const SETTLE_LIMIT: Duration = Duration::from_secs(10);
/// Probes before the move, so the report starts with the old holder answering.
const BASELINE: Duration = Duration::from_millis(300);

/// The daemon's control socket, and what the drill needs to know of its config.
struct Drill {
    socket: PathBuf,
    config: Config,
    local: String,
    peer: String,
    /// Where the probes go: the config's VIP SIP probe target.
    target: Option<SocketAddr>,
}

/// Runs the drill against the daemon of the config at `config_path`.
pub async fn run(config_path: &Path, options: DrillOptions) -> Result<DrillReport, Error> {
    let started = Instant::now();
    let started_ms = crate::unix_ms();
    let config = crate::config::load(config_path)?;
    let socket = config.paths.control_socket.clone();
    let status = status(&socket).await?;
    let target = crate::probes::vip_sip_probe(&config).map(|(p, _)| p.target);
    let drill = Drill { socket, local: status.node.node.clone(), peer: status.node.peer.name.clone(), target, config };
    let mut rows = vec![timed(|| async { rows::heartbeat(&status.node.links) }).await];
    rows.push(timed(|| drill.config_row()).await);
    if let Some(row) = drill.drbd_row().await {
        rows.push(row);
    }
    if drill.config.mysql.is_some() {
        rows.push(timed(|| async { rows::mysql(status.mysql.as_ref()) }).await);
    }
    if let Some(target) = drill.target {
        rows.push(timed(|| rows::sip(target)).await);
    }
    rows.push(timed(|| async { rows::outbox(&drill.config.paths.state_db) }).await);
    let mut moves = Vec::new();
    if !options.dry_run {
        drill.moves(options, &status, &mut rows, &mut moves).await;
    }
    Ok(DrillReport {
        passed: rows.iter().all(|r| r.passed),
        node: drill.local,
        started_ms,
        took_ms: started.elapsed().as_millis() as u64,
        rows,
        moves,
    })
}

/// Waits, within `limit`, until this node's daemon answers and hears its peer on every link
/// both ways, and with `[mysql]` sees replication running both ways: a node that has just
/// joined drills only once the pair has formed, not while its daemon still starts. Returns
/// the row still failing when the time is up; `waiting` is told what is awaited, once per
/// change.
pub async fn pair_formed(config_path: &Path, limit: Duration, waiting: impl Fn(&str)) -> Result<Option<Row>, Error> {
    let config = crate::config::load(config_path)?;
    let socket = &config.paths.control_socket;
    let deadline = Instant::now() + limit;
    let mut said = String::new();
    loop {
        let unmet = match status(socket).await {
            Err(e) => Row { name: "daemon".into(), passed: false, detail: e.to_string(), took_ms: 0 },
            Ok(s) => {
                let mut rows = vec![rows::heartbeat(&s.node.links), rows::ready(&s.node)];
                if config.mysql.is_some() {
                    rows.push(rows::mysql(s.mysql.as_ref()));
                }
                match rows.into_iter().find(|r| !r.passed) {
                    Some(unmet) => unmet,
                    None => return Ok(None),
                }
            }
        };
        if Instant::now() >= deadline {
            return Ok(Some(unmet));
        }
        if unmet.name != said {
            waiting(&format!("{} ({})", unmet.name, unmet.detail));
            said = unmet.name.clone();
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Whether this node holds the group: a scheduled drill (`[[check]] kind = "drill"`, on both
/// nodes) runs only there, so the two nodes never drill at once.
pub async fn holds_group(config_path: &Path) -> Result<bool, Error> {
    let config = crate::config::load(config_path)?;
    Ok(holder(&status(&config.paths.control_socket).await?) == Holder::Local)
}

/// Saves the report in the journal (`pbxha history`) and, with `[mail]`, queues it in the
/// outbox, which the daemon delivers.
pub fn record(config_path: &Path, report: &DrillReport) -> Result<(), Error> {
    let config = crate::config::load(config_path)?;
    let db = &config.paths.state_db;
    let entry = crate::journal::DrillEntry {
        at_ms: report.started_ms,
        node: report.node.clone(),
        passed: report.passed,
        summary: report.summary(),
        report: serde_json::to_string(report).unwrap_or_default(),
    };
    crate::journal::record_drill(db, &entry)?;
    if config.mail.is_some() {
        let verdict = if report.passed { "passed" } else { "FAILED" };
        let mail = pbxha_watchdog::outbox::NewMail {
            dedup_key: format!("drill:{}:{}", report.node, report.started_ms),
            subject: format!("[{}] drill on {} {verdict}", config.cluster.name, report.node),
            body: format!("Cluster: {}\n\n{}", config.cluster.name, report.render()),
        };
        pbxha_watchdog::outbox::Outbox::open(db, &report.node)?.enqueue(&mail, crate::unix_ms())?;
    }
    Ok(())
}

/// Runs a row's check and fills in how long it took.
async fn timed<F, Fut>(check: F) -> Row
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Row>,
{
    let started = Instant::now();
    let mut row = check().await;
    row.took_ms = started.elapsed().as_millis() as u64;
    row
}

async fn status(socket: &Path) -> Result<DaemonStatus, Error> {
    let reply = control::call(socket, &Request::Status).await?;
    DaemonStatus::from_reply(&reply)
        .ok_or_else(|| Error::Control { path: socket.to_path_buf(), message: "unreadable status".into() })
}

/// Where the group is, as this node's daemon sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    Local,
    Peer,
    Nobody,
}

fn holder(s: &DaemonStatus) -> Holder {
    let peer = s.node.peer.last.filter(|_| s.node.peer.alive);
    if s.node.role == Role::Primary && s.node.group == GroupPhase::Running {
        Holder::Local
    } else if peer.is_some_and(|p| p.role == Role::Primary && p.group == GroupPhase::Running)
        && s.node.group == GroupPhase::Stopped
    {
        Holder::Peer
    } else {
        Holder::Nobody
    }
}

impl Drill {
    fn name(&self, side: Holder) -> String {
        if side == Holder::Local {
            self.local.clone()
        } else {
            self.peer.clone()
        }
    }

    async fn ask(&self, ask: Ask) -> Result<Answer, String> {
        let reply = control::call(&self.socket, &Request::AskPeer { ask }).await.map_err(|e| e.to_string())?;
        answer_of(&reply)
    }

    async fn config_row(&self) -> Row {
        let local = control::call(&self.socket, &Request::Fingerprint).await.map_err(|e| e.to_string()).and_then(|r| {
            r.status.and_then(|v| serde_json::from_value::<Fingerprint>(v).ok()).ok_or("no fingerprint".into())
        });
        let peer = match self.ask(Ask::Fingerprint).await {
            Ok(Answer::Fingerprint { fingerprint, .. }) => Ok(fingerprint),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e),
        };
        rows::config(&self.peer, local, peer)
    }

    async fn drbd_row(&self) -> Option<Row> {
        let cfg = self.config.resources.iter().find_map(|r| match &r.kind {
            crate::config::ResourceKind::Drbd(d) => Some(d.clone()),
            _ => None,
        })?;
        let runner: std::sync::Arc<dyn pbxha_runner::Runner> = std::sync::Arc::new(pbxha_runner::SystemRunner);
        let drbd = pbxha_replica::drbd::control::Drbd::new(runner, cfg.resource.clone(), cfg.syntax, cfg.minor);
        Some(timed(|| async { rows::drbd(&cfg.resource, drbd.status().await.map_err(|e| e.to_string())) }).await)
    }

    /// The switchover there and back (or once), each as a row and a move. The group is never
    /// left on a node that does not answer: a move whose new holder stays silent is followed
    /// by a move back, even with `--one-way`.
    async fn moves(&self, options: DrillOptions, status: &DaemonStatus, rows: &mut Vec<Row>, moves: &mut Vec<Move>) {
        let mut last = status.clone();
        // A group still starting (its members, its first probe) settles first.
        let started = Instant::now();
        while holder(&last) == Holder::Nobody && started.elapsed() < SETTLE_LIMIT {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Ok(s) = self::status(&self.socket).await {
                last = s;
            }
        }
        let first = match holder(&last) {
            Holder::Nobody => {
                let n = &last.node;
                let peer =
                    n.peer.last.map_or("not heard".into(), |p| format!("{}, group {}", p.role, p.group.as_str()));
                let why = format!(
                    "nobody holds the group after {} s (this node: {}, group {}; {}: {peer}), so there is nothing to move",
                    SETTLE_LIMIT.as_secs(),
                    n.role,
                    n.group.as_str(),
                    self.peer
                );
                rows.push(failed("switchover", why));
                return;
            }
            h => h,
        };
        let Some(target) = self.target else {
            let why = "no VIP SIP probe in the config ([[probe]] role = \"vip\"), so a move cannot be measured";
            rows.push(failed("switchover", why));
            return;
        };
        let (there, answered) = self.switch(first, options.now, target, rows).await;
        let moved = there.is_some();
        moves.extend(there);
        if !moved || (options.one_way && answered) {
            return;
        }
        let back = if first == Holder::Local { Holder::Peer } else { Holder::Local };
        let (m, _) = self.switch(back, options.now || !answered, target, rows).await;
        moves.extend(m);
    }

    /// Writes the canaries on `on` before a move: the MySQL row and the replica file, each
    /// when configured. A canary that cannot be written is a failed row at once.
    async fn write_canaries(&self, on: Holder, rows: &mut Vec<Row>) -> Canaries {
        let name = self.name(on);
        let mut canaries = Canaries::default();
        if let Some(mysql) = &self.config.mysql {
            match pbxha_replica::mysql::canary::write(mysql, side(on)).await {
                Ok(c) => canaries.mysql = Some(c),
                Err(e) => {
                    rows.push(failed(&format!("mysql canary on {name}"), format!("cannot write the canary row: {e}")))
                }
            }
        }
        if canary::replica_file(&self.config).is_some() {
            let token = canary::token();
            match self.replica_canary(on, &token, true).await {
                Ok(_) => canaries.file = Some(token),
                Err(e) => rows
                    .push(failed(&format!("replica canary on {name}"), format!("cannot write the canary file: {e}"))),
            }
        }
        canaries
    }

    /// Reads the canaries on the new holder `on`, each as a row.
    async fn read_canaries(&self, on: Holder, canaries: Canaries, rows: &mut Vec<Row>) {
        let name = self.name(on);
        if let (Some(mysql), Some(row)) = (&self.config.mysql, canaries.mysql) {
            let read = pbxha_replica::mysql::canary::read_and_remove(mysql, side(on), &row, CANARY_WAIT);
            rows.push(
                timed(|| async {
                    match read.await {
                        Ok(seen) => Row {
                            passed: true,
                            detail: format!(
                                "the row written before the move was read on {name} ({} ms)",
                                seen.as_millis()
                            ),
                            ..failed("mysql canary", "")
                        },
                        Err(e) => failed(&format!("mysql canary on {name}"), e.to_string()),
                    }
                })
                .await,
            );
        }
        if let Some(token) = canaries.file {
            let read = self.replica_canary(on, &token, false);
            rows.push(
                timed(|| async {
                    match read.await {
                        Ok(m) => Row { passed: true, detail: m, ..failed(&format!("replica canary on {name}"), "") },
                        Err(e) => failed(&format!("replica canary on {name}"), e),
                    }
                })
                .await,
            );
        }
    }

    /// The canary file's write or read on `on`: here, off the async workers, or by an ask.
    async fn replica_canary(&self, on: Holder, token: &str, write: bool) -> Result<String, String> {
        if on == Holder::Local {
            let (config, token) = (self.config.clone(), token.to_string());
            return tokio::task::spawn_blocking(move || canary::apply(&config, &token, write))
                .await
                .map_err(|e| e.to_string())?;
        }
        match self.ask(Ask::ReplicaCanary { token: token.to_string(), write }).await? {
            Answer::Done { ok: true, message } => Ok(message),
            Answer::Done { message, .. } => Err(message),
            other => Err(format!("unexpected answer {other:?}")),
        }
    }

    /// Moves the group away from `from`, with the receiving node probing `target`, and
    /// pushes its rows (the move's, then the canaries'). The move is none when the group did
    /// not leave; the flag says whether the new holder answers SIP.
    async fn switch(&self, from: Holder, now: bool, target: SocketAddr, rows: &mut Vec<Row>) -> (Option<Move>, bool) {
        let canaries = self.write_canaries(from, rows).await;
        let (moved, row) = self.move_group(from, now, target).await;
        let answered = row.passed;
        rows.push(row);
        if moved.is_some() {
            let to = if from == Holder::Local { Holder::Peer } else { Holder::Local };
            self.read_canaries(to, canaries, rows).await;
        }
        (moved, answered)
    }

    /// The move itself and its row.
    async fn move_group(&self, from: Holder, now: bool, target: SocketAddr) -> (Option<Move>, Row) {
        let to = if from == Holder::Local { Holder::Peer } else { Holder::Local };
        let (from_name, to_name) = (self.name(from), self.name(to));
        let name = format!("switchover {from_name} -> {to_name}");
        let fail = |detail: String| failed(&name, detail);
        let probe = match self.start_probe(to, target).await {
            Ok(p) => p,
            Err(e) => return (None, fail(format!("cannot start the SIP probe on {to_name}: {e}"))),
        };
        tokio::time::sleep(BASELINE).await;
        let started = Instant::now();
        let asked = match from {
            Holder::Local => control::call(&self.socket, &Request::Switchover { now })
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| if r.ok { Ok(()) } else { Err(r.message) }),
            _ => match self.ask(Ask::Switchover { now }).await {
                Ok(Answer::Done { ok: true, .. }) => Ok(()),
                Ok(Answer::Done { message, .. }) => Err(message),
                Ok(other) => Err(format!("unexpected answer {other:?}")),
                Err(e) => Err(e),
            },
        };
        if let Err(e) = asked {
            let _ = probe.stop(self).await;
            return (
                None,
                Row {
                    took_ms: started.elapsed().as_millis() as u64,
                    ..fail(format!("the switchover was refused: {e}"))
                },
            );
        }
        let limit = MOVE_LIMIT + if now { Duration::ZERO } else { self.config.group.drain_timeout };
        let arrived = self.follow(to, limit).await;
        let took_ms = started.elapsed().as_millis() as u64;
        let Some(moved_at) = arrived else {
            let _ = probe.stop(self).await;
            let why = format!("{to_name} did not take the group within {} s", limit.as_secs());
            return (None, Row { took_ms, ..fail(why) });
        };
        // Probes that left before the move settle first; then the new holder has its time.
        tokio::time::sleep(probe::TIMEOUT * 2).await;
        let mut report = probe.report(self).await;
        while !report.as_ref().is_ok_and(|r| r.answering) && moved_at.elapsed() < ANSWER_LIMIT {
            tokio::time::sleep(Duration::from_millis(100)).await;
            report = probe.report(self).await;
        }
        let final_report = probe.stop(self).await.or(report);
        let (report, detail) = match final_report {
            Ok(r) => {
                let detail = rows::move_detail(&to_name, &r, took_ms);
                (r, detail)
            }
            Err(e) => (probe::ProbeReport::default(), format!("the SIP probe on {to_name} gave no report: {e}")),
        };
        let passed = report.answering;
        let m = Move {
            from: from_name,
            to: to_name,
            outage_ms: passed.then_some(report.outage_ms),
            took_ms,
            probes: report.probes,
            answered: report.answered,
        };
        (Some(m), Row { name, passed, detail, took_ms })
    }

    async fn start_probe(&self, on: Holder, target: SocketAddr) -> Result<Probing, String> {
        if on == Holder::Local {
            return Ok(Probing::Here(probe::Prober::start(target, probe::EVERY)));
        }
        match self.ask(Ask::ProbeStart { target, every_ms: probe::EVERY.as_millis() as u64 }).await? {
            Answer::Done { ok: true, .. } => Ok(Probing::Peer),
            other => Err(format!("{other:?}")),
        }
    }

    /// Waits until `to` holds the group; when it was seen holding it.
    async fn follow(&self, to: Holder, limit: Duration) -> Option<Instant> {
        let started = Instant::now();
        while started.elapsed() < limit {
            if let Ok(s) = status(&self.socket).await {
                if holder(&s) == to {
                    return Some(Instant::now());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

/// How long the canary row may take to replicate to the new holder.
const CANARY_WAIT: Duration = Duration::from_secs(10);

/// The canaries written before a move.
#[derive(Default)]
struct Canaries {
    mysql: Option<pbxha_replica::mysql::canary::Canary>,
    file: Option<String>,
}

fn side(on: Holder) -> pbxha_replica::mysql::canary::Side {
    if on == Holder::Local {
        pbxha_replica::mysql::canary::Side::Local
    } else {
        pbxha_replica::mysql::canary::Side::Peer
    }
}

fn failed(name: &str, detail: impl Into<String>) -> Row {
    Row { name: name.into(), passed: false, detail: detail.into(), took_ms: 0 }
}

/// The probe of one move: in this process, or in the peer's daemon.
enum Probing {
    Here(probe::Prober),
    Peer,
}

impl Probing {
    async fn report(&self, drill: &Drill) -> Result<probe::ProbeReport, String> {
        self.ask(drill, false).await
    }

    async fn stop(self, drill: &Drill) -> Result<probe::ProbeReport, String> {
        self.ask(drill, true).await
    }

    async fn ask(&self, drill: &Drill, stop: bool) -> Result<probe::ProbeReport, String> {
        match self {
            Probing::Here(p) => Ok(p.report()),
            Probing::Peer => match drill.ask(Ask::ProbeReport { stop }).await? {
                Answer::Probe { report } => Ok(report),
                other => Err(format!("{other:?}")),
            },
        }
    }
}

/// The peer's answer in a control reply.
fn answer_of(reply: &Reply) -> Result<Answer, String> {
    if !reply.ok {
        return Err(reply.message.clone());
    }
    reply
        .status
        .clone()
        .and_then(|v| serde_json::from_value(v).ok())
        .ok_or_else(|| format!("unreadable answer: {}", reply.message))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{key_file, minimal};

    fn report(passed: bool) -> DrillReport {
        DrillReport {
            passed,
            node: "a".into(),
            started_ms: 1_700_000_000_000,
            took_ms: 900,
            rows: vec![
                Row { name: "heartbeats".into(), passed: true, detail: "hb: heard 40 ms ago".into(), took_ms: 0 },
                Row { name: "switchover a -> b".into(), passed, detail: "outage 60 ms".into(), took_ms: 120 },
            ],
            moves: vec![Move {
                from: "a".into(),
                to: "b".into(),
                outage_ms: Some(60),
                took_ms: 120,
                probes: 40,
                answered: 37,
            }],
        }
    }

    #[test]
    fn a_drill_is_journaled_and_with_mail_queued_in_the_outbox() {
        let key = key_file(0o600);
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("state.db");
        let mail = "[mail]\nserver = \"127.0.0.1\"\nfrom = \"pbxha@example.org\"\nto = [\"ops@example.org\"]\n";
        let text = format!("{}[paths]\nstate-db = \"{}\"\n{mail}", minimal(key.path()), db.display());
        let config = dir.path().join("pbxha.toml");
        std::fs::write(&config, text).unwrap();
        record(&config, &report(false)).unwrap();
        let drills = crate::journal::drills(&db, 5).unwrap();
        assert_eq!(drills.len(), 1);
        assert!(!drills[0].passed);
        assert_eq!(drills[0].summary, "failed: switchover a -> b; a -> b 60 ms");
        let back: DrillReport = serde_json::from_str(&drills[0].report).unwrap();
        assert_eq!(back, report(false));
        assert!(crate::journal::render_drills(&drills).starts_with("drill on a, 2023-11-14 22:13:20.000 UTC: FAIL"));
        let queued = pbxha_watchdog::outbox::Outbox::open_read_only(&db).unwrap().pending().unwrap();
        assert_eq!(queued.len(), 1, "{queued:?}");
        assert_eq!(queued[0].subject, "[t] drill on a FAILED");
        assert!(queued[0].body.contains("FAIL  switchover a -> b") && queued[0].body.contains("outage 60 ms"));
    }

    #[test]
    fn the_json_has_the_fields_machines_read() {
        let v = serde_json::to_value(report(true)).unwrap();
        assert_eq!(v["passed"], true);
        assert_eq!(v["rows"][1]["name"], "switchover a -> b");
        assert!(v["rows"][0]["detail"].is_string() && v["rows"][0]["passed"].is_boolean());
        assert_eq!((v["moves"][0]["from"].as_str(), v["moves"][0]["to"].as_str()), (Some("a"), Some("b")));
        assert_eq!(v["moves"][0]["outage_ms"], 60);
    }
}
