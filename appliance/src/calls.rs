//! The group PBX's calls, on the daemon's side: the count the heartbeat carries (polled
//! while the group runs here, kept as the count at the move) and the drain before a planned
//! switchover ([`spawn_drain`]), both through one adapter per daemon ([`GroupPbx`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use pbxha_runner::Runner;
use pbxha_telephony::drain::{self, DrainOutcome};
use pbxha_telephony::{Calls, Pbx};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::config::{ResourceConfig, ResourceKind};
use crate::fsm::Event;
use crate::resources::pbx::adapter;
use crate::summary::GroupPhase;
use crate::Error;

/// What `pbxha status --json` shows under `drain` while (and after) a drain runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DrainStatus {
    pub resource: String,
    /// Calls still up at the last reading; `None` while that is unknown.
    pub calls: Option<u32>,
    /// Why the last reading is unknown.
    pub unknown: Option<String>,
    pub elapsed_s: u64,
    pub deadline_s: u64,
    pub finished: bool,
}

/// The latest drain's status, shared between the drain task and the status answer.
#[derive(Clone, Default)]
pub struct DrainTracker(Arc<Mutex<Option<DrainStatus>>>);

impl DrainTracker {
    pub fn snapshot(&self) -> Option<DrainStatus> {
        self.0.lock().ok().and_then(|s| s.clone())
    }

    fn set(&self, status: DrainStatus) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(status);
        }
    }
}

/// The group's PBX as the daemon counts and drains it: the first `pbx` resource's name and
/// adapter, built once per daemon with its group (again only when a reload changes the
/// resources) and shared by that group's member, the call counter and every drain. Cheap to
/// clone.
#[derive(Clone, Default)]
pub struct GroupPbx(Option<(String, Arc<dyn Pbx>)>);

impl GroupPbx {
    /// The first `pbx` resource of `resources`; none without one. An adapter that cannot be
    /// built (an unreadable secret file) fails the group's build, naming the file.
    pub fn new(resources: &[ResourceConfig], runner: Arc<dyn Runner>) -> Result<GroupPbx, Error> {
        let Some((name, config)) = resources.iter().find_map(|r| match &r.kind {
            ResourceKind::Pbx(p) => Some((&r.name, p)),
            _ => None,
        }) else {
            return Ok(GroupPbx(None));
        };
        Ok(GroupPbx(Some((name.clone(), adapter(name, config, runner)?))))
    }

    /// The adapter of the `pbx` resource `name` when it is the group's PBX.
    pub fn adapter_of(&self, name: &str) -> Option<Arc<dyn Pbx>> {
        self.0.as_ref().filter(|(n, _)| n == name).map(|(_, pbx)| pbx.clone())
    }
}

/// How often the group's PBX is asked for its calls while the group runs here: the last
/// count is what a dead primary's peer reports as calls dropped, so it should be recent, and
/// one `asterisk -rx` or fs_cli every few seconds is no load.
pub const CALL_POLL: Duration = Duration::from_secs(5);
/// The longest one count may take before it is read as unknown (the drain's own floor).
const CALL_QUERY: Duration = Duration::from_secs(5);

/// The group PBX's calls at the last reading, for the heartbeat and `pbxha status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CallsStatus {
    pub resource: String,
    /// `None` when the PBX could not be asked: never read as zero.
    pub calls: Option<u32>,
    /// Why the count is unknown.
    pub unknown: Option<String>,
}

impl CallsStatus {
    fn new(resource: &str, calls: &Calls) -> CallsStatus {
        CallsStatus {
            resource: resource.to_string(),
            calls: calls.known(),
            unknown: match calls {
                Calls::Known(_) => None,
                Calls::Unknown(why) => Some(why.clone()),
            },
        }
    }
}

/// Polls the group's PBX for its calls while the group runs here (see
/// [`CallCounter::follow_group`]). The last reading is kept after the group stops — it is the
/// count at the move — and cleared when the group runs here again. Dropping it (the daemon
/// exits, or a reload replaces it) ends polling: its `running` sender is the task's stop.
pub struct CallCounter {
    running: watch::Sender<bool>,
    last: Arc<Mutex<Option<CallsStatus>>>,
    resource: Option<String>,
}

impl CallCounter {
    /// Starts polling `pbx`; with none, it never counts.
    pub fn spawn(pbx: &GroupPbx) -> CallCounter {
        let (running, mut rx) = watch::channel(false);
        let last = Arc::new(Mutex::new(None));
        let resource = pbx.0.as_ref().map(|(name, _)| name.clone());
        if let Some((name, pbx)) = pbx.0.clone() {
            let slot = last.clone();
            tokio::spawn(async move {
                loop {
                    if !*rx.borrow_and_update() {
                        if rx.changed().await.is_err() {
                            return;
                        }
                        continue;
                    }
                    let calls = tokio::time::timeout(CALL_QUERY, pbx.active_calls())
                        .await
                        .unwrap_or_else(|_| Calls::Unknown(format!("no call count within {CALL_QUERY:?}")));
                    // A reading that straddles a stop would overwrite the count at the move
                    // (or the drain's final one) with the stopping PBX's answer.
                    if *rx.borrow() {
                        store(&slot, Some(CallsStatus::new(&name, &calls)));
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(CALL_POLL) => {}
                        changed = rx.changed() => if changed.is_err() { return },
                    }
                }
            });
        }
        CallCounter { running, last, resource }
    }

    /// Follows the group's phase here: polls only while it is `Running` (a PBX starting or
    /// stopping has no count worth keeping) and forgets the last count when it is `Starting`
    /// (a new tenure: the previous one's count at the move is history).
    pub fn follow_group(&self, phase: GroupPhase) {
        if phase == GroupPhase::Starting {
            store(&self.last, None);
        }
        let running = phase == GroupPhase::Running;
        self.running.send_if_modified(|was| std::mem::replace(was, running) != running);
    }

    /// Keeps `calls` as the last reading: a drain's final count is newer than the last poll.
    pub fn set(&self, calls: Option<u32>) {
        if let Some(resource) = &self.resource {
            let reading =
                calls.map_or_else(|| Calls::Unknown("the drain could not count the calls".into()), Calls::Known);
            store(&self.last, Some(CallsStatus::new(resource, &reading)));
        }
    }

    /// The last reading, if any since the group last started here.
    pub fn snapshot(&self) -> Option<CallsStatus> {
        self.last.lock().ok().and_then(|s| s.clone())
    }
}

fn store(slot: &Mutex<Option<CallsStatus>>, value: Option<CallsStatus>) {
    if let Ok(mut s) = slot.lock() {
        *s = value;
    }
}

/// Carries out the fsm's `Action::Drain`: drains the group's PBX in the background, keeps
/// `tracker` current for `pbxha status`, and reports `Event::DrainFinished` when calls reach
/// zero or `deadline` passes. Without a PBX in the group there is nothing to wait for.
pub fn spawn_drain(
    pbx: &GroupPbx,
    deadline: Duration,
    events: mpsc::Sender<Event>,
    tracker: DrainTracker,
) -> DrainTask {
    let pbx = pbx.clone();
    let draining = pbx.0.clone();
    let status = tracker.clone();
    let task = tokio::spawn(async move {
        let calls_left = match draining {
            Some((name, pbx)) => run_drain(&name, pbx.as_ref(), deadline, &status).await.calls_left.known(),
            None => {
                tracing::info!("drain: no pbx resource in the group; nothing to wait for");
                None
            }
        };
        // The fsm moves on after its own deadline if this is lost (daemon shutting down).
        let _ = events.send(Event::DrainFinished { calls_left }).await;
    });
    DrainTask { task, pbx, tracker }
}

/// A running call drain.
pub struct DrainTask {
    task: JoinHandle<()>,
    pbx: GroupPbx,
    tracker: DrainTracker,
}

impl DrainTask {
    /// Abandons the drain and lets the PBX take new calls again: the move it prepared for
    /// is off (the peer can no longer take over).
    pub fn cancel(self) {
        self.task.abort();
        if let Ok(mut slot) = self.tracker.0.lock() {
            *slot = None;
        }
        let Some((name, pbx)) = self.pbx.0 else { return };
        tokio::spawn(async move {
            match pbx.end_drain().await {
                Ok(()) => tracing::info!(resource = %name, "drain cancelled: the PBX takes new calls again"),
                Err(e) => {
                    tracing::error!(resource = %name, "drain cancelled, but the PBX could not be told to take new calls again: {e}")
                }
            }
        });
    }
}

async fn run_drain(name: &str, pbx: &dyn Pbx, deadline: Duration, tracker: &DrainTracker) -> DrainOutcome {
    tracing::info!(resource = %name, deadline_s = deadline.as_secs(), "drain: refusing new calls, waiting for active calls to end");
    let status = |calls: &Calls, elapsed: Duration, finished: bool| DrainStatus {
        resource: name.to_string(),
        calls: calls.known(),
        unknown: match calls {
            Calls::Known(_) => None,
            Calls::Unknown(why) => Some(why.clone()),
        },
        elapsed_s: elapsed.as_secs(),
        deadline_s: deadline.as_secs(),
        finished,
    };
    let mut last: Option<Calls> = None;
    let outcome = drain::drain(pbx, deadline, drain::DEFAULT_POLL, |calls, elapsed| {
        tracker.set(status(calls, elapsed, false));
        // One log line per change, not one per poll.
        if last.as_ref() != Some(calls) {
            tracing::info!(resource = %name, elapsed_s = elapsed.as_secs(), "drain: {calls} remaining");
            last = Some(calls.clone());
        }
    })
    .await;
    tracker.set(status(&outcome.calls_left, outcome.elapsed, true));
    if !outcome.refusing {
        tracing::warn!(resource = %name, "drain: the PBX could not be told to refuse new calls");
    }
    tracing::info!(resource = %name, elapsed_s = outcome.elapsed.as_secs(), "drain finished: {} left", outcome.calls_left);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::pbx::tests::resource_config;
    use pbxha_runner::{Output, ScriptedRunner};
    use pbxha_telephony::PbxKind;

    #[tokio::test]
    async fn the_drain_reports_progress_and_finishes_with_the_last_count() {
        let runner = Arc::new(ScriptedRunner::new());
        runner.on(["fs_cli", "-x", "fsctl"], Output::ok("+OK\n"));
        runner
            .on_seq(["fs_cli", "-x", "show calls count"], vec![Output::ok("\n2 total.\n"), Output::ok("\n0 total.\n")]);
        let (tx, mut rx) = mpsc::channel(4);
        let tracker = DrainTracker::default();
        let pbx = GroupPbx::new(&[resource_config(PbxKind::FreeSwitch)], runner.clone()).unwrap();
        spawn_drain(&pbx, Duration::from_secs(30), tx, tracker.clone());
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap().unwrap();
        assert!(matches!(ev, Event::DrainFinished { calls_left: Some(0) }), "{ev:?}");
        let status = tracker.snapshot().unwrap();
        assert_eq!((status.calls, status.finished, status.deadline_s), (Some(0), true, 30));
        assert_eq!(runner.argvs()[0], "fs_cli -x fsctl pause inbound");
        assert!(!runner.argvs().iter().any(|a| a.contains("resume")), "still refusing until stopped");
    }

    #[tokio::test]
    async fn without_a_pbx_the_drain_finishes_at_once_with_no_count() {
        let (tx, mut rx) = mpsc::channel(4);
        let tracker = DrainTracker::default();
        spawn_drain(&GroupPbx::default(), Duration::from_secs(300), tx, tracker.clone());
        let ev = tokio::time::timeout(Duration::from_secs(20), rx.recv()).await.unwrap().unwrap();
        assert!(matches!(ev, Event::DrainFinished { calls_left: None }), "{ev:?}");
        assert_eq!(tracker.snapshot(), None);
    }

    /// Polls `counter` until `want` holds, for up to 20 s.
    async fn until(counter: &CallCounter, want: impl Fn(Option<CallsStatus>) -> bool) {
        for _ in 0..400 {
            if want(counter.snapshot()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("never reached; last {:?}", counter.snapshot());
    }

    #[tokio::test]
    async fn calls_are_counted_while_the_group_runs_and_kept_as_the_count_at_the_move() {
        let runner = Arc::new(ScriptedRunner::new());
        // mod_commands.c show_function with "count": "\n%u total.\n" (as in telephony).
        runner.on(["fs_cli", "-x", "show calls count"], Output::ok("\n2 total.\n"));
        let counter =
            CallCounter::spawn(&GroupPbx::new(&[resource_config(PbxKind::FreeSwitch)], runner.clone()).unwrap());
        counter.follow_group(GroupPhase::Stopped);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(runner.argvs().is_empty(), "no count while the group is not here");
        counter.follow_group(GroupPhase::Running);
        until(&counter, |c| c.is_some_and(|c| c.calls == Some(2))).await;
        // Stopping: the last count stays (the count at the move), the drain's final one
        // replaces it, and polling stops.
        counter.follow_group(GroupPhase::Stopping);
        counter.set(Some(1));
        let polls = runner.argvs().len();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(runner.argvs().len(), polls);
        assert_eq!(counter.snapshot().and_then(|c| c.calls), Some(1));
        counter.follow_group(GroupPhase::Stopped);
        assert_eq!(counter.snapshot().and_then(|c| c.calls), Some(1));
        // A new tenure forgets it; a PBX that cannot be asked is unknown, not zero.
        runner.on(["fs_cli"], Output::failed(255, "[ERROR] fs_cli.c:1679 main() Error Connecting []\n"));
        counter.follow_group(GroupPhase::Starting);
        assert_eq!(counter.snapshot(), None);
        counter.follow_group(GroupPhase::Running);
        until(&counter, |c| c.is_some_and(|c| c.calls.is_none() && c.unknown.is_some())).await;
        assert!(CallCounter::spawn(&GroupPbx::new(&[], runner).unwrap()).snapshot().is_none());
    }
}
