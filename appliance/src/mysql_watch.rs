//! Watching master-master MySQL replication from the daemon: every [`POLL`] both servers are
//! asked how replication is doing ([`client::pair_status`]); the last answer is kept for
//! `pbxha status`, and each alert that appears or clears is notified once. Replication
//! trouble never moves the group: MySQL runs on both nodes in this mode.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pbxha_replica::mysql::client;
use pbxha_replica::mysql::status::{Alert, PairStatus, ServerStatus, DEFAULT_MAX_LAG_SECS};
use pbxha_replica::mysql::{Mode, MysqlConfig};
use pbxha_watchdog::report::Alert as Notice;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::notify::Notifier;

/// How often both servers are asked.
pub const POLL: Duration = Duration::from_secs(10);
/// One poll logs in to two servers, each allowed `client::CONNECT_TIMEOUT`, plus queries.
const POLL_LIMIT: Duration = Duration::from_secs(30);

/// Replication health as `pbxha status` shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MysqlStatus {
    /// `None` until the first poll has finished.
    pub pair: Option<PairStatus>,
    pub alerts: Vec<Alert>,
    pub at_ms: Option<u64>,
}

/// One line for `pbxha status`; the alerts follow on lines of their own.
impl std::fmt::Display for MysqlStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Some(pair) = &self.pair else {
            return write!(f, "replication not checked yet");
        };
        let side = |s: &Result<ServerStatus, String>| match s {
            Ok(s) => {
                let behind = s.replica.as_ref().and_then(|r| r.seconds_behind);
                let behind = behind.map_or("-".into(), |b| format!("{b} s"));
                format!("{} wrote {}, behind {behind}", s.server, s.gtid_binlog)
            }
            Err(_) => "unreachable".into(),
        };
        let verdict = match self.alerts.len() {
            0 => "ok".to_string(),
            n => format!("{n} ALERT(S)"),
        };
        write!(f, "replication {verdict}: {}; {}", side(&pair.local), side(&pair.peer))
    }
}

/// The running watcher's last answer.
#[derive(Clone, Default)]
pub struct MysqlWatch(Arc<Mutex<MysqlStatus>>);

impl MysqlWatch {
    pub fn status(&self) -> MysqlStatus {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Starts watching when `[mysql]` is in master-master mode; ends when `stop` turns true.
pub fn spawn(config: Option<&MysqlConfig>, notifier: Notifier, stop: watch::Receiver<bool>) -> Option<MysqlWatch> {
    let cfg = config.filter(|c| c.mode == Mode::MasterMaster)?.clone();
    let watch = MysqlWatch::default();
    let poll = move || {
        let cfg = cfg.clone();
        async move { client::pair_status(&cfg).await }
    };
    tokio::spawn(run(poll, watch.clone(), notifier, stop));
    Some(watch)
}

async fn run<F, Fut>(mut poll: F, watch: MysqlWatch, notifier: Notifier, mut stop: watch::Receiver<bool>)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = PairStatus>,
{
    let mut active: BTreeMap<String, Alert> = BTreeMap::new();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = crate::stopped(&mut stop) => return,
        }
        let pair = tokio::time::timeout(POLL_LIMIT, poll()).await.unwrap_or_else(|_| {
            let why = format!("the servers did not answer within {POLL_LIMIT:?}");
            PairStatus { local: Err(why.clone()), peer: Err(why) }
        });
        let alerts = pair.alerts(DEFAULT_MAX_LAG_SECS);
        let now = crate::unix_ms();
        let (new, cleared) = changes(&mut active, &alerts);
        for a in new {
            notifier.alert(&Notice::ReplicationBroken { detail: a.to_string() }, now);
        }
        for a in cleared {
            notifier.alert(&Notice::ReplicationRestored { detail: format!("cleared: {a}") }, now);
        }
        if let Ok(mut s) = watch.0.lock() {
            *s = MysqlStatus { pair: Some(pair), alerts, at_ms: Some(now) };
        }
    }
}

/// What an alert is, apart from numbers that move every poll (seconds behind, log
/// positions): the same problem with a new lag is not a new problem.
fn identity(a: &Alert) -> String {
    let mut out = String::with_capacity(a.server.len() + a.message.len() + 1);
    let mut digits = false;
    for c in format!("{}\u{0}{}", a.server, a.message).chars() {
        match (c.is_ascii_digit(), digits) {
            (true, true) => {}
            (true, false) => out.push('#'),
            (false, _) => out.push(c),
        }
        digits = c.is_ascii_digit();
    }
    out
}

/// Updates `active` to `now`'s alerts; returns the ones that appeared and the ones that
/// cleared (as last seen).
fn changes(active: &mut BTreeMap<String, Alert>, now: &[Alert]) -> (Vec<Alert>, Vec<Alert>) {
    let current: BTreeMap<String, Alert> = now.iter().map(|a| (identity(a), a.clone())).collect();
    let new = current.iter().filter(|(k, _)| !active.contains_key(*k)).map(|(_, a)| a.clone()).collect();
    let cleared = active.iter().filter(|(k, _)| !current.contains_key(*k)).map(|(_, a)| a.clone()).collect();
    *active = current;
    (new, cleared)
}

#[cfg(test)]
mod tests {
    use pbxha_replica::mysql::status::{IoState, ReplicaStatus};
    use pbxha_runner::{Output, ScriptedRunner};

    use super::*;

    fn alert(server: &str, message: &str) -> Alert {
        Alert { server: server.into(), message: message.into() }
    }

    #[test]
    fn a_moving_lag_is_one_alert_until_it_clears() {
        let mut active = BTreeMap::new();
        let lag = |s: u64| alert("peer 198.51.100.12:3306", &format!("{s} s behind 198.51.100.11:3306"));
        let (new, cleared) = changes(&mut active, &[lag(75)]);
        assert_eq!((new, cleared), (vec![lag(75)], vec![]));
        assert_eq!(changes(&mut active, &[lag(90)]), (vec![], vec![]));
        let stopped = alert("local 198.51.100.11:3306", "SQL thread is stopped");
        assert_eq!(changes(&mut active, &[lag(95), stopped.clone()]), (vec![stopped.clone()], vec![]));
        assert_eq!(changes(&mut active, &[]), (vec![], vec![stopped, lag(95)]));
    }

    /// A side whose replication runs.
    fn side(server: &str) -> Result<ServerStatus, String> {
        let replica = ReplicaStatus {
            source: "198.51.100.12:3306".into(),
            io: IoState::Yes,
            sql_running: true,
            seconds_behind: Some(0),
            io_error: None,
            sql_error: None,
            gtid_received: "2-2-7".into(),
            gtid_applied: "2-2-7".into(),
        };
        Ok(ServerStatus {
            server: server.into(),
            version: "10.11.6-MariaDB-0+deb12u1".into(),
            gtid_binlog: "1-1-5".into(),
            replica: Some(replica),
        })
    }

    /// Three polls (peer unreachable twice, then back) notify twice: broken once, restored once.
    #[tokio::test(start_paused = true)]
    async fn each_change_is_notified_once() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["hook"], Output::ok(""));
        let notifier = Notifier::new("t", "a", vec![vec!["hook".into()]], runner.clone());
        let mut answers = vec![
            PairStatus { local: side("local"), peer: Err("cannot connect".into()) },
            PairStatus { local: side("local"), peer: Err("cannot connect".into()) },
            PairStatus { local: side("local"), peer: side("peer") },
        ]
        .into_iter();
        let last = answers.len();
        let (stop_tx, stop) = watch::channel(false);
        let watch = MysqlWatch::default();
        let poll = move || std::future::ready(answers.next().unwrap_or_else(|| panic!("more than {last} polls")));
        let task = tokio::spawn(run(poll, watch.clone(), notifier, stop));
        // Polls at 0, 10 and 20 s; stop before the fourth.
        tokio::time::sleep(POLL * 2 + POLL / 2).await;
        stop_tx.send(true).unwrap();
        task.await.unwrap();
        // Hooks run on spawned tasks: let them finish.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let subjects: Vec<String> = runner
            .calls()
            .iter()
            .filter_map(|c| c.env.iter().find(|(k, _)| k == "PBXHA_SUBJECT").map(|(_, v)| v.clone()))
            .collect();
        assert_eq!(subjects.len(), 2, "{subjects:?}");
        assert!(subjects[0].contains("BROKEN") && subjects[1].contains("works again"), "{subjects:?}");
        let status = watch.status();
        assert!(status.pair.is_some_and(|p| p.peer.is_ok()) && status.alerts.is_empty(), "{:?}", status.alerts);
    }
}
