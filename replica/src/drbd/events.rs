//! `drbdsetup events2` (DRBD 9): a pure line parser, a tracker that folds events into
//! [`ResourceStatus`], and a supervised follower process that restarts with backoff.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;

use super::status::{disk_rank, Connection, DiskState, PeerStatus, Replication, ResourceStatus, Role};
use crate::error::{Error, Result};

/// One events2 line: `VERB OBJECT key:value...` (drbdsetup(8), "events2").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event2 {
    /// exists, create, change, destroy, call, response.
    pub verb: String,
    /// resource, connection, device, peer-device, helper; `-` ends the initial dump.
    pub object: String,
    pub fields: Vec<(String, String)>,
}

impl Event2 {
    fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// Parses one events2 line.
pub fn parse_event2(line: &str) -> Result<Event2> {
    let mut words = line.split_whitespace();
    let bad = |m: &str| Error::Parse { what: "`drbdsetup events2` line".into(), message: format!("{m}: `{line}`") };
    let verb = words.next().ok_or_else(|| bad("empty line"))?;
    if !["exists", "create", "change", "destroy", "call", "response"].contains(&verb) {
        return Err(bad("unknown verb"));
    }
    let object = words.next().ok_or_else(|| bad("no object"))?;
    let fields = words
        .map(|w| w.split_once(':').map(|(k, v)| (k.to_string(), v.to_string())).ok_or_else(|| bad("word without `:`")))
        .collect::<Result<_>>()?;
    Ok(Event2 { verb: verb.into(), object: object.into(), fields })
}

/// What the follower reports.
#[derive(Clone, Debug, PartialEq)]
pub enum DrbdEvent {
    /// The resource's state after a change (and once after the initial dump).
    Status(ResourceStatus),
    /// DRBD called its split-brain helper: it found diverged data and dropped the connection.
    SplitBrain { resource: String, peer: String },
    /// The follower process ended; it is restarted after `retry_in`.
    FollowerExited { reason: String, retry_in: Duration },
}

/// Folds events2 lines into per-resource status.
#[derive(Default)]
pub struct Tracker {
    resources: HashMap<String, Tracked>,
    /// Changes before the `exists -` line are the initial dump, reported once at its end.
    initial_dump_done: bool,
}

#[derive(Default)]
struct Tracked {
    role: Option<Role>,
    disks: BTreeMap<String, DiskState>,
    peers: BTreeMap<String, PeerStatus>,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    fn snapshot(&self, name: &str) -> Option<ResourceStatus> {
        let t = self.resources.get(name)?;
        Some(ResourceStatus {
            name: name.to_string(),
            role: t.role.clone().unwrap_or(Role::Unknown),
            disk: t.disks.values().cloned().min_by_key(disk_rank).unwrap_or(DiskState::Diskless),
            peers: t.peers.values().cloned().collect(),
        })
    }

    /// Applies one event; returns what the caller should hear about.
    pub fn apply(&mut self, ev: &Event2) -> Vec<DrbdEvent> {
        if ev.object == "-" {
            self.initial_dump_done = true;
            let mut names: Vec<_> = self.resources.keys().cloned().collect();
            names.sort();
            return names.iter().filter_map(|n| self.snapshot(n)).map(DrbdEvent::Status).collect();
        }
        let Some(name) = ev.get("name").map(str::to_string) else {
            return Vec::new();
        };
        if ev.verb == "call" && ev.object == "helper" {
            return match ev.get("helper") {
                Some("split-brain") => vec![DrbdEvent::SplitBrain {
                    resource: name,
                    peer: ev.get("conn-name").unwrap_or("peer").to_string(),
                }],
                _ => Vec::new(),
            };
        }
        if ev.verb == "response" {
            return Vec::new();
        }
        let destroy = ev.verb == "destroy";
        let t = self.resources.entry(name.clone()).or_default();
        let peer_name = ev.get("conn-name").unwrap_or("peer").to_string();
        match ev.object.as_str() {
            "resource" if destroy => {
                self.resources.remove(&name);
                return Vec::new();
            }
            "resource" => {
                if let Some(r) = ev.get("role") {
                    t.role = Some(Role::parse(r));
                }
            }
            "device" => {
                let vol = ev.get("volume").unwrap_or("0").to_string();
                if destroy {
                    t.disks.remove(&vol);
                } else if let Some(d) = ev.get("disk") {
                    t.disks.insert(vol, DiskState::parse(d));
                }
            }
            "connection" if destroy => {
                t.peers.remove(&peer_name);
            }
            "connection" | "peer-device" => {
                let p = t.peers.entry(peer_name.clone()).or_insert_with(|| PeerStatus {
                    name: peer_name,
                    connection: Connection::Connecting,
                    role: Role::Unknown,
                    disk: DiskState::DUnknown,
                    replication: Replication::Off,
                    done: None,
                });
                for (k, v) in ev.fields.iter().map(|(k, v)| (k.as_str(), v.as_str())) {
                    match (ev.object.as_str(), k) {
                        ("connection", "connection") => p.connection = Connection::parse(v),
                        ("connection", "role") => p.role = Role::parse(v),
                        ("peer-device", "replication") => p.replication = Replication::parse(v),
                        ("peer-device", "peer-disk") => p.disk = DiskState::parse(v),
                        ("peer-device", "done") => p.done = v.parse().ok(),
                        _ => {}
                    }
                }
                if !matches!(p.replication, Replication::SyncSource | Replication::SyncTarget) {
                    p.done = None;
                }
            }
            _ => return Vec::new(),
        }
        if self.initial_dump_done {
            self.snapshot(&name).map(DrbdEvent::Status).into_iter().collect()
        } else {
            Vec::new()
        }
    }
}

/// Restart delays for the follower: doubled after each quick exit, reset after a long run.
#[derive(Clone, Copy, Debug)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    /// A run at least this long counts as healthy and resets the delay.
    pub healthy_after: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(30),
            healthy_after: Duration::from_secs(60),
        }
    }
}

/// The usual follower command for one resource.
pub fn events2_argv(resource: &str) -> Vec<String> {
    ["drbdsetup", "events2", "--statistics", resource].map(String::from).to_vec()
}

/// Runs `argv` (normally [`events2_argv`]) and sends what it reports to `tx`, restarting it
/// with `backoff` whenever it exits, until `tx` is closed. The child is killed on drop, so
/// aborting the task leaves no process behind.
pub async fn follow_events(argv: Vec<String>, tx: mpsc::Sender<DrbdEvent>, backoff: Backoff) {
    let mut delay = backoff.initial;
    while !tx.is_closed() {
        let started = tokio::time::Instant::now();
        let reason = match run_once(&argv, &tx).await {
            Ok(code) => format!("`{}` exited with {code}", argv.join(" ")),
            Err(e) => e,
        };
        if started.elapsed() >= backoff.healthy_after {
            delay = backoff.initial;
        }
        tracing::warn!(%reason, retry_in = ?delay, "drbd events follower stopped");
        if tx.send(DrbdEvent::FollowerExited { reason, retry_in: delay }).await.is_err() {
            return;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(backoff.max);
    }
}

async fn run_once(argv: &[String], tx: &mpsc::Sender<DrbdEvent>) -> Result<String, String> {
    let (program, args) = argv.split_first().ok_or("empty follower argv")?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", argv.join(" ")))?;
    let stdout = child.stdout.take().ok_or("follower has no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut tracker = Tracker::new();
    loop {
        match lines.next_line().await {
            Ok(Some(line)) => match parse_event2(&line) {
                Ok(ev) => {
                    for out in tracker.apply(&ev) {
                        if tx.send(out).await.is_err() {
                            return Ok("receiver gone".into());
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "ignoring events2 line"),
            },
            Ok(None) => break,
            Err(e) => return Err(format!("reading `{}`: {e}", argv.join(" "))),
        }
    }
    let status = child.wait().await.map_err(|e| format!("waiting for `{}`: {e}", argv.join(" ")))?;
    Ok(status.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    // events2 as shown in the DRBD 9 user's guide ("drbdsetup events2") and drbdsetup(8):
    // the initial dump ends with `exists -`; a resync and a split brain follow.
    const EVENTS: &str = "\
exists resource name:r0 role:Secondary suspended:no write-ordering:flush
exists connection name:r0 peer-node-id:1 conn-name:bob connection:Connected role:Secondary
exists device name:r0 volume:0 minor:0 disk:UpToDate client:no quorum:yes
exists peer-device name:r0 peer-node-id:1 conn-name:bob volume:0 replication:Established peer-disk:UpToDate peer-client:no resync-suspended:no
exists -
change resource name:r0 role:Primary
change peer-device name:r0 peer-node-id:1 conn-name:bob volume:0 replication:SyncSource peer-disk:Inconsistent
change peer-device name:r0 peer-node-id:1 conn-name:bob volume:0 done:37.50
change connection name:r0 peer-node-id:1 conn-name:bob connection:StandAlone role:Unknown
call helper name:r0 peer-node-id:1 conn-name:bob helper:split-brain
response helper name:r0 peer-node-id:1 conn-name:bob helper:split-brain status:0
";

    fn statuses(events: &[DrbdEvent]) -> Vec<&ResourceStatus> {
        events.iter().filter_map(|e| if let DrbdEvent::Status(s) = e { Some(s) } else { None }).collect()
    }

    #[test]
    fn tracker_reports_dump_then_changes_and_split_brain() {
        let mut t = Tracker::new();
        let out: Vec<Vec<DrbdEvent>> = EVENTS.lines().map(|l| t.apply(&parse_event2(l).unwrap())).collect();
        assert!(out[..4].iter().all(Vec::is_empty), "nothing before the dump ends");
        let dump = statuses(&out[4]);
        assert_eq!(dump.len(), 1);
        assert_eq!((&dump[0].role, &dump[0].disk), (&Role::Secondary, &DiskState::UpToDate));
        assert_eq!(dump[0].peers[0].replication, Replication::Established);
        assert_eq!(statuses(&out[5])[0].role, Role::Primary);
        let p = &statuses(&out[7])[0].peers[0];
        assert_eq!((&p.replication, &p.disk, p.done), (&Replication::SyncSource, &DiskState::Inconsistent, Some(37.5)));
        assert_eq!(statuses(&out[8])[0].peers[0].connection, Connection::StandAlone);
        assert_eq!(out[9], vec![DrbdEvent::SplitBrain { resource: "r0".into(), peer: "bob".into() }]);
        assert!(out[10].is_empty());
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(parse_event2("").is_err());
        assert!(parse_event2("explode resource name:r0").is_err());
        assert!(parse_event2("change resource name").is_err());
    }

    #[tokio::test]
    async fn follower_parses_output_and_restarts_after_exit() {
        let script = "printf 'exists resource name:r0 role:Secondary\\nexists device name:r0 volume:0 disk:Outdated\\nexists -\\n'";
        let argv = vec!["sh".to_string(), "-c".to_string(), script.to_string()];
        let (tx, mut rx) = mpsc::channel(16);
        let backoff = Backoff {
            initial: Duration::from_millis(10),
            max: Duration::from_millis(20),
            healthy_after: Duration::from_secs(60),
        };
        let task = tokio::spawn(follow_events(argv, tx, backoff));
        let mut seen = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while seen.len() < 4 {
            let ev = tokio::time::timeout_at(deadline, rx.recv()).await.expect("follower events in time").unwrap();
            seen.push(ev);
        }
        drop(rx);
        task.abort();
        match (&seen[0], &seen[1], &seen[2], &seen[3]) {
            (
                DrbdEvent::Status(a),
                DrbdEvent::FollowerExited { retry_in, .. },
                DrbdEvent::Status(b),
                DrbdEvent::FollowerExited { retry_in: r2, .. },
            ) => {
                assert_eq!(a.disk, DiskState::Outdated);
                assert_eq!(a, b);
                assert!(r2 > retry_in, "backoff grows: {retry_in:?} then {r2:?}");
            }
            other => panic!("unexpected sequence {other:?}"),
        }
    }

    #[tokio::test]
    async fn follower_reports_a_missing_binary_and_keeps_trying() {
        let (tx, mut rx) = mpsc::channel(4);
        let backoff = Backoff {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(5),
            healthy_after: Duration::from_secs(60),
        };
        let task = tokio::spawn(follow_events(vec!["/nonexistent/drbdsetup".into()], tx, backoff));
        for _ in 0..2 {
            match tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap().unwrap() {
                DrbdEvent::FollowerExited { reason, .. } => {
                    assert!(reason.contains("/nonexistent/drbdsetup"), "{reason}")
                }
                other => panic!("{other:?}"),
            }
        }
        task.abort();
    }
}
